"""A tiny GPT-2 saved locally (tokenizer trained on the example story), loaded like a hub model."""

import os

import pytest

from bids_encoding.plugin_api import EXAMPLE_TEXT

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def story_words() -> tuple[str, ...]:
    return tuple(EXAMPLE_TEXT.read_text(encoding="utf-8").split())


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory, story_words) -> str:
    """A 2-block GPT-2 that reads 48 tokens at once, so a few hundred words need many windows."""
    from bids_encoding_hflm.tiny import build_gpt2

    return str(build_gpt2(tmp_path_factory.mktemp("tiny_gpt2"), " ".join(story_words), vocab_size=400,
                          n_positions=48, n_embd=32, n_layer=2, n_head=2))
