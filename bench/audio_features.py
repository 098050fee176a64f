"""Audio features of a long clip: our blockwise envelope and log-mel vs the textbook whole-file calls.

A clip of ``--minutes`` of amplitude-modulated noise at ``--sr`` Hz (10 min at 16 kHz by default; an hour works
too). Timed in the same run, each the best of ``--repeats``, with the peak of the memory numpy allocates
(tracemalloc) during the call:
  - envelope, ours: ``amplitude_envelope`` (blocks of 60 s, Hilbert with a fast FFT length, Kaiser FIR, sampled
    at 100 Hz); peer: ``np.abs(scipy.signal.hilbert(x))`` over the whole clip, then ``resample_poly`` to 100 Hz;
  - log-mel, ours: ``log_mel`` (blocks of 60 s of frames); peer: ``librosa.feature.melspectrogram`` over the whole
    clip (the same window, FFT length and hop, ``center=True``) and ``power_to_db``.
Agreement is printed too: the envelopes' correlation (they filter differently), the mel spectrograms' largest
difference in dB (the same computation).

Run: .venv/bin/python bench/audio_features.py [--minutes 10] [--sr 16000] [--repeats 2]
Targets: ours uses <= 1/4 of the peer's memory for the envelope and <= 1/2 for the mel spectrogram, and takes
<= 1.5x the peer's time. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import final_line  # noqa: E402

from bids_encoding_audio import amplitude_envelope, log_mel, stft_sizes  # noqa: E402

RATE = 100


def measured(repeats: int, function, *args, **kwargs):
    """The result, the best time of ``repeats`` calls, and the peak of traced allocations during one call (GB)."""
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        result = function(*args, **kwargs)
        best = min(best, time.perf_counter() - start)
    del result
    tracemalloc.start()
    result = function(*args, **kwargs)
    peak = tracemalloc.get_traced_memory()[1] / 1e9
    tracemalloc.stop()
    return result, best, peak


def peer_envelope(x: np.ndarray, sr: int) -> np.ndarray:
    from scipy.signal import hilbert, resample_poly

    return resample_poly(np.abs(hilbert(x)), RATE, sr)


def peer_log_mel(x: np.ndarray, sr: int) -> np.ndarray:
    import librosa

    win_length, n_fft = stft_sizes(sr, 0.025)
    power = librosa.feature.melspectrogram(y=x, sr=sr, n_fft=n_fft, hop_length=sr // RATE, win_length=win_length,
                                           center=True, pad_mode="constant", n_mels=32)
    return librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=None).T


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--sr", type=int, default=16000, help="the clip's rate; a multiple of 100 Hz (the peer's hop)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    n = int(args.minutes * 60 * args.sr)
    t = np.arange(n) / args.sr
    x = (0.1 * np.random.default_rng(0).standard_normal(n) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    del t
    print(f"clip: {args.minutes:g} min at {args.sr} Hz ({x.nbytes / 1e6:.0f} MB of float32); features at {RATE} Hz")

    for function in (amplitude_envelope, peer_envelope, log_mel, peer_log_mel):  # imports (librosa: seconds), caches
        args_short = (x[:args.sr], args.sr) + ((RATE, 30.0) if function is amplitude_envelope else
                                              (RATE, 32, 0.0, None, 0.025) if function is log_mel else ())
        function(*args_short)
    ours_env, ours_env_s, ours_env_gb = measured(args.repeats, amplitude_envelope, x, args.sr, RATE, 30.0)
    peer_env, peer_env_s, peer_env_gb = measured(args.repeats, peer_envelope, x, args.sr)
    ours_mel, ours_mel_s, ours_mel_gb = measured(args.repeats, log_mel, x, args.sr, RATE, 32, 0.0, None, 0.025)
    peer_mel, peer_mel_s, peer_mel_gb = measured(args.repeats, peer_log_mel, x, args.sr)

    print(f"{'':22}{'time (s)':>10}{'peak alloc (GB)':>17}")
    for label, s, gb in [("envelope, ours", ours_env_s, ours_env_gb), ("envelope, whole file", peer_env_s, peer_env_gb),
                         ("log-mel, ours", ours_mel_s, ours_mel_gb), ("log-mel, librosa", peer_mel_s, peer_mel_gb)]:
        print(f"{label:22}{s:10.2f}{gb:17.3f}")
    m = min(len(ours_env), len(peer_env))
    corr = float(np.corrcoef(ours_env[:m], peer_env[:m])[0, 1])
    mel_diff = float(np.abs(ours_mel - peer_mel[:len(ours_mel)]).max())
    env_time, env_mem = ours_env_s / peer_env_s, ours_env_gb / peer_env_gb
    mel_time, mel_mem = ours_mel_s / peer_mel_s, ours_mel_gb / peer_mel_gb
    print(f"envelope: ours {env_time:.2f}x the peer's time, {env_mem:.2f}x its memory (targets <= 1.5x, <= 0.25x: "
          f"{'met' if env_time <= 1.5 and env_mem <= 0.25 else 'MISSED'}); correlation {corr:.4f}")
    print(f"log-mel: ours {mel_time:.2f}x the peer's time, {mel_mem:.2f}x its memory (targets <= 1.5x, <= 0.5x: "
          f"{'met' if mel_time <= 1.5 and mel_mem <= 0.5 else 'MISSED'}); largest difference {mel_diff:.2g} dB")
    final_line(minutes=args.minutes, sr=args.sr, envelope_time_ratio=env_time, envelope_memory_ratio=env_mem,
               envelope_correlation=corr, mel_time_ratio=mel_time, mel_memory_ratio=mel_mem, mel_max_db_diff=mel_diff)


if __name__ == "__main__":
    main()
