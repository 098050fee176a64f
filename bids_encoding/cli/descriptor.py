"""The Boutiques descriptor of the BIDS App, generated from the argparse parser.

``boutiques.json`` at the top of the repository is this module's output
(``python -m bids_encoding.cli.descriptor > boutiques.json``); a test keeps the two
equal, so every command-line option is described exactly once.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .. import __version__
from . import parser
from .parser import build_parser

IMAGE = f"bidsencoding/bids-encoding:{__version__}"
POSITIONALS = {
    "bids_dir": ("BIDS dataset", "File", "The root of the BIDS dataset (mounted read-only)."),
    "output_dir": ("Output folder", "String", "Where derivatives and reports are written (created if absent)."),
    "analysis_level": ("Analysis level", "String", "participant: one model per subject; group: across subjects."),
}
PATH_TYPES = {parser._existing_dir, parser._existing_file, parser._absolute, Path}


def _value_key(dest: str) -> str:
    return f"[{dest.upper()}]"


def _input(action: argparse.Action) -> dict:
    dest = action.dest
    entry: dict = {"id": dest, "name": dest.replace("_", " ").capitalize(), "value-key": _value_key(dest),
                   "description": (action.help or "").replace("%(default)s", str(action.default)), "optional": True}
    long_flags = [s for s in action.option_strings if s.startswith("--")]
    entry["command-line-flag"] = long_flags[0]
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        entry["type"] = "Flag"
        return entry
    if isinstance(action, argparse._CountAction):
        entry["type"] = "Flag"  # -v once; -vv is for debugging by hand
        return entry
    if action.type in PATH_TYPES:
        entry["type"] = "File"
    elif action.type in (int, float):
        entry.update(type="Number", integer=action.type is int)
    else:
        entry["type"] = "String"
    if action.nargs in ("+", "*"):
        entry["list"] = True
    elif isinstance(action.nargs, int):
        entry.update({"list": True, "min-list-entries": action.nargs, "max-list-entries": action.nargs})
    if action.choices:
        entry["value-choices"] = list(action.choices)
    if action.default not in (None, "", []) and action.default is not argparse.SUPPRESS:
        entry["default-value"] = action.default
    return entry


def build_descriptor() -> dict:
    """Every positional and option of the parser, as Boutiques inputs."""
    parser = build_parser()
    inputs = []
    for action in parser._actions:
        if action.dest in POSITIONALS:
            name, kind, description = POSITIONALS[action.dest]
            entry = {"id": action.dest, "name": name, "type": kind, "value-key": _value_key(action.dest),
                     "description": description, "optional": False}
            if action.choices:
                entry["value-choices"] = list(action.choices)
            inputs.append(entry)
        elif action.option_strings and action.dest not in ("help", "version"):
            inputs.append(_input(action))
    template = "bids-encoding " + " ".join(i["value-key"] for i in inputs)
    return {
        "name": "bids-encoding",
        "tool-version": __version__,
        "schema-version": "0.5",
        "author": "The bids-encoding developers",
        "description": "Model-based encoding and decoding of brain data on any BIDS dataset (a BIDS App).",
        "url": "https://github.com/bids-encoding/bids-encoding",
        "command-line": template,
        "container-image": {"type": "docker", "image": IMAGE},
        "inputs": inputs,
        "output-files": [{"id": "outputs", "name": "BIDS derivatives", "path-template": "[OUTPUT_DIR]",
                          "description": "Encoding maps, sidecars, dataset_description.json and HTML reports."}],
        "groups": [{"id": "selection", "name": "What to analyse",
                    "members": ["participant_label", "task", "session", "run", "space", "den", "bids_filter_file", "derivatives"]},
                   {"id": "execution", "name": "How to run",
                    "members": ["work_dir", "n_cpus", "mem_gb", "nipype_plugin", "nipype_plugin_args", "config"]}],
        "suggested-resources": {"cpu-cores": 2, "ram": 8, "walltime-estimate": 3600},
        "tags": {"domain": ["neuroinformatics", "fmri", "encoding-models", "bids"]},
    }


if __name__ == "__main__":
    print(json.dumps(build_descriptor(), indent=2))
