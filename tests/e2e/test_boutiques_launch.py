"""boutiques.json runs the app: ``bosh validate``, then ``bosh exec launch --no-container`` of an invocation on
the example dataset (participant level, one subject, one small feature), and the derivatives it wrote.

The descriptor's agreement with the parser, option by option, is tested in test_boutiques.py; this test
only checks that a platform reading the descriptor gets a working run.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from ..conftest import snapshot
from ..unit.test_cli_descriptor import DESCRIPTOR_PATH, bosh

SPACE = "MNI152NLin2009cAsym"


@pytest.mark.slow
def test_bosh_launch_without_container_writes_the_derivatives(example_dataset, tmp_path, monkeypatch):
    # bosh runs the descriptor's command line through the shell: bids-encoding must be on PATH, as in the image
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    validated = bosh("validate", DESCRIPTOR_PATH, home=tmp_path)
    assert validated.returncode == 0 and "OK" in validated.stdout, validated.stdout + validated.stderr

    out = tmp_path / "derivatives"
    invocation = tmp_path / "invocation.json"
    invocation.write_text(json.dumps({
        "bids_dir": str(example_dataset), "output_dir": str(out), "analysis_level": "participant",
        "participant_label": ["01"], "task": ["faces"], "features": ["trialtype"],
        "derivatives": [str(example_dataset / "derivatives" / "fmriprep")],
    }))
    before = snapshot(example_dataset)
    launched = bosh("exec", "launch", "--no-container", "--skip-data-collection", DESCRIPTOR_PATH, invocation,
                    home=tmp_path)
    report = launched.stdout + launched.stderr
    assert launched.returncode == 0, report
    lines = launched.stdout.splitlines()
    assert lines[lines.index("Exit code") + 1] == "0", report
    command = lines[lines.index("Shell command") + 1]
    assert command.startswith("bids-encoding ") and "--participant-label 01" in command
    assert snapshot(example_dataset) == before, "the input dataset was written to"

    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and description["GeneratedBy"][0]["Name"] == "bids-encoding"
    assert sorted(p.name for p in out.glob("sub-*")) == ["sub-01", "sub-01.html"]
    statmap = out / f"sub-01/func/sub-01_task-faces_space-{SPACE}_desc-trialtype_stat-rSquare_statmap.nii.gz"
    mask = out / f"sub-01/func/sub-01_task-faces_space-{SPACE}_desc-brain_mask.nii.gz"
    r2, inside = nib.load(statmap).get_fdata(), nib.load(mask).get_fdata() > 0
    assert r2.shape == inside.shape and inside.any() and np.isfinite(r2[inside]).all() and r2[inside].max() > 0
    sidecar = json.loads(Path(str(statmap).replace(".nii.gz", ".json")).read_text())
    assert sidecar["Features"]["Plugin"]["Name"] == "trialtype"
    # the app ran with exactly the command line bosh built from the descriptor
    assert shlex.split(sidecar["bids-encoding"]["Command"]) == shlex.split(command)
