"""boutiques.json: valid for bosh, generated from the parser, in agreement with it option by option
(both ways), and the command lines bosh builds from it are ones the parser accepts.

Type mapping checked here (parser action -> Boutiques input):
  store_true, store_false         -> Flag (a store_false flag, e.g. --no-searchlight, turns its option off)
  count (-v/--verbose)            -> Flag: a Boutiques Flag emits '--verbose' once (verbose=1). A Number
                                     would emit '--verbose 2', which a count action rejects, and Boutiques
                                     cannot repeat a flag, so -vv stays a hand-typed debugging option.
  type int                        -> Number with "integer": true
  path types (existing dir/file,
  absolute path, pathlib.Path)    -> File
  anything else                   -> String
  nargs "+"                       -> "list": true
  nargs N (an int)                -> "list": true, "min-list-entries" = "max-list-entries" = N
  a non-None, non-empty default   -> "default-value" (not for Flags: they are off unless given)
bosh is run with HOME set to a temporary folder, so nothing is written under ~/.cache.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from bids_encoding import __version__
from bids_encoding.cli import parser as parser_module
from bids_encoding.cli.descriptor import build_descriptor
from bids_encoding.cli.parser import LEVELS, build_parser, option_dests

ROOT = Path(__file__).resolve().parents[2]
DESCRIPTOR_PATH = ROOT / "boutiques.json"
DESCRIPTOR = json.loads(DESCRIPTOR_PATH.read_text())
INPUTS = {i["id"]: i for i in DESCRIPTOR["inputs"]}
OPTIONS = option_dests()
POSITIONALS = ("bids_dir", "output_dir", "analysis_level")
PATH_TYPES = {parser_module._existing_dir, parser_module._existing_file, parser_module._absolute, Path}
BOSH = Path(sys.executable).parent / "bosh"

def bosh(*args, home: Path) -> subprocess.CompletedProcess:
    assert BOSH.exists(), "boutiques is a test dependency (pip install -e '.[test]')"
    return subprocess.run([str(BOSH), *map(str, args)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")})


def simulate(invocation: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "invocation.json"
    path.write_text(json.dumps(invocation))
    return bosh("exec", "simulate", DESCRIPTOR_PATH, "-i", path, home=tmp_path)


def simulated_command(invocation: dict, tmp_path: Path) -> list[str]:
    """The command line bosh builds for the invocation, split the way a shell splits it."""
    result = simulate(invocation, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("bids-encoding ")]
    assert len(lines) == 1, result.stdout
    return shlex.split(lines[0])


def expected_input(action: argparse.Action) -> dict:
    """The Boutiques fields the parser action implies (type, integer, list, list length, choices, default)."""
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._CountAction)):
        return {"type": "Flag"}
    if action.type in PATH_TYPES:
        expected = {"type": "File"}
    elif action.type in (int, float):
        expected = {"type": "Number", "integer": action.type is int}
    else:
        expected = {"type": "String"}
    if action.nargs in ("+", "*"):
        expected["list"] = True
    elif isinstance(action.nargs, int):
        expected.update({"list": True, "min-list-entries": action.nargs, "max-list-entries": action.nargs})
    if action.choices:
        expected["value-choices"] = list(action.choices)
    if action.default not in (None, "", []):
        expected["default-value"] = action.default
    return expected


def check_input(dest: str) -> None:
    action, entry = OPTIONS[dest], INPUTS[dest]
    long_flags = [s for s in action.option_strings if s.startswith("--")]
    assert entry["command-line-flag"] == long_flags[0], "the parser's first long option string"
    assert entry["optional"] is True and not action.required
    keys = ("type", "integer", "list", "min-list-entries", "max-list-entries", "value-choices", "default-value")
    assert {k: entry[k] for k in keys if k in entry} == expected_input(action)


# --- the file itself ---------------------------------------------------------------------------

def test_descriptor_validates(tmp_path):
    result = bosh("validate", DESCRIPTOR_PATH, home=tmp_path)
    assert result.returncode == 0 and "OK" in result.stdout, result.stdout + result.stderr


def test_descriptor_file_is_the_generated_one():
    assert DESCRIPTOR == build_descriptor(), "regenerate it: python -m bids_encoding.cli.descriptor > boutiques.json"


def test_names_the_tool_version_and_image():
    assert DESCRIPTOR["name"] == "bids-encoding" and DESCRIPTOR["schema-version"] == "0.5"
    assert DESCRIPTOR["tool-version"] == __version__
    assert DESCRIPTOR["container-image"] == {"type": "docker", "image": f"bidsencoding/bids-encoding:{__version__}"}
    assert {"cpu-cores", "ram", "walltime-estimate"} <= set(DESCRIPTOR["suggested-resources"])
    outputs = {o["path-template"] for o in DESCRIPTOR["output-files"]}
    assert INPUTS["output_dir"]["value-key"] in outputs, "the output folder is an output of the tool"


def test_container_image_is_the_dockerfile_image_with_its_label_version():
    """bosh exec launch runs the descriptor's image (docker run, or singularity from docker://): it must be the one
    docker/Dockerfile builds, named and versioned as its labels say."""
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    labels = dict(re.findall(r'(org\.opencontainers\.image\.[a-z.]+)="([^"]*)"', dockerfile))
    (named,) = set(re.findall(r"BIDS_ENCODING_CONTAINER=(\S+)", dockerfile))
    image = DESCRIPTOR["container-image"]
    assert image["type"] == "docker" and image["image"] == named, "the image the Dockerfile names itself"
    repository, _, tag = image["image"].rpartition(":")
    assert tag == labels["org.opencontainers.image.version"] == DESCRIPTOR["tool-version"]
    assert repository.rsplit("/", 1)[-1] == labels["org.opencontainers.image.title"] == DESCRIPTOR["name"]


def test_command_line_template_has_every_input_once_positionals_first():
    words = DESCRIPTOR["command-line"].split()
    keys = [i["value-key"] for i in DESCRIPTOR["inputs"]]
    assert words[0] == "bids-encoding"
    assert words[1:4] == ["[BIDS_DIR]", "[OUTPUT_DIR]", "[ANALYSIS_LEVEL]"]
    assert sorted(words[1:]) == sorted(keys), "the template holds every value-key exactly once, and nothing else"
    for dest, entry in INPUTS.items():
        assert entry["value-key"] == f"[{dest.upper()}]"
    for group in DESCRIPTOR.get("groups", []):
        assert set(group["members"]) <= set(INPUTS), group["id"]


# --- descriptor <-> parser, both ways -------------------------------------------------------------

def test_inputs_are_the_parser_options_and_positionals_both_ways():
    positionals = [a.dest for a in build_parser()._actions if not a.option_strings]
    assert positionals == list(POSITIONALS)
    assert set(INPUTS) == set(OPTIONS) | set(POSITIONALS), (
        f"only in the descriptor: {sorted(set(INPUTS) - set(OPTIONS) - set(POSITIONALS))}; "
        f"only in the parser: {sorted(set(OPTIONS) - set(INPUTS))} "
        "(regenerate: python -m bids_encoding.cli.descriptor > boutiques.json)")


def test_positionals():
    # the output folder is a String: bosh would insist that a File input already exists
    assert [INPUTS[d]["type"] for d in POSITIONALS] == ["File", "String", "String"]
    assert not any(INPUTS[d]["optional"] for d in POSITIONALS)
    assert not any("command-line-flag" in INPUTS[d] for d in POSITIONALS)
    assert INPUTS["analysis_level"]["value-choices"] == list(LEVELS)


@pytest.mark.parametrize("dest", sorted(OPTIONS))
def test_option_input(dest):
    if dest not in INPUTS:
        pytest.fail(f"--{dest} is not in boutiques.json (regenerate it)")
    check_input(dest)


# --- bosh builds command lines the parser accepts -------------------------------------------------

def test_a_minimal_invocation_parses_like_the_bare_cli(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    out = tmp_path / "out"
    command = simulated_command({"bids_dir": str(data), "output_dir": str(out), "analysis_level": "participant"},
                                tmp_path)
    assert command[0] == "bids-encoding"
    # bosh writes every default-value out; the result must equal what the parser does without them
    assert build_parser().parse_args(command[1:]) == build_parser().parse_args([str(data), str(out), "participant"])


def _value_for(dest: str, action: argparse.Action, tmp_path: Path):
    """A valid, non-default invocation value for any option (so new options are covered too)."""
    entry = INPUTS[dest]
    if entry["type"] == "Flag":
        return True
    if action.type is parser_module._existing_file:
        value = tmp_path / f"{dest}.json"
        value.write_text("{}")
    elif entry["type"] == "File":
        value = tmp_path / f"{dest} dir"  # a space, to check quoting
        value.mkdir()
    elif "value-choices" in entry:
        value = entry["value-choices"][-1]
    elif entry["type"] == "Number":
        value = 3
    else:
        value = f"{dest}-value"
    value = str(value) if isinstance(value, Path) else value
    return [value] * entry.get("min-list-entries", 1) if entry.get("list") else value


def _parsed(action: argparse.Action, value):
    """What argparse makes of the value given on the command line."""
    if isinstance(action, argparse._StoreTrueAction):
        return True
    if isinstance(action, argparse._StoreFalseAction):
        return False
    if isinstance(action, argparse._CountAction):
        return 1
    convert = action.type or str
    return [convert(str(v)) for v in value] if isinstance(value, list) else convert(str(value))


def test_a_full_invocation_parses(tmp_path):
    data = tmp_path / "my data"
    data.mkdir()
    filters = tmp_path / "filters.json"
    filters.write_text('{"bold": {"acquisition": "mb4"}}')
    invocation = {
        "bids_dir": str(data), "output_dir": str(tmp_path / "out"), "analysis_level": "group",
        "participant_label": ["sub-01", "02"], "bids_filter_file": str(filters),
        "features": ["wordrate", "gpt2:layers=6,9", "it's"], "analysis": "decoding", "seed": 7, "n_cpus": 2,
        "nipype_plugin": "SLURM", "nipype_plugin_args": '{"sbatch_args": "-p short --mem=4G"}',
    }
    invocation = {k: v for k, v in invocation.items() if k in INPUTS}
    for dest, action in OPTIONS.items():  # every other option, so the whole descriptor is exercised
        if dest not in invocation:
            invocation[dest] = _value_for(dest, action, tmp_path)
    assert set(invocation) == set(INPUTS)

    args = build_parser().parse_args(simulated_command(invocation, tmp_path)[1:])
    assert args.bids_dir == data.resolve() and args.analysis_level == "group"
    assert args.participant_label == ["01", "02"]
    for dest, action in OPTIONS.items():
        assert getattr(args, dest) == _parsed(action, invocation[dest]), dest


@pytest.mark.parametrize("field, value", [("analysis_level", "session"), ("analysis", "regression"),
                                          ("hrf_model", "fir"), ("n_cpus", 1.5), ("seed", "one")])
def test_bosh_rejects_what_the_parser_rejects(field, value, tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    result = simulate({"bids_dir": str(data), "output_dir": str(out), "analysis_level": "participant", field: value},
                      tmp_path)
    assert result.returncode != 0, result.stdout
    if field == "analysis_level":
        argv = [str(data), str(out), value]
    else:
        argv = [str(data), str(out), "participant", INPUTS[field]["command-line-flag"], str(value)]
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv)
