"""Speech features: our causal windows vs one pass over the audio vs a naive loop of one window per frame.

An hour of 16 kHz audio (``--minutes``; noise: the weights are random, so the content does not matter), a
wav2vec2-base-sized model (Wav2Vec2Config defaults: 7 convolutions striding 320 samples, 12 layers, 768 wide,
95 M parameters; random weights, built in memory and saved to a temporary folder, never downloaded), every
hidden state (13 layers). Times, in the same run, as audio seconds per wall second:
  - ours: ``Speech(window, stride).extract`` on the audio file (the defaults: 10 s windows every 5 s, each
    keeping its last 5 s; reading the file and building the FeatureSet included; model loading timed apart);
  - one pass: the audio read once and run through the model in non-overlapping ``--chunk`` s pieces (30 s: a
    whole hour does not fit one pass, attention is quadratic in length), batched like ours, all hidden states
    copied to the CPU: every frame computed once. Self-attention costs grow with the piece's length, so on a
    CPU a pass in 30 s pieces can cost more per frame than ours in 10 s windows (ratio below 1x); ``--chunk 10``
    (pieces as long as our windows) gives the bare cost of reading the audio once at our window length;
  - naive loop: stride of one frame done one window at a time, batch 1 (for every frame, a pass over the
    ``window`` s ending at it, keeping its last frame), as notebooks do; far too slow for every frame, so it is
    timed on ``--naive-frames`` frames spread through the audio and extrapolated to all of them.
One pass and ours alternate (``--repeats``; one pass first and last) and the best time of each counts: the
cores may be shared, and other processes only ever add time.

Run: HF_HUB_OFFLINE=1 .venv/bin/python bench/speech_features.py [--minutes 60] [--naive-frames 10] [--repeats 2]
     [--window 0] [--stride 0] [--batch-size 8] [--device auto|cpu|cuda] [--dtype float32|float16|bfloat16]
Memory: all 13 layers of an hour are 13 x 180,000 x 768 values (7 GB as float32, 14 GB in the FeatureSet,
which holds float64); ``--layers`` keeps fewer. Use a small ``--minutes`` (2) for a quick run on a few cores.
Targets: ours <= 3x the time of one pass, and >= 20x faster than the naive loop. The last line is one JSON
object (ours_audio_s_per_s, one_pass_audio_s_per_s, naive_audio_s_per_s, windows_vs_one_pass, naive_vs_windows, ...).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import clock, final_line, peak_rss_gb  # noqa: E402

from bids_encoding.plugin_api import Audio  # noqa: E402

RATE = 16000


def passes(encoder, pieces: list[np.ndarray], layers: list[int], batch_size: int) -> list[list[np.ndarray]]:
    """Every piece through the model, equal-length pieces batched: each layer's frames, on the CPU."""
    out = []
    for start in range(0, len(pieces), batch_size):
        batch = pieces[start:start + batch_size]
        if len({len(p) for p in batch}) > 1:  # the short last piece alone
            out += passes(encoder, batch[:-1], layers, batch_size) + passes(encoder, batch[-1:], layers, batch_size)
            continue
        states = encoder.forward(batch)
        out += [[states[layer][row].float().cpu().numpy() for layer in layers] for row in range(len(batch))]
    return out


def one_pass(encoder, path: Path, chunk_s: float, layers: list[int], batch_size: int) -> int:
    """The file read once, the model over non-overlapping chunks; returns the number of frames."""
    import soundfile

    samples = soundfile.read(str(path), dtype="float32")[0]
    step = int(chunk_s * RATE)
    return sum(len(states[0]) for states in passes(encoder, [samples[i:i + step] for i in range(0, len(samples), step)],
                                                   layers, batch_size))


