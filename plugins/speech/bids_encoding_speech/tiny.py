"""Build small audio encoders locally, saved for ``from_pretrained`` with their feature extractors.

No weights can be downloaded here, and tests must never download: a wav2vec2 or a
Whisper model is initialised from its config (random weights) and saved with its
feature extractor to a folder that the extractor loads exactly as it loads a hub
model. The benchmark uses the same builder with wav2vec2-base sizes (the config's
defaults).
"""

from __future__ import annotations

from pathlib import Path

#: A 2-layer, 32-wide wav2vec2 whose 3 convolutions stride 320 samples (50 frames/s at 16 kHz, as wav2vec2-base)
#: and read 325 samples per frame.
TINY_WAV2VEC2 = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     conv_dim=(16, 16, 16), conv_kernel=(10, 8, 8), conv_stride=(5, 8, 8),
                     num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)

#: A Whisper model with a 2-layer, 32-wide encoder (and a 1-layer decoder that the extractor ignores); it reads
#: the real Whisper input, 30 s of 80-bin log-mel features.
TINY_WHISPER = dict(d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                    decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, vocab_size=100,
                    num_mel_bins=80, max_source_positions=1500, max_target_positions=32,
                    pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)


def build_wav2vec2(folder: str | Path, seed: int = 0, model_type: str = "wav2vec2", **config) -> Path:
    """Save a randomly initialised model of the wav2vec2 family (``model_type``: wav2vec2, hubert, wavlm,
    data2vec-audio, unispeech, wav2vec2-conformer, ...; ``config`` overrides its config, whose defaults are the
    base size) with the feature extractor of wav2vec2-base (16 kHz, each input normalised)."""
    import torch
    from transformers import AutoConfig, AutoModel, Wav2Vec2FeatureExtractor

    folder = Path(folder)
    torch.manual_seed(seed)
    AutoModel.from_config(AutoConfig.for_model(model_type, **config)).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=False).save_pretrained(folder)
    return folder


def build_whisper(folder: str | Path, seed: int = 0, **config) -> Path:
    """Save a randomly initialised Whisper model (``config`` overrides WhisperConfig) with Whisper's feature
    extractor (16 kHz, log-mel, every input padded to 30 s)."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    folder = Path(folder)
    torch.manual_seed(seed)
    whisper = WhisperConfig(**config)
    WhisperModel(whisper).save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=whisper.num_mel_bins).save_pretrained(folder)
    return folder
