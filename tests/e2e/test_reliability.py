"""Runs that are killed, run side by side, repeated, or meet a full or read-only disk.

Every run here is the real CLI in its own process. A killed run is killed with SIGKILL (its whole
process group), so no clean-up code of ours runs: what the output folder holds then is what a power
cut or an out-of-memory kill would leave.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from bids_encoding import features
from bids_encoding.example import write_example_dataset

from ..conftest import run_cli, snapshot

STATE = ".bids-encoding"


# ---------------------------------------------------------------- helpers

def start(args: list, log: Path) -> subprocess.Popen:
    """The real CLI in a new process group (so that a kill reaches Nipype's workers too), logging to ``log``."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    with open(log, "w") as handle:
        return subprocess.Popen([sys.executable, "-m", "bids_encoding", *map(str, args)], stdout=handle,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)


def kill_when(process: subprocess.Popen, reached, what: str, timeout: float = 300) -> None:
    """SIGKILL the run's process group as soon as ``reached()`` is true (polled every 5 ms)."""
    deadline = time.monotonic() + timeout
    while not reached():
        assert process.poll() is None, f"the run ended (status {process.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.005)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:  # it had just finished
        pass
    process.wait()


def outputs(root: Path) -> dict[str, bytes]:
    """Every derivative under ``root`` (not the app's own state folder), with its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and STATE not in p.relative_to(root).parts}


def assert_complete(path: Path) -> None:
    """The file reads to its end as what its name says it is."""
    name = path.name
    if name.endswith((".nii.gz", ".nii")):
        np.asarray(nib.load(path).dataobj)
    elif name.endswith(".json"):
        json.loads(path.read_text())
    elif name.endswith(".tsv.gz"):
        np.loadtxt(gzip.open(path, "rt"), delimiter="\t", ndmin=2)
    elif name.endswith(".tsv"):
        lines = path.read_text().splitlines()
        assert lines and path.read_text().endswith("\n") and len({len(l.split("\t")) for l in lines}) == 1
    elif name.endswith(".png"):
        Image.open(path).load()
    elif name.endswith(".html"):
        assert path.read_text().rstrip().endswith("</html>")
    elif name == ".bidsignore":
        assert path.read_text().endswith("\n")
    else:
        raise AssertionError(f"no check for {name}: add one")


def assert_whole_files_only(out: Path, reference: dict[str, bytes]) -> int:
    """Every file in the output folder is complete and equal to the uninterrupted run's; returns how many there are."""
    found = outputs(out)
    for relative, content in found.items():
        assert_complete(out / relative)
        assert relative in reference, f"{relative} is not an output of the uninterrupted run"
        assert content == reference[relative], f"{relative} differs from the uninterrupted run's"
    assert not [p for p in out.rglob("*.tmp") if STATE not in p.parts], "a temporary file under a derivative name"
    return len(found)


def mtimes(paths) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in paths}


def stages(out: Path) -> list[Path]:
    return [p for p in out.glob(f"{STATE}/staging-*") if p.is_dir()]


