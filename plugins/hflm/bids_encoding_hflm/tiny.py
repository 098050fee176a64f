"""Build a small GPT-2 and its tokenizer locally, saved for ``from_pretrained``.

No GPT-2 weights can be downloaded here, and tests must never download: they
train a byte-level BPE tokenizer on a text with the ``tokenizers`` library,
initialise a GPT-2 from ``GPT2Config`` (random weights), and save both to a
folder that the extractor loads exactly as it loads a hub model. The benchmark
uses the same builder with GPT-2-small sizes.
"""

from __future__ import annotations

from pathlib import Path

END = "<|endoftext|>"


def build_gpt2(folder: str | Path, corpus: str, vocab_size: int = 500, seed: int = 0, **config) -> Path:
    """Save a randomly initialised GPT-2 (``config`` overrides GPT2Config) with a BPE tokenizer trained on ``corpus``."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    folder = Path(folder)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([corpus], vocab_size=vocab_size, min_frequency=1, special_tokens=[END], show_progress=False)
    tokenizer = GPT2TokenizerFast(tokenizer_object=bpe._tokenizer, bos_token=END, eos_token=END, unk_token=END)
    torch.manual_seed(seed)
    end = tokenizer.convert_tokens_to_ids(END)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), bos_token_id=end, eos_token_id=end, **config))
    tokenizer.save_pretrained(folder)
    model.save_pretrained(folder)
    return folder
