"""--mem-gb: the encoding fit sizes its voxel chunks so that the process stays within the cap.

Fits run in fresh processes, so that each one's peak resident memory is its own: the high-water mark VmHWM of
/proc/self/status, which starts anew at exec (ru_maxrss would carry over the forking pytest worker's size).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from bids_encoding.errors import UserError
from bids_encoding.models.voxelwise import encode_runs

from ..conftest import run_cli

# 300 samples (5 runs) x 50 features, 60,000 voxels: 72 MB of BOLD; one chunk of every voxel needs ~0.15 GB more
FIT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from bids_encoding.models.voxelwise import encode_runs

    mem_gb = float(sys.argv[1]) or None
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 50), dtype=np.float32)
    Y = rng.standard_normal((300, 60000), dtype=np.float32)
    Y[:, :6000] += X @ (rng.standard_normal((50, 6000), dtype=np.float32) / np.sqrt(50))
    start = dict(line.split(":", 1) for line in open("/proc/self/status"))
    scores = encode_runs(X, Y, [60] * 5, alphas=np.logspace(-1, 5, 5), chunk_size=60000, mem_gb=mem_gb)
    np.savez(sys.argv[2], r2=scores.r2, r=scores.r, alpha=scores.alpha, p=scores.p)
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    print(json.dumps({"peak_gb": int(status["VmHWM"].split()[0]) / 2 ** 20,
                      "start_gb": int(start["VmRSS"].split()[0]) / 2 ** 20}))
""")


def fit(mem_gb: float, out) -> tuple[dict, dict]:
    result = subprocess.run([sys.executable, "-c", FIT, str(mem_gb), str(out)], capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1]), dict(np.load(out))


@pytest.mark.slow
def test_a_capped_fit_stays_under_the_cap_and_scores_as_the_uncapped_one(tmp_path):
    free_memory, free = fit(0, tmp_path / "free.npz")
    # the cap halfway between what the process holds before the fit (imports and data) and the uncapped fit's peak:
    # the fit itself must make do with half of what it takes unchecked
    start, free_peak = free_memory["start_gb"], free_memory["peak_gb"]
    assert free_peak - start > 0.15, f"the uncapped fit ({start:.2f} -> {free_peak:.2f} GB) must need memory for this test"
    cap = round((start + free_peak) / 2, 3)
    capped_memory, capped = fit(cap, tmp_path / "capped.npz")
    capped_peak = capped_memory["peak_gb"]
    assert capped_peak <= cap, f"peak RSS {capped_peak:.3f} GB above the {cap} GB cap (start {start:.3f} GB)"
    # float32 products of other shapes round differently: equal to float32 precision, not bitwise
    for key in ("r2", "r"):
        np.testing.assert_allclose(capped[key], free[key], atol=1e-5)
    assert np.mean(capped["alpha"] == free["alpha"]) > 0.99
    assert np.median(free["r2"][:6000]) > 0.2 > np.median(free["r2"][6000:])  # the planted voxels are found


def test_a_cap_too_small_for_one_chunk_names_the_minimum():
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((100, 10)), rng.standard_normal((100, 500))
    with pytest.raises(UserError) as caught:
        encode_runs(X, Y, [20] * 5, mem_gb=0.01)
    message = caught.value.message
    assert "--mem-gb 0.01 is too small" in message
    minimum = float(message.split("Give --mem-gb ")[1].split()[0])
    assert 0.01 < minimum < 8
    encode_runs(X, Y, [20] * 5, mem_gb=minimum)  # the minimum it names works


@pytest.mark.slow
def test_cli_cap_too_small_is_one_paragraph_and_writes_nothing(example_dataset, tmp_path):
    out = tmp_path / "out"
    result = run_cli(example_dataset, out, "participant", "--participant-label", "01", "--task", "lpp",
                     "--features", "wordrate", "--derivatives", example_dataset / "derivatives" / "fmriprep",
                     "--skip-bids-validation", "--mem-gb", "0.01", "-w", tmp_path / "work")
    assert result.returncode == 2, result.stderr
    assert "--mem-gb 0.01 is too small" in result.stderr and "Give --mem-gb" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(out.rglob("*.nii.gz"))


def test_mem_gb_must_be_positive(example_dataset, tmp_path):
    result = run_cli(example_dataset, tmp_path / "out", "participant", "--features", "wordrate", "--mem-gb", "0")
    assert result.returncode == 2 and "--mem-gb must be a positive number" in result.stderr


def test_kept_predictions_count_against_the_cap():
    """--compare keeps every held-out prediction (an array the size of the BOLD): the minimum cap grows by its size."""
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((100, 10), dtype=np.float32), rng.standard_normal((100, 500_000), dtype=np.float32)

    def minimum(keep: bool) -> float:
        with pytest.raises(UserError) as caught:
            encode_runs(X, Y, [20] * 5, mem_gb=0.01, keep_predictions=keep)
        return float(caught.value.message.split("Give --mem-gb ")[1].split()[0])

    assert minimum(True) - minimum(False) >= Y.nbytes / 2 ** 30 - 0.1  # the named minimum is rounded up to 0.1 GB
