"""Checks that a folder is a BIDS dataset, runs the validator, and indexes it with pybids."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

from bids import BIDSLayout

from ..errors import UserError

log = logging.getLogger("bids_encoding")


def check_dataset(bids_dir: Path) -> dict:
    """Read dataset_description.json, or explain that this is not a BIDS dataset."""
    description = Path(bids_dir) / "dataset_description.json"
    if not description.is_file():
        raise UserError(
            "this folder is not a BIDS dataset: it has no dataset_description.json",
            path=bids_dir,
            fix="Give the root folder of a BIDS dataset (the one holding dataset_description.json and sub-* folders)",
        )
    try:
        data = json.loads(description.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"dataset_description.json is not valid JSON ({exc})", path=description,
                        fix="Repair the file; bids-validator-deno shows what is wrong") from None
    if not isinstance(data, dict) or "Name" not in data or "BIDSVersion" not in data:
        raise UserError("dataset_description.json lacks the required 'Name' or 'BIDSVersion'", path=description,
                        fix="Add both fields, as the BIDS specification requires")
    return data


def dataset_root(path: Path) -> Path | None:
    """The BIDS dataset a file belongs to: its nearest folder upwards that holds a dataset_description.json."""
    for folder in Path(path).resolve().parents:
        if (folder / "dataset_description.json").is_file():
            return folder
    return None


def _validator() -> str | None:
    here = Path(sys.executable).parent / "bids-validator-deno"
    return str(here) if here.exists() else shutil.which("bids-validator-deno")


def validate_dataset(bids_dir: Path) -> None:
    """Run bids-validator-deno (offline) and stop on errors; warnings are logged."""
    validator = _validator()
    if validator is None:
        log.warning("bids-validator-deno is not installed: skipping BIDS validation of %s", bids_dir)
        return
    proc = subprocess.run([validator, "--format", "json", str(bids_dir)], capture_output=True, text=True)
    try:
        issues = json.loads(proc.stdout)["issues"]["issues"]
    except (json.JSONDecodeError, KeyError, TypeError):
        log.warning("bids-validator-deno gave no readable report (exit %s); continuing", proc.returncode)
        return
    errors = [i for i in issues if i.get("severity") == "error"]
    warnings = [i for i in issues if i.get("severity") == "warning"]
    if warnings:
        log.info("bids-validator-deno: %d warning(s), e.g. %s", len(warnings), warnings[0].get("code"))
    if errors:
        shown = "; ".join(f"{e.get('code')} at {e.get('location', '?')}" for e in errors[:5])
        raise UserError(
            f"the BIDS validator found {len(errors)} error(s) in the input dataset: {shown}",
            path=bids_dir,
            fix="Run 'bids-validator-deno DATASET' to see them and fix the dataset, or pass --skip-bids-validation",
        )


def load_layout(bids_dir: Path, derivatives: tuple[Path, ...] = ()) -> BIDSLayout:
    """Index the dataset (and any derivatives) with pybids, never writing into it."""
    for deriv in derivatives:
        if not (Path(deriv) / "dataset_description.json").is_file():
            raise UserError("this derivatives folder has no dataset_description.json", path=deriv,
                            fix="Point --derivatives at the root of a derivatives dataset (e.g. the fMRIPrep output folder)")
    try:
        return BIDSLayout(str(bids_dir), validate=False, derivatives=[str(d) for d in derivatives] or False)
    except Exception as exc:  # pybids raises plain ValueErrors on malformed datasets
        raise UserError(f"pybids could not index the dataset ({exc})", path=bids_dir,
                        fix="Run bids-validator-deno on it and fix what it reports") from None
