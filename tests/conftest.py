"""Shared fixtures: the built-in example dataset (read-only, written once) and a CLI runner."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from bids_encoding.example import write_example_dataset

SPACE = "MNI152NLin2009cAsym"  # the example dataset's template space
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


def make_read_only(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under root with its size and modification time: equal snapshots mean nothing was written."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.fixture(scope="session", autouse=True)
def feature_cache(tmp_path_factory) -> Path:
    """Tests never write into the user's cache folder: the app's default cache is a temporary one."""
    folder = tmp_path_factory.mktemp("feature-cache")
    os.environ["BIDS_ENCODING_CACHE"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def example_dataset(tmp_path_factory) -> Path:
    """The two-subject example dataset, read-only (root ignores permissions, so tests also compare snapshots)."""
    path = write_example_dataset(tmp_path_factory.mktemp("example") / "bids")
    make_read_only(path)
    return path


@pytest.fixture(scope="session")
def three_subject_dataset(tmp_path_factory) -> Path:
    """The example dataset with three subjects, the group level's minimum, read-only (its sub-01 and sub-02 are
    example_dataset's: the same seed gives the same subjects)."""
    path = write_example_dataset(tmp_path_factory.mktemp("example3") / "bids", n_subjects=3)
    make_read_only(path)
    return path


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> Path:
    """A one-subject example dataset to copy and break."""
    return write_example_dataset(tmp_path_factory.mktemp("small") / "bids", n_subjects=1, seed=1)


@pytest.fixture
def broken_dataset(small_dataset, tmp_path) -> Path:
    """A writable copy of the small dataset, for tests that damage it."""
    return Path(shutil.copytree(small_dataset, tmp_path / "bids"))


def run_cli(*args, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the real program in a new process, as a user would."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", **(env or {})}
    return subprocess.run([sys.executable, "-m", "bids_encoding", *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=timeout)


def statmap(out: Path, subject: str, task: str, desc: str, stat: str = "rSquare") -> Path:
    """A participant statmap of the example (its space) under an output folder."""
    return out / f"sub-{subject}/func/sub-{subject}_task-{task}_space-{SPACE}_desc-{desc}_stat-{stat}_statmap.nii.gz"


def group_level(dataset: Path, participant_out: Path, folder: Path, *options) -> Path:
    """The group level run on a copy of participant outputs (module fixtures stay untouched); the copy's path."""
    out = folder / "out"
    shutil.copytree(participant_out, out)
    result = run_cli(dataset, out, "group", "-w", folder / "work", *options)
    assert result.returncode == 0, result.stderr
    return out


def validator_errors(dataset: Path) -> list[dict]:
    """The errors bids-validator-deno (a test dependency, installed beside this Python) finds in a dataset."""
    import json
    import shutil

    validator = Path(sys.executable).parent / "bids-validator-deno"
    validator = str(validator) if validator.exists() else shutil.which("bids-validator-deno")
    assert validator, "bids-validator-deno is part of the test dependencies"
    result = subprocess.run([validator, "--format", "json", str(dataset)], capture_output=True, text=True)
    return [i for i in json.loads(result.stdout)["issues"]["issues"] if i["severity"] == "error"]


@contextmanager
def registry_with(*extractors: type) -> Iterator[dict]:
    """The installed plugins' registry plus ``extractors``, registered as one in-test plugin (real pluggy hooks)."""
    from bids_encoding.plugin_api import hookimpl
    from bids_encoding.plugins.registry import collect, get_plugin_manager

    class InTest:
        @staticmethod
        @hookimpl
        def register_feature_extractors(register):
            for extractor in extractors:
                register(extractor)

    manager = get_plugin_manager()
    manager.register(InTest, name="in-test")
    try:
        yield collect(manager)
    finally:
        manager.unregister(name="in-test")

