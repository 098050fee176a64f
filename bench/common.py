"""Helpers shared by the benchmarks: timing, peak memory, a matmul reference, the final JSON line."""

from __future__ import annotations

import json
import resource
import time

import numpy as np


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def clock(device: str, function, *args, **kwargs):
    """``timed`` for torch work: waits for the GPU's queue on ``cuda``, so the time is the work's."""
    import torch

    start = time.perf_counter()
    result = function(*args, **kwargs)
    if device == "cuda":
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def matmul_gflops(n: int = 2048, dtype=np.float32, repeats: int = 3) -> float:
    """What plain numpy matmul reaches here, for context."""
    a = np.random.default_rng(0).standard_normal((n, n)).astype(dtype)
    a @ a
    best = min(timed(np.matmul, a, a)[1] for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def final_line(**figures) -> None:
    """Every benchmark ends with one JSON object holding its figures."""
    print(json.dumps({k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in figures.items()}))
