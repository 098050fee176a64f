"""Whole-brain encoding: 200,000 voxels x 3,000 TRs x 3,072 features (768 x 4 delays), leave-one-run-out over 5 runs.

Run: .venv/bin/python bench/wholebrain.py [--voxels 200000 --samples 3000 --features 3072] [--mem-gb GB]
The full leave-one-run-out fit as the app runs it (inner leave-one-run-out alpha choice over 10 alphas,
held-out R², r and significance for every voxel), in float32 with voxel chunks. Prints wall time and
peak RSS; the peer is a plain numpy float32 matmul measured in the same run (the speed of the
machine). The last line is one JSON object (wall_s, peak_rss_gb, ...).

With ``--mem-gb`` the chunks are sized from that cap (as ``bids-encoding --mem-gb`` does) and the
peak RSS of this process (data included) is reported against it. A reduced size runs in a couple of
minutes: ``--voxels 20000 --mem-gb 1.2``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import final_line, matmul_gflops, peak_rss_gb  # noqa: E402

from bids_encoding.models.voxelwise import encode_runs  # noqa: E402


def simulate(n: int, p: int, v: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features and BOLD with a planted signal in 10% of the voxels, built in place to spare memory."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p), dtype=np.float32)
    Y = rng.standard_normal((n, v), dtype=np.float32)
    planted = v // 10
    W = rng.standard_normal((p, planted), dtype=np.float32) / np.sqrt(p)
    Y[:, :planted] += X @ W
    return X, Y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--voxels", type=int, default=200_000)
    parser.add_argument("--samples", type=int, default=3000)
    parser.add_argument("--features", type=int, default=3072)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--chunk-size", type=int, default=10_000)
    parser.add_argument("--mem-gb", type=float, default=None, help="memory cap of the fit (GiB), as --mem-gb of the app")
    args = parser.parse_args()
    reference = matmul_gflops()
    X, Y = simulate(args.samples, args.features, args.voxels)
    print(f"X {X.shape}, Y {Y.shape} float32 ({Y.nbytes / 1e9:.1f} GB), {args.runs} runs, "
          f"peak RSS after simulation {peak_rss_gb():.2f} GB", flush=True)
    run_lengths = [args.samples // args.runs] * args.runs
    start = time.perf_counter()
    scores = encode_runs(X, Y, run_lengths, alphas=np.logspace(-1, 5, 10), chunk_size=args.chunk_size,
                         mem_gb=args.mem_gb)
    wall = time.perf_counter() - start
    planted = args.voxels // 10
    cap = f" against a cap of {args.mem_gb:g} GB ({peak_rss_gb() / args.mem_gb:.0%} of it)" if args.mem_gb else ""
    print(f"leave-one-run-out fit of {args.voxels} voxels: {wall:.0f} s ({wall / 60:.1f} min), "
          f"peak RSS {peak_rss_gb():.2f} GB{cap}")
    print(f"median held-out R²: planted {np.median(scores.r2[:planted]):.3f}, others {np.median(scores.r2[planted:]):.4f}; "
          f"numpy float32 matmul here: {reference:.0f} GFLOP/s")
    final_line(wall_s=wall, peak_rss_gb=peak_rss_gb(), mem_gb=args.mem_gb, voxels=args.voxels, samples=args.samples,
               features=args.features, matmul_gflops=reference,
               planted_median_r2=float(np.median(scores.r2[:planted])))


if __name__ == "__main__":
    main()
