"""Tiny randomly initialised audio encoders saved locally (loaded like hub models), and sound files to read."""

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_wav2vec2(tmp_path_factory) -> str:
    """A 2-layer wav2vec2, 32 wide, 50 frames/s at 16 kHz (3 hidden states: L0, L1, L2)."""
    from bids_encoding_speech.tiny import TINY_WAV2VEC2, build_wav2vec2

    return str(build_wav2vec2(tmp_path_factory.mktemp("tiny_wav2vec2"), **TINY_WAV2VEC2))


@pytest.fixture(scope="session")
def tiny_whisper(tmp_path_factory) -> str:
    """A Whisper model with a 2-layer encoder, 32 wide, reading 30 s of 80-bin log-mel features."""
    from bids_encoding_speech.tiny import TINY_WHISPER, build_whisper

    return str(build_whisper(tmp_path_factory.mktemp("tiny_whisper"), **TINY_WHISPER))


@pytest.fixture
def write_wav(tmp_path):
    """``write_wav(name, samples, rate)`` saves mono float samples as a 32-bit float WAV file (read back exactly) and returns its path."""
    import soundfile

    def write(name: str, samples: np.ndarray, rate: int = 16000):
        path = tmp_path / name
        soundfile.write(path, np.clip(samples, -1, 1), rate, subtype="FLOAT")
        return path

    return write
