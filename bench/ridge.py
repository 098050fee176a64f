"""RidgeCV on X 2000 x 768, Y 2000 x 20000 (float32), 10 alphas, 5 inner folds: ours vs himalaya vs scikit-learn.

Run: .venv/bin/python bench/ridge.py [--voxels 20000]
Prints each time, the ratios, the largest |ΔR²| on held-out data (ours vs himalaya) and the
GFLOP/s our solver reaches next to a plain numpy matmul measured in the same run; the last line
is one JSON object (ours_s, himalaya_s, sklearn_s, max_abs_dr2, ...).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import final_line, matmul_gflops, timed  # noqa: E402

from bids_encoding.models.ridge import RidgeCV, r2_score_columns  # noqa: E402


def simulate(n_train: int, n_test: int, p: int, v: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_train + n_test, p), dtype=np.float32)
    W = rng.standard_normal((p, v), dtype=np.float32) * (rng.random(v, dtype=np.float32) < 0.3) / np.sqrt(p)
    noise = rng.standard_normal((n_train + n_test, v), dtype=np.float32)
    Y = X @ W * rng.uniform(0.2, 2.0, v).astype(np.float32) + noise
    return X[:n_train], Y[:n_train], X[n_train:], Y[n_train:]


def flops(n: int, p: int, v: int, folds: int, n_alphas: int) -> float:
    """Floating-point operations of our RidgeCV (SVDs, projections, alpha path, refit)."""
    r = min(n, p)
    n_val = n // folds
    n_tr = n - n_val
    per_fold = 4 * n_tr * p * r + 2 * r * n_tr * v + n_alphas * (2 * n_val * r * v + 3 * n_val * v)
    refit = 4 * n * p * r + 2 * r * n * v + 2 * p * r * v
    return folds * per_fold + refit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--features", type=int, default=768)
    parser.add_argument("--voxels", type=int, default=20000)
    parser.add_argument("--skip-sklearn", action="store_true")
    args = parser.parse_args()
    alphas = np.logspace(-1, 4, 10)
    X, Y, X_test, Y_test = simulate(args.samples, 500, args.features, args.voxels)
    print(f"X {X.shape}, Y {Y.shape}, float32, {len(alphas)} alphas, 5 folds")

    ours, ours_s = timed(RidgeCV(alphas=alphas, cv=5).fit, X, Y)
    r2_ours = r2_score_columns(Y_test, ours.predict(X_test))
    gflops = flops(args.samples, args.features, args.voxels, 5, len(alphas)) / ours_s / 1e9
    print(f"bids-encoding RidgeCV:  {ours_s:7.2f} s  ({gflops:.0f} GFLOP/s)")

    from himalaya.backend import set_backend
    from himalaya.ridge import RidgeCV as HimalayaRidgeCV

    set_backend("numpy")
    himalaya, himalaya_s = timed(HimalayaRidgeCV(alphas=alphas, cv=5).fit, X, Y)
    r2_himalaya = r2_score_columns(Y_test, np.asarray(himalaya.predict(X_test)))
    print(f"himalaya RidgeCV:       {himalaya_s:7.2f} s  ratio {himalaya_s / ours_s:.2f}x")

    sklearn_s, max_dr2_sklearn = float("nan"), float("nan")
    if not args.skip_sklearn:
        from sklearn.linear_model import RidgeCV as SklearnRidgeCV

        sk, sklearn_s = timed(SklearnRidgeCV(alphas=alphas, alpha_per_target=True, fit_intercept=False).fit, X, Y)
        max_dr2_sklearn = float(np.abs(r2_score_columns(Y_test, sk.predict(X_test).astype(np.float32)) - r2_ours).max())
        print(f"scikit-learn RidgeCV:   {sklearn_s:7.2f} s  ratio {sklearn_s / ours_s:.2f}x "
              f"(leave-one-out GCV, so its alphas differ: max |dR2| {max_dr2_sklearn:.4f})")

    max_dr2 = float(np.abs(r2_ours - r2_himalaya).max())
    reference = matmul_gflops()
    print(f"max |R2 ours - R2 himalaya| on held-out data: {max_dr2:.2e}")
    print(f"numpy float32 matmul here: {reference:.0f} GFLOP/s; our solver reaches {gflops / reference:.0%} of it")
    final_line(ours_s=ours_s, himalaya_s=himalaya_s, sklearn_s=sklearn_s, max_abs_dr2=max_dr2,
               speedup_vs_himalaya=himalaya_s / ours_s, speedup_vs_sklearn=sklearn_s / ours_s,
               ours_gflops=gflops, matmul_gflops=reference, max_abs_dr2_sklearn=max_dr2_sklearn)


if __name__ == "__main__":
    main()
