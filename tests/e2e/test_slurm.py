"""The participant workflow through Nipype's SLURM plugin on a real single-node SLURM cluster
(munged, slurmctld and slurmd started on localhost by the fixture), giving the same derivatives as
a MultiProc run of the same command.

Needs Debian's slurm-wlm and munge and root: on a user's machine without them the test is skipped
with the reason; under CI=true it fails instead (.ci/run installs them).
"""

from __future__ import annotations

import gzip
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from ..conftest import run_cli
from .slurm_cluster import LocalSlurm, why_unavailable

SBATCH_ARGS = "--partition=debug --time=00:10:00 --mem=1G"
PROBLEM = why_unavailable()
IN_CI = os.environ.get("CI") == "true"
# skipped before any fixture is built on a user's machine; never skipped in CI (the fixture fails there)
pytestmark = pytest.mark.skipif(bool(PROBLEM) and not IN_CI, reason=PROBLEM or "")


@pytest.fixture(scope="module")
def slurm_cluster():
    """A single-node SLURM cluster on localhost for this module's tests, stopped (by PID) at the end."""
    if PROBLEM:
        pytest.fail(f"CI must run the SLURM test, but {PROBLEM}")
    cluster = LocalSlurm(cpus=2).start()
    try:
        yield cluster
    finally:
        cluster.stop()


def participant(dataset: Path, out: Path, *options, env: dict | None = None):
    """One subject, one task, one small feature; the plugin runs in each process (no feature cache)."""
    result = run_cli(dataset, out, "participant", "--participant-label", "01", "--task", "faces",
                     "-d", dataset / "derivatives/fmriprep", "--features", "trialtype", "--no-feature-cache",
                     *options, env=env)
    assert result.returncode == 0, result.stderr
    return result


def without_run_settings(sidecar: dict) -> dict:
    """A sidecar without what differs between the two runs by design: the command line and its configuration."""
    provenance = {k: v for k, v in sidecar.get("bids-encoding", {}).items() if k not in ("Command", "Config")}
    return {**sidecar, "bids-encoding": provenance}


def assert_same_derivatives(a: Path, b: Path) -> None:
    files_a = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    files_b = sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    assert any(name.endswith("_statmap.nii.gz") for name in files_a)
    assert any(name.endswith("_stim.tsv.gz") for name in files_a)
    for name in files_a:
        pa, pb = a / name, b / name
        if name.endswith(".nii.gz"):
            ia, ib = nib.load(pa), nib.load(pb)
            assert ia.shape == ib.shape and np.array_equal(ia.affine, ib.affine), name
            np.testing.assert_allclose(ib.get_fdata(), ia.get_fdata(), rtol=1e-6, atol=1e-6, err_msg=name)
        elif name.endswith(".tsv.gz"):  # headerless numbers (BIDS physio-style)
            with gzip.open(pa, "rt") as fa, gzip.open(pb, "rt") as fb:
                np.testing.assert_allclose(np.loadtxt(fb, ndmin=2), np.loadtxt(fa, ndmin=2), rtol=1e-6, atol=1e-9,
                                           err_msg=name)
        elif name.endswith(".json") and name != "dataset_description.json":
            sidecar_a, sidecar_b = json.loads(pa.read_text()), json.loads(pb.read_text())
            assert without_run_settings(sidecar_b) == without_run_settings(sidecar_a), name


@pytest.mark.slow
def test_slurm_plugin_gives_the_derivatives_of_multiproc(slurm_cluster, example_dataset, tmp_path):
    multiproc, slurm = tmp_path / "multiproc", tmp_path / "slurm"
    submitted_before = {job["JobId"] for job in slurm_cluster.jobs()}
    # both at once: the SLURM run mostly waits for its jobs
    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(participant, example_dataset, multiproc, "--n-cpus", "2",
                            "-w", tmp_path / "work-multiproc"),
                pool.submit(participant, example_dataset, slurm, "--nipype-plugin", "SLURM",
                            "--nipype-plugin-args", json.dumps({"sbatch_args": SBATCH_ARGS, "max_jobs": 4}),
                            "-w", tmp_path / "work-slurm", env=slurm_cluster.env)]
        for run in runs:
            run.result()

    jobs = [job for job in slurm_cluster.jobs() if job["JobId"] not in submitted_before]
    assert jobs, "no step was submitted to SLURM"
    assert {job["JobState"] for job in jobs} == {"COMPLETED"}, jobs
    assert any("fit_trialtype" in job["JobName"] for job in jobs), [job["JobName"] for job in jobs]
    assert {(job["Partition"], job["TimeLimit"]) for job in jobs} == {("debug", "00:10:00")}, "sbatch_args unused"
    assert_same_derivatives(multiproc, slurm)
    sidecar = json.loads(next(slurm.rglob("*_stat-rSquare_statmap.json")).read_text())
    assert sidecar["bids-encoding"]["Config"]["nipype_plugin"] == "SLURM"
