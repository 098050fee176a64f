"""The container, for real: docker/Dockerfile built with buildah (docker/buildah-build.sh: chroot isolation,
on a stand-in base image made from Debian packages when the real base cannot be pulled) and run the way a
cluster runs it: as a user id the image does not know, the dataset mounted read only at /data.

One image is built for the module (a few minutes) and one working container runs every command in it.
The example dataset goes through the participant and group levels inside the image and, with the same
options, on this machine: the derivatives are the same files, the TSVs byte for byte, the statistical
maps within float tolerance. The lock governs the image: its Python environment holds exactly the lock's
pins and the app. `bosh exec launch` runs boutiques.json in the image (docker's command line played by
buildah). Faults (a read-only /out, a /data that is not a BIDS dataset, an /out the user may not write)
end in the app's usual one-paragraph errors.

Needs buildah, run as root (and mmdebstrap when the base must be stood in for): skipped with the reason
on a machine without them, failed under CI=true, where .ci/run installs them. For repeated local runs,
BIDS_ENCODING_TEST_IMAGE=NAME uses an image already built instead of building one (refused under CI=true).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_encoding import __version__
from bids_encoding.example import atlas_path

from ..conftest import run_cli, snapshot

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("container")]

ROOT = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI") == "true"
USER = "4242:4242"  # a uid and gid the image has no entry for, as `docker run --user` or apptainer give
FEATURES = ("wordrate", "trialtype")  # cheap ones: the point is the container, not the models
TIMES: dict[str, float] = {}


def require_buildah() -> None:
    problems = []
    if not shutil.which("buildah"):
        problems.append("buildah is not installed (Debian: apt-get install buildah mmdebstrap uidmap)")
    elif os.geteuid() != 0:
        problems.append("buildah's chroot isolation needs root")
    if problems:
        message = "the container test builds docker/Dockerfile with buildah: " + "; ".join(problems)
        if IN_CI:
            pytest.fail(message + " (.ci/run installs buildah, mmdebstrap and uidmap)")
        pytest.skip(message)


def report_times(config) -> None:
    """What the module measured, on the terminal (an xdist worker's terminal is not shown: -p no:xdist)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not TIMES:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("\ncontainer: " + ", ".join(f"{k} {v:.1f} s" for k, v in TIMES.items()))


def tail(result: subprocess.CompletedProcess, n: int = 4000) -> str:
    return (result.stdout[-n:] + "\n--- stderr ---\n" + result.stderr[-n:])


@pytest.fixture(scope="module")
def image(request) -> str:
    require_buildah()
    request.addfinalizer(lambda: report_times(request.config))
    given = os.environ.get("BIDS_ENCODING_TEST_IMAGE")
    if given:
        assert not IN_CI, "BIDS_ENCODING_TEST_IMAGE skips the build: never under CI=true"
        yield given
        return
    tag = f"localhost/bids-encoding-test:{os.getpid()}"
    started = time.monotonic()
    result = subprocess.run(["bash", str(ROOT / "docker" / "buildah-build.sh"), tag], capture_output=True,
                            text=True, timeout=3000)
    TIMES["build"] = time.monotonic() - started
    assert result.returncode == 0, "docker/buildah-build.sh failed:\n" + tail(result)
    yield tag
    subprocess.run(["buildah", "rmi", "--force", tag], capture_output=True)


@pytest.fixture(scope="module")
def container(image) -> str:
    result = subprocess.run(["buildah", "from", "--pull-never", image], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    name = result.stdout.strip()
    yield name
    subprocess.run(["buildah", "rm", name], capture_output=True)


def run_in_image(container: str, *args, volumes=(), user: str = USER, timeout: int = 900) -> subprocess.CompletedProcess:
    """The command inside the image (its environment, working directory and PATH), as `user`, with the
    (host, target, "ro" or "rw") volumes mounted; OpenBLAS's settings of this machine, if any, go along."""
    command = ["buildah", "run", "--isolation", "chroot", "--user", user]
    for host, target, mode in volumes:
        command += ["--volume", f"{host}:{target}:{mode}"]
    for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if name in os.environ:
            command += ["--env", f"{name}={os.environ[name]}"]
    result = subprocess.run([*command, container, "--", *map(str, args)], capture_output=True, text=True, timeout=timeout)
    # buildah's own lines after a command that failed (`docker run` and apptainer add none)
    result.stderr = re.sub(r"(\n(subprocess exited with status \d+|Error: exit status \d+))+\n?$", "\n", result.stderr)
    return result


def writable_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    path.chmod(0o777)  # for the image's unknown uid
    return path


def one_paragraph_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, tail(result)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("bids-encoding: error: "), result.stderr
    assert sum(line.startswith("bids-encoding: error") for line in lines) == 1, result.stderr
    return lines[-1]


def lock_pins() -> dict[str, str]:
    text = (ROOT / "docker" / "requirements.lock").read_text()
    return {canonical(name): version for name, version in re.findall(r"^([A-Za-z0-9][\w.-]*)==(\S+)", text, re.M)}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# --- the image as built -----------------------------------------------------------------------------

def test_image_config_entrypoint_user_labels(image):
    result = subprocess.run(["buildah", "inspect", "--type", "image", image], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)["OCIv1"]["config"]
    assert config["Entrypoint"] == ["bids-encoding"] and config["User"] == "1000:1000"
    assert config["WorkingDir"] == "/work"
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["HF_HUB_OFFLINE"] == "1" and env["BIDS_ENCODING_CONTAINER"] == f"bidsencoding/bids-encoding:{__version__}"
    assert config["Labels"]["org.opencontainers.image.version"] == __version__


def test_version_and_plugins_as_an_unknown_uid(container):
    started = time.monotonic()
    result = run_in_image(container, "bids-encoding", "--version")
    TIMES["--version"] = time.monotonic() - started
    assert result.returncode == 0, tail(result)
    assert result.stdout.strip() == f"bids-encoding {__version__}"

    result = run_in_image(container, "bids-encoding", "plugins")
    assert result.returncode == 0, tail(result)
    for name in ("wordrate", "wordlength", "trialtype", "glove", "minilm", "sae"):
        assert re.search(rf"^{name}\s", result.stdout, re.M), f"{name} is not listed:\n{result.stdout}"
    listed = json.loads(run_in_image(container, "bids-encoding", "plugins", "--json").stdout)
    makefile = (ROOT / "Makefile").read_text()
    built_in = re.search(r"^PLUGINS\s*:=\s*(.+)$", makefile, re.M)[1].split()
    assert {row["distribution"] for row in listed} == {"bids-encoding"} | {f"bids-encoding-{Path(p).name}" for p in built_in}


def test_the_image_python_holds_exactly_the_lock_and_the_app(container):
    script = ("import importlib.metadata as m, json, sys; print(json.dumps([sys.prefix] + "
              "[[d.metadata['Name'], d.version] for d in m.distributions()]))")
    result = run_in_image(container, "python", "-c", script)
    assert result.returncode == 0, tail(result)
    prefix, *installed = json.loads(result.stdout)
    assert prefix == "/opt/bids-encoding", "bids-encoding runs from the image's venv"
    found = {canonical(name): version for name, version in installed}
    assert len(found) == len(installed), f"a package is installed twice: {sorted(installed)}"
    app = {name for name in found if name == "bids-encoding" or name.startswith("bids-encoding-")}
    assert all(found[name] == __version__ or name != "bids-encoding" for name in app)
    pins = lock_pins()
    others = {name: version for name, version in found.items() if name not in app}
    assert others == pins, (f"not in the lock: {sorted(set(others) - set(pins))}; "
                            f"missing: {sorted(set(pins) - set(others))}; "
                            f"other versions: {sorted(n for n in set(pins) & set(others) if pins[n] != others[n])}")
    assert "pip" not in found and not any(n.startswith(("nvidia-", "triton")) for n in found)


# --- the example dataset, inside and outside -----------------------------------------------------------

def app_args(bids: Path, out: Path, work: Path, level: str) -> list[str]:
    """The demo's options (see cli.run_demo) with cheap features: the same for the image and this machine."""
    args = [bids, out, level, "--derivatives", bids / "derivatives" / "fmriprep", "--features", *FEATURES,
            "--n-cpus", "2", "--work-dir", work]
    if level == "participant":
        args += ["--atlas", atlas_path(bids)]
    return [str(a) for a in args]


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def pop_versions(document) -> list[dict]:
    """Remove and return every "SoftwareVersions" of a sidecar's provenance (the environment it ran in)."""
    found = []
    if isinstance(document, dict):
        if isinstance(document.get("SoftwareVersions"), dict):
            found.append(document.pop("SoftwareVersions"))
        for value in document.values():
            found += pop_versions(value)
    elif isinstance(document, list):
        for value in document:
            found += pop_versions(value)
    return found


def same_json(host: Path, image: Path, paths: dict[str, str]) -> None:
    """Equal once the host's folders are written as the image's (a path names where it ran), but for the
    provenance's software versions: the image's must be the lock's, this machine's are its own."""
    text = host.read_text()
    for outside, inside in paths.items():
        text = text.replace(outside, inside)
    expected, got = json.loads(text), json.loads(image.read_text())
    pop_versions(expected)
    pins = lock_pins()
    for versions in pop_versions(got):
        assert versions.pop("bids-encoding") == __version__ and versions.pop("python").startswith("3.11."), image
        assert versions == {name: pins[canonical(name)] for name in versions}, f"{image}: not the lock's versions"
    if image.name == "dataset_description.json":  # the image names itself in the provenance, as it should
        container = got["GeneratedBy"][0].pop("Container")
        assert container == {"Type": "docker", "Tag": f"bidsencoding/bids-encoding:{__version__}"}
    assert got == expected, image


def test_example_through_both_levels_equals_the_same_run_on_this_machine(container, three_subject_dataset, tmp_path):
    example_dataset = three_subject_dataset  # the group level needs three subjects
    out, work = writable_folder(tmp_path / "out-image"), writable_folder(tmp_path / "work-image")
    volumes = [(example_dataset, "/data", "ro"), (out, "/out", "rw"), (work, "/work", "rw")]
    before = snapshot(example_dataset)
    started = time.monotonic()
    for level in ("participant", "group"):
        result = run_in_image(container, "bids-encoding", *app_args(Path("/data"), Path("/out"), Path("/work"), level),
                              volumes=volumes)
        assert result.returncode == 0, f"{level} level in the image:\n" + tail(result)
    TIMES["example, both levels, in the image"] = time.monotonic() - started
    assert snapshot(example_dataset) == before, "the image wrote into the read-only dataset"
    assert {p.name for p in out.glob("*.html")} == {"sub-01.html", "sub-02.html", "sub-03.html", "group.html"}
    assert all(p.stat().st_uid == 4242 for p in out.rglob("*")), "outputs belong to the user who ran the image"

    host_out, host_work = tmp_path / "out-host", tmp_path / "work-host"
    for level in ("participant", "group"):
        result = run_cli(*app_args(example_dataset, host_out, host_work, level))
        assert result.returncode == 0, f"{level} level on this machine:\n" + tail(result)

    assert files(out) == files(host_out)
    paths = {str(example_dataset): "/data", str(host_out): "/out", str(host_work): "/work",
             # the default feature cache of each (tests/conftest.py gives this machine's runs a temporary one)
             os.environ["BIDS_ENCODING_CACHE"]: "/home/bidsapp/.cache/bids-encoding/features"}
    # where this machine's environment differs from the image's, name it in a failure (make setup vs the lock)
    sample = next(rel for rel in files(host_out) if rel.endswith("_regions.json"))
    host_versions, image_versions = (pop_versions(json.loads((root / sample).read_text()))[0] for root in (host_out, out))
    differ = {k: (host_versions.get(k), v) for k, v in image_versions.items() if host_versions.get(k) != v}
    hint = f" (this machine's versions vs the image's: {differ})" if differ else ""
    compared = {"tsv": 0, "nii": 0, "json": 0}
    for rel in files(host_out):
        host, inside = host_out / rel, out / rel
        if rel.endswith(".tsv"):
            assert inside.read_bytes() == host.read_bytes(), rel + hint
            compared["tsv"] += 1
        elif rel.endswith(".tsv.gz"):
            assert gzip.decompress(inside.read_bytes()) == gzip.decompress(host.read_bytes()), rel + hint
            compared["tsv"] += 1
        elif rel.endswith(".nii.gz"):
            a, b = nib.load(host), nib.load(inside)
            assert a.shape == b.shape and np.array_equal(a.affine, b.affine), rel
            np.testing.assert_allclose(np.asanyarray(b.dataobj), np.asanyarray(a.dataobj), rtol=1e-5, atol=1e-6,
                                       err_msg=rel + hint)
            compared["nii"] += 1
        elif rel.endswith(".json"):
            same_json(host, inside, paths)
            compared["json"] += 1
    assert compared["tsv"] >= 10 and compared["nii"] >= 20 and compared["json"] >= 20, compared


# --- Boutiques: bosh exec launch with the descriptor's container ------------------------------------

# docker's command line, as far as bosh uses it (`docker --version`, `docker pull`, `docker run` with
# --entrypoint, -u, -v, -w, -e), played by buildah: no Docker engine runs here. The descriptor's image
# name stands for the image this module built.
DOCKER_SHIM = r"""#!/usr/bin/env bash
set -euo pipefail
case "${1:-}" in
    --version) echo "docker played by buildah for tests/e2e/test_container.py"; exit 0 ;;
    pull) exit 1 ;;  # no registry: bosh goes on with the local image
    run) shift ;;
    *) echo "docker shim: unsupported: $*" >&2; exit 2 ;;
esac
options=()
entrypoint=()
while [ $# -gt 0 ]; do
    case "$1" in
        --rm|--pull=*) ;;
        --entrypoint=*) entrypoint=("${1#--entrypoint=}") ;;
        -u|--user) options+=(--user "$2"); shift ;;
        -v|--volume) options+=(--volume "$2"); shift ;;
        -w|--workdir) options+=(--workingdir "$2"); shift ;;
        -e|--env) options+=(--env "$2"); shift ;;
        -*) echo "docker shim: unsupported option $1" >&2; exit 2 ;;
        *) break ;;
    esac
    shift
done
image=$1; shift
[ "$image" = "$SHIM_DESCRIPTOR_IMAGE" ] && image=$SHIM_BUILT_IMAGE
container=$(buildah from --pull-never "$image")
trap 'buildah rm "$container" >/dev/null' EXIT
buildah run --isolation chroot "${options[@]}" "$container" -- "${entrypoint[@]}" "$@"
"""


def test_bosh_exec_launch_runs_the_descriptor_in_the_image(image, example_dataset, tmp_path):
    descriptor = ROOT / "boutiques.json"
    shim = tmp_path / "bin" / "docker"
    shim.parent.mkdir()
    shim.write_text(DOCKER_SHIM)
    shim.chmod(0o755)
    launch = writable_folder(tmp_path / "launch")  # bosh mounts it as the working folder; the image's uid writes there
    invocation = launch / "invocation.json"
    invocation.write_text(json.dumps({
        "bids_dir": str(example_dataset), "output_dir": "out", "analysis_level": "participant",
        "participant_label": ["01"], "derivatives": [str(example_dataset / "derivatives" / "fmriprep")],
        "features": ["wordrate"]}))
    bosh = Path(sys.executable).parent / "bosh"
    assert bosh.exists(), "boutiques is a test dependency (pip install -e '.[test]')"
    env = {**os.environ, "PATH": f"{shim.parent}:{os.environ['PATH']}", "HOME": str(tmp_path),
           "SHIM_DESCRIPTOR_IMAGE": json.loads(descriptor.read_text())["container-image"]["image"],
           "SHIM_BUILT_IMAGE": image}
    result = subprocess.run([str(bosh), "exec", "launch", "--skip-data-collection", "--stream", str(descriptor),
                             str(invocation)], cwd=launch, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, tail(result)
    assert "docker run" in result.stdout + result.stderr, "bosh ran the descriptor's container"
    out = launch / "out"
    assert (out / "sub-01.html").exists() and list((out / "sub-01" / "func").glob("*desc-wordrate_stat-rSquare_statmap.nii.gz"))
    assert all(p.stat().st_uid == 1000 for p in out.rglob("*")), "run as the image's user"


# --- faults, as an unknown uid --------------------------------------------------------------------

def test_a_read_only_out_is_the_usual_error(container, example_dataset, tmp_path):
    out, work = writable_folder(tmp_path / "out"), writable_folder(tmp_path / "work")
    result = run_in_image(container, "bids-encoding", "/data", "/out", "participant", "--features", "wordrate",
                          volumes=[(example_dataset, "/data", "ro"), (out, "/out", "ro"), (work, "/work", "rw")])
    error = one_paragraph_error(result)
    assert "/out" in error and "read-only file system" in error, error
    assert not list(out.iterdir())


def test_data_that_is_not_a_bids_dataset_is_the_usual_error(container, tmp_path):
    data, out = tmp_path / "data", writable_folder(tmp_path / "out")
    data.mkdir()
    (data / "notes.txt").write_text("not a BIDS dataset\n")
    result = run_in_image(container, "bids-encoding", "/data", "/out", "participant", "--features", "wordrate",
                          volumes=[(data, "/data", "ro"), (out, "/out", "rw")])
    error = one_paragraph_error(result)
    assert "/data" in error and "not a BIDS dataset" in error, error
    assert not list(out.iterdir())


def test_an_out_the_user_may_not_write_is_the_usual_error(container, example_dataset, tmp_path):
    out = tmp_path / "out"
    out.mkdir(mode=0o755)  # root's, as a colleague's folder would be: the unknown uid may read, not write
    work = writable_folder(tmp_path / "work")
    result = run_in_image(container, "bids-encoding", "/data", "/out", "participant", "--features", "wordrate",
                          volumes=[(example_dataset, "/data", "ro"), (out, "/out", "rw"), (work, "/work", "rw")])
    error = one_paragraph_error(result)
    assert "/out" in error and "permission denied" in error, error
    assert not list(out.iterdir())
