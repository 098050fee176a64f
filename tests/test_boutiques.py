"""boutiques.json is valid, up to date with the parser, and yields command lines the parser accepts."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from bids_encoding.descriptor import build_descriptor
from bids_encoding.parser import build_parser, option_dests

ROOT = Path(__file__).resolve().parents[1]
BOSH = str(Path(sys.executable).parent / "bosh")


def bosh(*args, home: Path) -> subprocess.CompletedProcess:
    return subprocess.run([BOSH, *map(str, args)], capture_output=True, text=True, env={**os.environ, "HOME": str(home)})


def test_descriptor_validates(tmp_path):
    result = bosh("validate", ROOT / "boutiques.json", home=tmp_path)
    assert result.returncode == 0 and "OK" in result.stdout, result.stdout + result.stderr


def test_descriptor_file_is_the_generated_one():
    assert json.loads((ROOT / "boutiques.json").read_text()) == build_descriptor(), \
        "regenerate it: python -m bids_encoding.descriptor > boutiques.json"


def test_every_parser_option_is_an_input_and_back():
    inputs = {i["id"]: i for i in json.loads((ROOT / "boutiques.json").read_text())["inputs"]}
    options = option_dests()
    assert set(inputs) == set(options) | {"bids_dir", "output_dir", "analysis_level"}
    for dest, action in options.items():
        assert inputs[dest]["command-line-flag"] in action.option_strings
        assert inputs[dest].get("value-choices") == (list(action.choices) if action.choices else None)
        assert inputs[dest].get("list", False) == (action.nargs in ("+", "*"))


def test_a_simulated_invocation_parses(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    invocation = tmp_path / "invocation.json"
    invocation.write_text(json.dumps({
        "bids_dir": str(data), "output_dir": str(tmp_path / "out"), "analysis_level": "participant",
        "participant_label": ["01", "02"], "features": ["wordrate", "wordlength:unit=letters"], "n_cpus": 2,
        "skip_bids_validation": True, "nipype_plugin": "MultiProc",
    }))
    result = bosh("exec", "simulate", ROOT / "boutiques.json", "-i", invocation, home=tmp_path)
    assert result.returncode == 0, result.stderr
    command = next(line for line in result.stdout.splitlines() if line.startswith("bids-encoding "))
    args = build_parser().parse_args(shlex.split(command)[1:])
    assert args.participant_label == ["01", "02"] and args.features == ["wordrate", "wordlength:unit=letters"]
    assert args.n_cpus == 2 and args.skip_bids_validation and args.nipype_plugin == "MultiProc"
