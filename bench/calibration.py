"""Calibration of encode_runs' p-values on null data, and power on a short block-design run.

Run: PYTHONPATH=. .venv/bin/python bench/calibration.py [--voxels 2000] [--repeats 4]   (about 1 min on 2 cores)

Null rows: features are random events (Poisson onsets, random amplitudes) convolved with the
canonical HRF at TR 2 s, so they are autocorrelated like fMRI designs; the data are AR(1) noise
(rho drawn per voxel in 0.3-0.6), independent of the features; both are linearly detrended and
z-scored within each run, as the pipeline does. Each row is one run layout (runs x volumes per
run: 60 to 600 volumes in all, then 2 and 4 runs of 600), with ``--voxels`` null voxels split
over ``--repeats`` independent feature draws. It gives the fraction of voxels with p < 0.05 and
p < 0.01 (targets 0.05 and 0.01) and of NaN p; the last column is p < 0.05 under the former
circular-shift null (shifts >= 10 samples), whose p fell back to 1 on folds of 20 samples or fewer.
Planted rows: one 84-volume run at TR 7 s, a 6-on / 6-off block design convolved with the HRF,
10% of the voxels driven by it (R² 0.5-0.8): the fraction of planted and of null voxels with
q < 0.05. The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
from scipy import signal, stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import final_line  # noqa: E402

from bids_encoding.models import significance, voxelwise  # noqa: E402
from bids_encoding.models.voxelwise import encode_runs  # noqa: E402

DT = 0.1  # seconds: resolution of the event time course before sampling at the TR


def hrf(dt: float = DT, length: float = 32.0) -> np.ndarray:
    """SPM's canonical double-gamma HRF (peak 6 s, undershoot 16 s, ratio 1/6)."""
    t = np.arange(0, length, dt)
    h = stats.gamma.pdf(t, 6) - stats.gamma.pdf(t, 16) / 6
    return h / h.sum()