def naive_frame(encoder, samples: np.ndarray, frame: int, window: int, layers: list[int]) -> list[np.ndarray]:
    """One pass, batch 1, over the ``window`` frames ending at ``frame``: every layer's state at that frame."""
    piece = samples[encoder.frames.samples(max(0, frame - window + 1), frame + 1)]
    return [states[-1] for states in passes(encoder, [piece], layers, 1)[0]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60, help="minutes of 16 kHz audio")
    parser.add_argument("--window", type=float, default=0, help="s per window (0: the extractor's default, 10 s)")
    parser.add_argument("--stride", type=float, default=0, help="s between windows (0: the default, half the window)")
    parser.add_argument("--chunk", type=float, default=30, help="s per piece of the one pass")
    parser.add_argument("--layers", default="all", help="hidden states kept (all: 13)")
    parser.add_argument("--batch-size", type=int, default=8, help="windows (and one-pass chunks) per forward pass")
    parser.add_argument("--naive-frames", type=int, default=10, help="frames the naive loop is timed on (a sample)")
    parser.add_argument("--repeats", type=int, default=2, help="times ours is timed, alternating with the one pass")
    parser.add_argument("--check", type=int, default=2,
                        help="frames of ours checked against one pass over the window that kept them (0: skip)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32")
    args = parser.parse_args()

    import soundfile
    import torch
    from bids_encoding.plugin_api import layer_indices
    from bids_encoding_speech import Speech, load_encoder, plan_windows, resolve_device
    from bids_encoding_speech.tiny import build_wav2vec2

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        folder = str(build_wav2vec2(Path(tmp) / "wav2vec2-base-random"))
        encoder, load_s = clock(device, load_encoder, folder, device, args.dtype)
        layers = layer_indices(args.layers, encoder.n_hidden)
        extractor = Speech(model=folder, layers=args.layers, window=args.window, stride=args.stride,
                           batch_size=args.batch_size, device=device, dtype=args.dtype)
        window, stride = extractor.window_frames(encoder.frames)
        print(f"model: wav2vec2 (Wav2Vec2Config defaults = base size), {encoder.n_hidden - 1} layers x {encoder.width} "
              f"wide, {encoder.parameters / 1e6:.1f} M parameters, random weights; {encoder.frames.rate:g} frames/s; "
              f"{device}, {args.dtype}, torch {torch.__version__}, {torch.get_num_threads()} threads")
        print(f"model load: {load_s:.2f} s (excluded from the times below); load average at start "
              f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")

        seconds = args.minutes * 60
        rng = np.random.default_rng(0)
        samples = (0.1 * rng.standard_normal(int(seconds * RATE))).astype(np.float32)
        path = Path(tmp) / "audio.wav"
        soundfile.write(path, samples, RATE, subtype="FLOAT")
        samples = soundfile.read(str(path), dtype="float32")[0]  # what the extractor reads
        stimuli = Audio(onset=np.zeros(1), duration=np.zeros(1), path=(path,))
        n_frames = encoder.frames.count(len(samples))
        print(f"audio: {seconds:g} s of 16 kHz noise ({seconds / 60:g} min), {n_frames} frames; "
              f"{len(layers)} layers kept")

        with torch.inference_mode():  # warm-up: one-time kernel set-up is not charged to whoever runs first
            passes(encoder, [samples[:RATE]], layers, 1)

        ones, ours_times = [], []
        for _ in range(args.repeats):
            ones.append(clock(device, one_pass, encoder, path, args.chunk, layers, args.batch_size)[1])
            features, elapsed = clock(device, extractor.extract, stimuli)
            ours_times.append(elapsed)
        ones.append(clock(device, one_pass, encoder, path, args.chunk, layers, args.batch_size)[1])
        ours_s, one_s = min(ours_times), min(ones)
        assert len(features.onset) == n_frames, "the extractor gave other frames than this benchmark expects"
        windows = plan_windows(n_frames, window, stride)
        read = sum(w.stop - w.start for w in windows)
        ours_aps, one_aps = seconds / ours_s, seconds / one_s
        print(f"ours:     {ours_s:8.2f} s  {ours_aps:8.1f} audio s/s  ({len(windows)} windows of up to "
              f"{window / encoder.frames.rate:g} s every {stride / encoder.frames.rate:g} s, batch {args.batch_size}: "
              f"{read / n_frames:.2f}x the frames read; file reading and FeatureSet included; best of "
              f"{', '.join(f'{t:.2f}' for t in ours_times)} s)")
        print(f"one pass: {one_s:8.2f} s  {one_aps:8.1f} audio s/s  (non-overlapping {args.chunk:g} s chunks, since "
              f"an hour in one pass does not fit: every frame once; best of {', '.join(f'{t:.2f}' for t in ones)} s, "
              f"timed before and after ours)")

        eligible = np.arange(window - 1, n_frames)  # frames with a whole window ending at them
        sample = eligible[np.linspace(0, len(eligible) - 1, min(args.naive_frames, len(eligible))).round().astype(int)]
        naive_s = sum(clock(device, naive_frame, encoder, samples, int(frame), window, layers)[1] for frame in sample)
        naive_aps = seconds / (naive_s / len(sample) * n_frames)
        print(f"naive:    {naive_s:8.2f} s  {naive_aps:8.2f} audio s/s  (a SAMPLE of {len(sample)} frames spread through "
              f"the audio, one pass of {window / encoder.frames.rate:g} s each, batch 1; all {n_frames} frames would "
              f"take ~{naive_s / len(sample) * n_frames:.0f} s)")

        ratio, speedup = ours_s / one_s, ours_aps / naive_aps
        print(f"windows vs one pass: {ratio:.2f}x its time (target <= 3x: {'met' if ratio <= 3 else 'MISSED'})")
        print(f"naive vs windows: ours is {speedup:.0f}x faster (target >= 20x: {'met' if speedup >= 20 else 'MISSED'})")

        max_diff = float("nan")
        if args.check:  # ours must equal one pass over the window that kept each frame
            diffs = []
            for k in np.linspace(0, len(windows) - 1, min(args.check, len(windows))).round().astype(int):
                w = windows[k]
                frame = w.stop - 1
                states = naive_frame(encoder, samples, frame, frame - w.start + 1, layers)
                diffs += [np.abs(features.spaces[f"L{layer}"][frame] - state).max() / (np.abs(state).max() + 1e-12)
                          for layer, state in zip(layers, states)]
            max_diff = float(max(diffs))
            print(f"check: {min(args.check, len(windows))} frames of ours vs one pass over the window that kept them: "
                  f"max relative difference {max_diff:.1e} ({len(layers)} layers)")
        print(f"peak memory: {peak_rss_gb():.2f} GB; load average at end {os.getloadavg()[0]:.2f} "
              f"(above the thread count, other processes shared the cores and the times are noisy)")

    final_line(ours_audio_s_per_s=ours_aps, one_pass_audio_s_per_s=one_aps, naive_audio_s_per_s=naive_aps,
               windows_vs_one_pass=ratio, naive_vs_windows=speedup, ours_s=ours_s, one_pass_s=one_s,
               naive_sample_s=naive_s, naive_sample_frames=int(len(sample)), load_s=load_s, audio_s=seconds,
               frames=n_frames, windows=len(windows), window_s=window / encoder.frames.rate,
               stride_s=stride / encoder.frames.rate, chunk_s=args.chunk, layers=len(layers),
               torch_threads=torch.get_num_threads(), device=device, dtype=args.dtype, check_max_rel_diff=max_diff)


if __name__ == "__main__":
    main()
