"""A third party's plugin, installed for real, runs through the unchanged CLI.

``plugins/template`` is built and installed without network (``--no-deps --no-build-isolation
--no-index``) into a temporary ``--target`` folder that only these tests put on ``PYTHONPATH``; the
program then finds it through its ``bids_encoding`` entry point, as it finds any installed plugin.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import run_cli

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "plugins" / "template"
# its distribution name and version, as its pyproject.toml declares them
PROJECT = dict(re.findall(r'^(name|version) = "([^"]+)"', (TEMPLATE / "pyproject.toml").read_text(), re.M))
SPACE = "MNI152NLin2009cAsym"


def install_template(target: Path) -> Path:
    """pip-install a copy of plugins/template into ``target`` (offline); returns ``target``.

    A copy, so that the build's ``build/`` and ``*.egg-info`` never land in the source tree and two
    tests building at once do not share them.
    """
    source = Path(shutil.copytree(TEMPLATE, target.parent / "template-src",
                                  ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(target), str(source)], check=True, capture_output=True)
    return target


@pytest.fixture(scope="module")
def template_env(tmp_path_factory) -> dict[str, str]:
    """The environment of a user who has installed the template plugin."""
    target = install_template(tmp_path_factory.mktemp("template-plugin") / "site")
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")]))}


@pytest.mark.slow
def test_the_cli_lists_the_installed_template(template_env):
    result = run_cli("plugins", "--json", env=template_env)
    assert result.returncode == 0, result.stderr
    listed = {p["name"]: p for p in json.loads(result.stdout)}
    assert listed["vowelcount"]["distribution"] == PROJECT["name"]
    assert listed["vowelcount"]["version"] == PROJECT["version"]
    assert listed["vowelcount"]["modality"] == "text" and "vowels" in listed["vowelcount"]["options"]


@pytest.mark.slow
def test_the_unchanged_cli_runs_the_installed_template(template_env, example_dataset, tmp_path):
    out = tmp_path / "out"
    result = run_cli(example_dataset, out, "participant", "--participant-label", "01", "--task", "lpp",
                     "-d", example_dataset / "derivatives/fmriprep", "--features", "vowelcount:vowels=aeiouy",
                     "-w", tmp_path / "work", env=template_env)
    assert result.returncode == 0, result.stderr
    func = out / "sub-01/func"
    statmap = func / f"sub-01_task-lpp_space-{SPACE}_desc-vowelcount_stat-rSquare_statmap.nii.gz"
    assert statmap.exists()
    sidecar = json.loads(statmap.with_name(statmap.name.replace(".nii.gz", ".json")).read_text())
    assert sidecar["Features"]["Plugin"] == {"Name": "vowelcount", "Distribution": PROJECT["name"],
                                             "Version": PROJECT["version"]}
    assert sidecar["Features"]["Options"] == {"vowels": "aeiouy"}
    stim = json.loads((func / "sub-01_task-lpp_run-1_recording-vowelcount_stim.json").read_text())
    assert stim["Columns"] == ["vowels", "consonants"]
    assert stim["Features"]["Plugin"]["Distribution"] == PROJECT["name"]


@pytest.mark.slow
def test_the_templates_own_tests_pass_once_it_is_installed(template_env):
    """The template's tests are what a plugin author copies; the main run leaves them out (pyproject's
    ``--ignore``) because the template is installed only here, where none of them may skip."""
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                             str(TEMPLATE / "tests")], capture_output=True, text=True,
                            env={**os.environ, **template_env, "HF_HUB_OFFLINE": "1"}, cwd=TEMPLATE, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b3 passed\b", result.stdout) and "skipped" not in result.stdout, result.stdout