def event_features(n: int, tr: float, n_features: int, rng: np.random.Generator) -> np.ndarray:
    """Random events (mean 6 s apart, 1 s long, random amplitudes) convolved with the HRF, sampled at the TR."""
    steps = int(round(n * tr / DT))
    events = np.zeros((steps, n_features))
    for j in range(n_features):
        onsets = np.cumsum(rng.exponential(6.0 / DT, size=steps // 10 + 10)).astype(int)
        for onset in onsets[onsets < steps]:
            events[onset:onset + int(1 / DT), j] += rng.normal()
    convolved = signal.fftconvolve(events, hrf()[:, None], axes=0)[:steps]
    return convolved[::int(round(tr / DT))][:n]


def block_feature(n: int, tr: float, block: int = 6) -> np.ndarray:
    """Alternating rest / task blocks of ``block`` volumes, convolved with the HRF."""
    steps = int(round(n * tr / DT))
    boxcar = ((np.arange(steps) * DT / tr) // block % 2 == 1).astype(float)
    return np.convolve(boxcar, hrf())[:steps][::int(round(tr / DT))][:n, None]


def ar1(n: int, rho: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Stationary AR(1) noise, one column per entry of ``rho``, unit variance."""
    e = rng.normal(size=(n, len(rho)))
    e[0] /= np.sqrt(1 - rho ** 2)
    for t in range(1, n):
        e[t] += rho * e[t - 1]
    return e * np.sqrt(1 - rho ** 2)


def preprocess(a: np.ndarray) -> np.ndarray:
    """Linear detrend and z-score within the run, as the pipeline does."""
    a = signal.detrend(a, axis=0)
    return (a - a.mean(0)) / np.where(a.std(0) > 0, a.std(0), 1)


class shift_null:
    """Within this block encode_runs scores folds with the former circular-shift null (min_shift 10)."""

    def __enter__(self):
        self.saved = significance.fold_p_values

        def fold_p_values(y, prediction, phi):
            shifted = voxelwise.circular_shift_r(y, prediction)
            return voxelwise.shift_null_p(shifted, 10), shifted[0]

        significance.fold_p_values = fold_p_values  # combined by the same Cauchy test as the new null

    def __exit__(self, *exc):
        significance.fold_p_values = self.saved


def null_fraction(n_runs: int, n_per_run: int, n_voxels: int, repeats: int, seed: int = 0,
                  rho_range=(0.3, 0.6), n_features: int = 6, tr: float = 2.0) -> np.ndarray:
    """p-values of ``n_voxels`` null voxels (over ``repeats`` feature draws) for one run layout."""
    ps = []
    for rep in range(repeats):
        rng = np.random.default_rng([seed, n_runs, n_per_run, rep])
        v = n_voxels // repeats
        rho = rng.uniform(*rho_range, size=v)
        X = np.concatenate([preprocess(event_features(n_per_run, tr, n_features, rng)) for _ in range(n_runs)])
        Y = np.concatenate([preprocess(ar1(n_per_run, rho, rng)) for _ in range(n_runs)])
        ps.append(encode_runs(X, Y, [n_per_run] * n_runs).p)
    return np.concatenate(ps)


def planted_block(n_voxels: int, seed: int = 0, n: int = 84, tr: float = 7.0, fraction: float = 0.1):
    """q-values of a short single block-design run in which ``fraction`` of the voxels follow the blocks."""
    rng = np.random.default_rng([seed, n])
    x = preprocess(block_feature(n, tr))
    n_planted = int(n_voxels * fraction)
    rho = rng.uniform(0.3, 0.6, size=n_voxels)
    beta = np.zeros(n_voxels)
    beta[:n_planted] = rng.uniform(1.0, 2.0, size=n_planted)  # R² = beta² / (1 + beta²): 0.5 to 0.8
    Y = preprocess(x * beta + ar1(n, rho, rng))
    scores = encode_runs(x, Y, [n])
    return scores, n_planted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voxels", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.getLogger("bids_encoding").setLevel(logging.ERROR)
    figures = {}
    start = time.perf_counter()
    print(f"Null calibration: {args.voxels} null voxels per row, AR(1) rho 0.3-0.6, HRF-convolved event features\n")
    print(f"{'runs':>4} {'vol/run':>7} {'total':>5} | {'p<0.05':>7} {'p<0.01':>7} {'NaN':>5} | {'s':>5} | "
          f"{'shift null p<0.05':>17}")
    layouts = [(n_runs, total) for total in (60, 120, 300, 600) for n_runs in (1, 2, 4)] + [(2, 1200), (4, 2400)]
    for n_runs, total in layouts:
        tic = time.perf_counter()
        p = null_fraction(n_runs, total // n_runs, args.voxels, args.repeats, args.seed)
        seconds = time.perf_counter() - tic
        finite = p[np.isfinite(p)]
        f05, f01, nan = np.mean(finite < 0.05), np.mean(finite < 0.01), np.mean(~np.isfinite(p))
        with shift_null():
            old = np.mean(null_fraction(n_runs, total // n_runs, args.voxels, args.repeats, args.seed) < 0.05)
        print(f"{n_runs:>4} {total // n_runs:>7} {total:>5} | {f05:>7.3f} {f01:>7.3f} {nan:>5.2f} | "
              f"{seconds:>5.1f} | {old:>17.3f}")
        figures[f"p05_{n_runs}x{total // n_runs}"] = float(f05)
        figures[f"p01_{n_runs}x{total // n_runs}"] = float(f01)
    tic = time.perf_counter()
    scores, n_planted = planted_block(args.voxels, args.seed)
    planted, null = scores.q[:n_planted] < 0.05, scores.q[n_planted:] < 0.05
    print(f"\nPlanted block design: 1 run x 84 volumes, TR 7 s, 6-on/6-off blocks, {n_planted} planted voxels "
          f"(R² 0.5-0.8) of {args.voxels}")
    print(f"  planted with q < 0.05: {planted.mean():.3f} (median p {np.median(scores.p[:n_planted]):.2g}, "
          f"median R² {np.median(scores.r2[:n_planted]):.2f})")
    strong = scores.r2[:n_planted] >= 0.7
    print(f"  planted with held-out R² >= 0.7 ({strong.sum()}) with q < 0.05: {planted[strong].mean():.3f}")
    print(f"  null with q < 0.05:    {null.mean():.3f}   null with p < 0.05: {np.mean(scores.p[n_planted:] < 0.05):.3f}"
          f"   ({time.perf_counter() - tic:.1f} s)")
    with shift_null():
        old, _ = planted_block(args.voxels, args.seed)
    print(f"  former circular-shift null: planted with q < 0.05: {np.mean(old.q[:n_planted] < 0.05):.3f}, "
          f"p > 0.999 in {np.mean(old.p > 0.999):.3f} of all voxels")
    figures.update(planted_q05=float(planted.mean()), planted_strong_q05=float(planted[strong].mean()),
                   null_q05=float(null.mean()),
                   seconds=time.perf_counter() - start)
    final_line(**figures)


if __name__ == "__main__":
    main()