def cache_entries(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*.npz") if ".tmp" not in p.name]


def sidecars(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.json") if p.name != "dataset_description.json" and STATE not in p.parts]


# ---------------------------------------------------------------- killed and rerun

@pytest.mark.slow
def test_a_run_killed_at_any_step_leaves_whole_files_and_its_rerun_finishes_the_same(small_dataset, tmp_path):
    """Three kill points in a row (feature extraction, fitting, writing derivatives), each rerun of the same
    command reusing what the killed ones finished; the last rerun's derivatives are byte-identical to an
    uninterrupted run's, and so are those of a rerun from the feature cache alone. (A commit takes a few
    milliseconds, too short to hit from here: the next test kills one halfway.)"""
    out, work, cache = tmp_path / "out", tmp_path / "work", tmp_path / "cache"
    command = [small_dataset, out, "participant", "-d", small_dataset / "derivatives/fmriprep",
               "--features", "wordrate", "trialtype", "-w", work, "--feature-cache", cache, "--skip-bids-validation"]
    nodes = work / "bids_encoding_wf" / "sub_01_wf"

    first = run_cli(*command)  # the uninterrupted run, in the same folders (the command is in every sidecar)
    assert first.returncode == 0, first.stderr
    reference = outputs(out)
    assert len(reference) > 30
    for sidecar in sidecars(out):
        assert json.loads(sidecar.read_text())["bids-encoding"]["Seed"] == 0, sidecar.name
    shutil.rmtree(out), shutil.rmtree(work), shutil.rmtree(cache)

    def staged_files():
        return [p for p in out.glob(f"{STATE}/staging-*/sub-01/*/*") if p.is_file()]

    kill_points = {
        "feature extraction": lambda: any(nodes.glob("*/extract_*")),
        "fitting": lambda: any(nodes.glob("*/fit_*/_0x*_unfinished.json")),
        "writing derivatives": lambda: bool(staged_files()),
    }
    finished: dict[Path, int] = {}
    for number, (step, reached) in enumerate(kill_points.items(), start=1):
        run = start(command, tmp_path / f"kill{number}.log")
        kill_when(run, reached, step)
        n_files = assert_whole_files_only(out, reference)
        print(f"killed during {step}: {n_files} of {len(reference)} derivatives in place")
        if step == "feature extraction":
            assert stages(out), "the killed run's staging folder is there to be swept"
        if step == "fitting":  # extraction of the task being fitted is done: its results must be reused
            extracted = list(nodes.glob("*/extract_*/**/result_*.pklz"))
            assert extracted
            finished.update(mtimes(extracted + cache_entries(cache)))
        if step == "writing derivatives":
            finished.update(mtimes(nodes.glob("*/fit_*/result_fit_*.pklz")))
    assert any("fit_" in p.name for p in finished) and any(p.suffix == ".npz" for p in finished)

    rerun = run_cli(*command)
    assert rerun.returncode == 0, rerun.stderr
    assert outputs(out) == reference, "the rerun's derivatives differ from the uninterrupted run's"
    assert mtimes(finished) == finished, "the rerun redid finished work"
    assert list((out / STATE).iterdir()) == [], "a staging folder or lock was left behind"
    for entry in cache_entries(cache):  # (a killed cache write may leave a temporary file, never an entry)
        features.load(entry)

    shutil.rmtree(work)  # the same command once more, with only the feature cache left
    from_cache = run_cli(*command)
    assert from_cache.returncode == 0, from_cache.stderr
    # 3 lpp runs (wordrate) + 2 faces runs and the blocks run (trialtype)
    assert from_cache.stderr.count("from the cache") == 6
    assert outputs(out) == reference


STAGE_THEN_COMMIT = """
import json, sys, time
from pathlib import Path
from bids_encoding.derivatives import staging

out, n_files, hold = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
with staging(out) as stage:
    (stage / "sub-01" / "func").mkdir(parents=True)
    for i in range(n_files):
        (stage / "sub-01" / "func" / f"sub-01_desc-{i}_x.json").write_text(json.dumps({"index": i, "padding": "x" * 500}))
    print("staged", flush=True)
    time.sleep(hold)
"""


def stage_in_another_process(out: Path, n_files: int, hold: float) -> subprocess.Popen:
    """A real run's staging and commit, in a process of its own, once it has staged ``n_files`` files."""
    process = subprocess.Popen([sys.executable, "-c", STAGE_THEN_COMMIT, str(out), str(n_files), str(hold)],
                               stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert process.stdout.readline().strip() == "staged"
    return process


def test_a_commit_killed_halfway_leaves_whole_files_and_the_next_run_sweeps_its_stage(tmp_path):
    out = tmp_path / "out"
    committing = stage_in_another_process(out, 2000, hold=0)
    kill_when(committing, lambda: (out / "sub-01").exists(), "the commit")
    moved = sorted((out / "sub-01" / "func").iterdir())
    (stage,) = stages(out)
    print(f"commit killed after {len(moved)} of 2000 files")
    assert 0 < len(moved) < 2000, "the kill did not land during the commit"
    for path in moved:
        index = int(path.name.split("-")[2].split("_")[0])
        assert json.loads(path.read_text()) == {"index": index, "padding": "x" * 500}
    assert len(list(stage.rglob("*.json"))) == 2000 - len(moved)  # the rest is still staged, not lost halfway

    from bids_encoding.derivatives import staging

    with staging(out):  # the next run
        assert not stage.exists(), "the killed run's stage was not swept"
    assert list((out / STATE).iterdir()) == []


def test_a_living_run_s_stage_is_never_swept(tmp_path):
    out = tmp_path / "out"
    living = stage_in_another_process(out, 1, hold=60)
    try:
        (stage,) = stages(out)
        from bids_encoding.derivatives import staging

        with staging(out) as mine:
            assert stage.exists() and mine != stage
        assert stage.exists() and (stage / "sub-01").exists(), "a parallel run's stage was removed"
    finally:
        os.killpg(living.pid, signal.SIGKILL)
        living.wait()
    with staging(out):
        assert not stage.exists()


def test_a_second_run_keeps_the_dataset_links_its_predecessors_sidecars_use(tmp_path):
    """Runs with and without --derivatives share an output folder: ``bids:deriv0:...`` in the first run's
    sidecars must still resolve after the second run's commit."""
    from bids_encoding.derivatives import dataset_description, dataset_links, staging, write_json

    out, bids, fmriprep = tmp_path / "out", tmp_path / "bids", tmp_path / "bids/derivatives/fmriprep"
    for links in (dataset_links(bids, (fmriprep,)), dataset_links(bids)):
        with staging(out) as stage:
            write_json(stage / "dataset_description.json", dataset_description(bids, {"Name": "x"}, links))
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetLinks"] == {"raw": bids.resolve().as_uri(), "deriv0": fmriprep.resolve().as_uri()}
    assert description["SourceDatasets"] == [{"URL": bids.resolve().as_uri()}]


# ---------------------------------------------------------------- side by side

@pytest.fixture(scope="module")
def four_subjects(tmp_path_factory) -> Path:
    return write_example_dataset(tmp_path_factory.mktemp("four") / "bids", n_subjects=4, eeg=False)


@pytest.mark.slow
def test_four_jobs_share_one_output_work_dir_and_feature_cache(four_subjects, tmp_path):
    out, work, cache = tmp_path / "out", tmp_path / "work", tmp_path / "cache"

    def command(subject):
        return [four_subjects, out, "participant", "--participant-label", subject, "--task", "lpp",
                "-d", four_subjects / "derivatives/fmriprep", "--features", "wordrate", "-w", work,
                "--feature-cache", cache, "--skip-bids-validation"]

    alone = run_cli(*command("01"))  # a single job, in the same folders (the command is in every sidecar)
    assert alone.returncode == 0, alone.stderr
    reference = outputs(out)
    shutil.rmtree(out), shutil.rmtree(work), shutil.rmtree(cache)

    subjects = ["01", "02", "03", "04"]
    jobs = [start(command(s), tmp_path / f"sub-{s}.log") for s in subjects]
    for subject, job in zip(subjects, jobs):
        assert job.wait(timeout=600) == 0, (tmp_path / f"sub-{subject}.log").read_text()[-3000:]

    found = outputs(out)
    for subject in subjects:
        expected = {name.replace("sub-01", f"sub-{subject}") for name in reference}
        assert {n for n in found if f"sub-{subject}" in n} == expected - {"dataset_description.json", ".bidsignore"}
    assert {n: c for n, c in found.items() if n in reference} == reference
    for relative in found:
        assert_complete(out / relative)
    assert json.loads((out / "dataset_description.json").read_text())["DatasetType"] == "derivative"
    entries = cache_entries(cache)
    assert len(entries) == 3, entries  # the same story for everyone: four jobs wrote each entry
    for entry in entries:
        features.load(entry)
    assert not [p for p in cache.rglob("*") if ".tmp" in p.name], "a temporary file was left in the cache"
    assert list((out / STATE).iterdir()) == []


# ---------------------------------------------------------------- determinism

def add_coin_flips(dataset: Path) -> None:
    """A ``coin`` column in every faces events file: heads or tails, balanced within each run and unrelated to
    the stimuli, so decoding it is at chance and its permutation p-value depends on the permutations drawn."""
    import pandas as pd

    rng = np.random.default_rng(0)
    for events_file in sorted(dataset.glob("sub-01/func/*task-faces*_events.tsv")):
        events = pd.read_csv(events_file, sep="\t")
        events["coin"] = rng.permutation(np.resize(["heads", "tails"], len(events)))
        events.to_csv(events_file, sep="\t", index=False)


@pytest.mark.slow
def test_the_same_seed_gives_identical_files_and_another_seed_other_permutations(broken_dataset, tmp_path):
    """Decoding with permutations (and a searchlight) twice from scratch: byte-identical derivatives; with
    another --seed, another permutation p-value and the same cross-validated scores. Every sidecar records
    the seed. (Encoding runs from scratch are compared byte for byte in the kill test above; embeddings in
    test_embedding_end_to_end.)"""
    add_coin_flips(broken_dataset)
    out, work, cache = tmp_path / "out", tmp_path / "work", tmp_path / "cache"

    def decode(seed):
        for folder in (out, work, cache):
            shutil.rmtree(folder, ignore_errors=True)
        result = run_cli(broken_dataset, out, "participant", "-d", broken_dataset / "derivatives/fmriprep",
                         "--analysis", "decoding", "--decode", "coin=heads,tails", "--task", "faces",
                         "--n-permutations", "50", "--seed", seed, "-w", work, "--feature-cache", cache,
                         "--skip-bids-validation")
        assert result.returncode == 0, result.stderr
        for sidecar in sidecars(out):
            assert json.loads(sidecar.read_text())["bids-encoding"]["Seed"] == seed, sidecar.name
        table = next(out.rglob("*_decoding.tsv")).read_text().splitlines()
        return outputs(out), dict(zip(table[0].split("\t"), table[1].split("\t")))

    first, first_row = decode(0)
    again, _ = decode(0)
    assert len(first) >= 6 and again == first
    _, other_row = decode(1)
    assert float(first_row["p_value"]) > 0.05, "coin flips were decoded"
    assert other_row["balanced_accuracy"] == first_row["balanced_accuracy"]  # the seed only moves the permutations
    assert other_row["p_value"] != first_row["p_value"]


# ---------------------------------------------------------------- full or read-only disks

@contextmanager
def mounted_tmpfs(path: Path, size: str, read_only: bool = False):
    """A real small (or read-only) file system at ``path``, for root; skipped where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                           text=True)
    if mount.returncode:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI runs as root and must be able to mount a tmpfs: {mount.stderr}")
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mount.stderr.strip()}")
    try:
        (path / "earlier.txt").write_text("a file from before the run\n")
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def fails_cleanly(result: subprocess.CompletedProcess, problem: str, folder: Path) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith(f"bids-encoding: error: {folder}: ") and problem in message, message


@pytest.mark.slow
@pytest.mark.parametrize("where", ["output folder", "its parent"])
def test_a_read_only_output_folder_is_a_clear_error(small_dataset, tmp_path, where):
    with mounted_tmpfs(tmp_path / "ro", "64k", read_only=True) as ro:
        out = ro if where == "output folder" else ro / "out"
        before = snapshot(ro)
        result = run_cli(small_dataset, out, "participant", "--features", "wordrate", "--task", "lpp",
                         "--skip-bids-validation", "-w", tmp_path / "work")
        fails_cleanly(result, "read-only file system", ro)
        assert snapshot(ro) == before
    assert not (tmp_path / "work").exists(), "the failed run left its work folder behind"


@pytest.mark.slow
@pytest.mark.parametrize("full", ["output", "work"])
def test_a_full_disk_is_a_clear_error_and_leaves_the_output_folder_as_it_was(small_dataset, tmp_path, full):
    """The derivatives (or Nipype's work folder) do not fit on a 100 kB disk: the message names that folder."""
    disk = tmp_path / "disk"
    out = disk if full == "output" else tmp_path / "out"
    work = disk / "work" if full == "work" else tmp_path / "work"
    with mounted_tmpfs(disk, "100k"):
        before = snapshot(disk)
        result = run_cli(small_dataset, out, "participant", "-d", small_dataset / "derivatives/fmriprep",
                         "--features", "wordrate", "--task", "lpp", "-w", work, "--feature-cache", tmp_path / "cache",
                         "--skip-bids-validation")
        fails_cleanly(result, "no space left on device", out if full == "output" else work)
        if full == "output":
            assert snapshot(disk) == before, "the output folder changed"
    if full == "work":
        assert not out.exists(), "the failed run left an output folder behind"
