"""The speech extractor: window planning, causality, equality with one pass over each window, Whisper, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoFeatureExtractor, AutoModel

from bids_encoding.plugin_api import Audio, UserError, extract_features, load_plugin
from bids_encoding_speech import Speech, load_encoder, plan_windows

RATE = 16000


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(round(seconds * RATE)))).astype(np.float32)


def audio(*paths, onset=None, duration=None) -> Audio:
    n = len(paths)
    return Audio(onset=np.asarray(onset if onset is not None else np.arange(n) * 100.0, float),
                 duration=np.asarray(duration if duration is not None else np.zeros(n), float), path=tuple(paths))


def reference(folder: str, samples: np.ndarray) -> tuple[torch.Tensor, ...]:
    """One plain forward pass of the saved model over ``samples``, as its model card shows (all hidden states)."""
    extractor, model = AutoFeatureExtractor.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    model = model.get_encoder() if model.config.is_encoder_decoder else model
    inputs = extractor([samples], sampling_rate=RATE, return_tensors="pt")
    with torch.inference_mode():
        return model(inputs[model.main_input_name], output_hidden_states=True).hidden_states


@pytest.mark.parametrize("n_frames,window,stride", [(1, 5, 5), (10, 4, 3), (100, 16, 16), (101, 7, 1), (64, 40, 8)])
def test_windows_keep_every_frame_once_with_its_past_and_at_most_stride_of_future(n_frames, window, stride):
    windows = plan_windows(n_frames, window, stride)
    kept = np.concatenate([np.arange(w.keep_from, w.stop) for w in windows])
    np.testing.assert_array_equal(kept, np.arange(n_frames))
    for w in windows:
        assert w.stop - w.start <= window and w.stop - w.keep_from <= stride
        for frame in range(w.keep_from, w.stop):
            assert frame - w.start >= min(frame, window - stride)  # past in the window: window - stride, or all of it
            assert w.stop - 1 - frame < stride  # future in the window: less than stride


def test_frames_match_the_models_own_convolution_arithmetic(tiny_wav2vec2):
    encoder = load_encoder(tiny_wav2vec2, "cpu", "float32")
    model = AutoModel.from_pretrained(tiny_wav2vec2)
    lengths = torch.arange(300, 5000, 7)
    np.testing.assert_array_equal([encoder.frames.count(int(n)) for n in lengths],
                                  model._get_feat_extract_output_lengths(lengths).numpy())
    assert encoder.frames.rate == 50 and encoder.frames.span == 325


def test_found_through_its_entry_point_with_shapes_layers_and_frame_times(tiny_wav2vec2, write_wav):
    extractor, about = load_plugin(f"speech:model={tiny_wav2vec2};layers=0,-1;window=1;stride=0.5;batch_size=3")
    assert isinstance(extractor, Speech) and about["Distribution"] == "bids-encoding-speech"
    long, short = write_wav("long.wav", noise(3.0)), write_wav("short.wav", noise(2.0, seed=1))
    # the long file twice (once cut to 1.5 s by its event's duration), the short one once
    stimuli = audio(long, short, long, onset=[2.0, 10.0, 20.0], duration=[0.0, 0.0, 1.5])
    features = extractor.extract(stimuli)
    features.check(len(stimuli))
    assert set(features.spaces) == {"L0", "L2"} and features.rate == 50
    frames = load_encoder(tiny_wav2vec2, "cpu", "float32").frames
    counts = [frames.count(n) for n in (3 * RATE, 2 * RATE, int(1.5 * RATE))]
    assert features.spaces["L2"].shape == (sum(counts), 32)
    starts = np.cumsum([0] + counts)
    for onset, first, n in zip(stimuli.onset, starts, counts):
        np.testing.assert_allclose(features.onset[first:first + n], onset + np.arange(n) / 50)
    info = features.info["SpeechModel"]
    assert info["Layers"] == [0, 2] and (info["WindowFrames"], info["StrideFrames"]) == (50, 25)
    assert info["Clips"] == 3 and info["FrameRate"] == 50
    # as the app runs it, with the host's checks of the output
    hosted = extract_features(f"speech:model={tiny_wav2vec2};layers=-1;window=1;stride=0.5", audio(short))
    np.testing.assert_array_equal(hosted.spaces["L2"], features.spaces["L2"][starts[1]:starts[2]])
    # the cut clip is the long clip's first 1.5 s: its frames that end before the cut match those of the whole clip
    whole, cut = features.spaces["L2"][starts[0]:starts[1]], features.spaces["L2"][starts[2]:starts[3]]
    settled = (np.arange(counts[2]) * frames.hop + frames.span) <= 1.5 * RATE - 0.5 * RATE
    np.testing.assert_array_equal(cut[settled], whole[:counts[2]][settled])


@pytest.mark.parametrize("window,stride", [(1.0, 0.5), (0.5, 0.02)])
def test_changing_the_audio_after_t_leaves_earlier_frames_unchanged(tiny_wav2vec2, write_wav, window, stride):
    """Causal windows: a frame that ends before ``T - stride`` never saw the audio after ``T``; with a stride of one
    frame, no frame that ends before ``T`` did. The frames just after are changed, so the comparison has teeth."""
    t = 1.5
    before = noise(2.5)
    after = before.copy()
    after[int(t * RATE):] = noise(2.5, seed=7)[int(t * RATE):]
    extractor = Speech(model=tiny_wav2vec2, window=window, stride=stride)
    one = extractor.extract(audio(write_wav("before.wav", before)))
    two = extractor.extract(audio(write_wav("after.wav", after)))
    frames = load_encoder(tiny_wav2vec2, "cpu", "float32").frames
    ends = (np.arange(len(one.onset)) * frames.hop + frames.span) / RATE
    assert one.info["SpeechModel"]["StrideSeconds"] == pytest.approx(stride)
    for layer in ("L0", "L1", "L2"):
        unchanged = ends <= t - stride + 1e-9
        np.testing.assert_array_equal(one.spaces[layer][unchanged], two.spaces[layer][unchanged])
        assert not np.allclose(one.spaces[layer][ends > t][:1], two.spaces[layer][ends > t][:1])
    if stride > 0.02:  # a longer stride lets frames before T see a little of the future: they change
        lookahead = (ends > t - stride + 1e-9) & (ends <= t)
        assert not np.allclose(one.spaces["L2"][lookahead], two.spaces["L2"][lookahead])


def test_windows_equal_one_pass_over_the_same_audio(tiny_wav2vec2, write_wav):
    """A clip shorter than the window is one pass; with a shorter stride, each frame equals a pass over the clip up
    to the end of the window that kept it."""
    samples = noise(1.5)
    path = write_wav("clip.wav", samples)
    frames = load_encoder(tiny_wav2vec2, "cpu", "float32").frames
    n = frames.count(len(samples))
    whole = reference(tiny_wav2vec2, samples[frames.samples(0, n)])
    once = Speech(model=tiny_wav2vec2, window=10, stride=10).extract(audio(path))
    for layer in range(3):
        np.testing.assert_allclose(once.spaces[f"L{layer}"], whole[layer][0].numpy(), atol=1e-5, rtol=1e-4)
    strided = Speech(model=tiny_wav2vec2, window=10, stride=0.4).extract(audio(path))
    for keep, stop in ((0, 20), (20, 40), (40, 60), (60, n)):  # windows end every 20 frames, the last at the clip's end
        passed = reference(tiny_wav2vec2, samples[frames.samples(0, stop)])
        for layer in range(3):
            np.testing.assert_allclose(strided.spaces[f"L{layer}"][keep:stop], passed[layer][0, keep:stop].numpy(),
                                       atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("model_type", ["hubert", "wavlm", "data2vec-audio", "wav2vec2-conformer"])
def test_the_wav2vec2_family_loads_and_equals_one_pass(model_type, tmp_path, write_wav):
    from bids_encoding_speech.tiny import TINY_WAV2VEC2, build_wav2vec2

    folder = str(build_wav2vec2(tmp_path / model_type, model_type=model_type, **TINY_WAV2VEC2))
    samples = noise(1.0)[:48 * 320 + 325]  # exactly the samples of 49 frames
    features = Speech(model=folder, window=2, stride=2).extract(audio(write_wav("clip.wav", samples)))
    passed = reference(folder, samples)
    assert len(features.onset) == passed[0].shape[1] == 49
    assert features.rate == 50 and features.info["SpeechModel"]["Class"] == AutoModel.from_pretrained(folder).__class__.__name__
    for layer in range(3):
        np.testing.assert_allclose(features.spaces[f"L{layer}"], passed[layer][0].numpy(), atol=1e-5, rtol=1e-4)


def test_whisper_encoder_reads_each_window_padded_to_30_s(tiny_whisper, write_wav):
    samples = noise(3.0)
    features = Speech(model=tiny_whisper, window=2, stride=1, batch_size=2).extract(audio(write_wav("w.wav", samples)))
    info = features.info["SpeechModel"]
    assert features.rate == 50 and features.spaces["L2"].shape == (150, 32) and set(features.spaces) == {"L0", "L1", "L2"}
    assert info["PaddedInputSeconds"] == 30 and info["Class"] == "WhisperModel" and info["FrameTime"] == "centre"
    for start, stop in ((0, 50), (0, 100), (50, 150)):  # the windows: frames [0, 50), [0, 100), [50, 150)
        passed = reference(tiny_whisper, samples[start * 320:stop * 320])
        for layer in range(3):
            np.testing.assert_allclose(features.spaces[f"L{layer}"][stop - 50:stop],
                                       passed[layer][0, stop - 50 - start:stop - start].numpy(), atol=1e-4, rtol=1e-4)
    defaults = Speech(model=tiny_whisper, layers="-1").extract(audio(write_wav("w.wav", samples)))
    assert (defaults.info["SpeechModel"]["WindowSeconds"], defaults.info["SpeechModel"]["StrideSeconds"]) == (30, 10)
    np.testing.assert_allclose(defaults.spaces["L2"], reference(tiny_whisper, samples)[2][0, :150].numpy(), atol=1e-4)
    with pytest.raises(UserError, match="at most 30 s"):
        Speech(model=tiny_whisper, window=40).extract(audio(write_wav("w.wav", samples)))


def test_audio_is_resampled_from_a_higher_rate_and_refused_at_a_lower_one(tiny_wav2vec2, write_wav):
    high = write_wav("high.wav", np.sin(2 * np.pi * 440 * np.arange(44100 * 2) / 44100) * 0.3, rate=44100)
    features = Speech(model=tiny_wav2vec2, layers="-1").extract(audio(high))
    assert features.spaces["L2"].shape[0] == load_encoder(tiny_wav2vec2, "cpu", "float32").frames.count(2 * RATE)
    low = write_wav("low.wav", noise(1.0)[::2], rate=8000)
    with pytest.raises(UserError) as error:
        Speech(model=tiny_wav2vec2).extract(audio(low))
    assert str(low) in error.value.message and "8000 Hz" in error.value.message and "16000 Hz" in error.value.message


def test_user_errors_name_the_folder_or_the_option(tiny_wav2vec2, write_wav, tmp_path):
    clip = audio(write_wav("clip.wav", noise(1.0)))
    missing = tmp_path / "models" / "wav2vec2-base"
    with pytest.raises(UserError, match="does not exist") as error:
        Speech(model=str(missing)).extract(clip)
    assert str(missing) in error.value.message
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="cannot be loaded as a Hugging Face audio model") as error:
        Speech(model=str(tmp_path / "empty")).extract(clip)
    assert str(tmp_path / "empty") in error.value.message
    with pytest.raises(UserError, match="never downloads"):
        Speech(model="no-such-org/no-such-model").extract(clip)
    with pytest.raises(UserError, match="layers=5"):
        Speech(model=tiny_wav2vec2, layers="5").extract(clip)
    with pytest.raises(UserError, match="stride of at least one frame"):
        Speech(model=tiny_wav2vec2, window=1, stride=2).extract(clip)
    with pytest.raises(UserError, match="less than one frame"):
        Speech(model=tiny_wav2vec2).extract(audio(write_wav("click.wav", noise(0.01))))
