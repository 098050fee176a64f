"""RSA's inputs checked before anything runs: its options, the conditions of a task's events and the model RDM
files given with --rdm, each mistake one UserError that names the file and the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bids_encoding.contrasts import read_model_rdm, task_conditions
from bids_encoding.errors import UserError
from bids_encoding.options import RSAOptions

LABELS = ["a.png", "b.png", "c.png"]


def write(path: Path, table: pd.DataFrame) -> Path:
    table.to_csv(path, sep="\t", index=False)
    return path


def events(path: Path, stimuli: list[str]) -> Path:
    return write(path, pd.DataFrame({"onset": np.arange(len(stimuli)) * 3.0, "duration": 1.0, "stim_file": stimuli}))


def test_a_model_rdm_is_reordered_to_the_conditions(tmp_path):
    values = np.array([[0, 1, 2], [1, 0, 3], [2, 3, 0]], float)
    path = write(tmp_path / "m.tsv", pd.DataFrame(values, columns=["c.png", "a.png", "b.png"]))
    rdm = read_model_rdm("m", path, LABELS)
    assert rdm[0, 1] == 3 and rdm[0, 2] == 1 and rdm[1, 2] == 2  # a-b, a-c, b-c


@pytest.mark.parametrize("table,message", [
    (pd.DataFrame(np.zeros((3, 3)), columns=["a.png", "b.png", "x.png"]), "unknown: x.png"),
    (pd.DataFrame(np.zeros((2, 3)), columns=LABELS), "2 rows for 3 columns"),
    (pd.DataFrame([[0, 1, 2], [5, 0, 3], [2, 3, 0]], columns=LABELS), "not symmetric"),
    (pd.DataFrame([["0", "x", "1"], ["1", "0", "1"], ["1", "1", "0"]], columns=LABELS), "not a table of numbers"),
])
def test_bad_model_rdms_are_named(tmp_path, table, message):
    path = write(tmp_path / "bad.tsv", table)
    with pytest.raises(UserError, match=message) as error:
        read_model_rdm("bad", path, LABELS)
    assert str(error.value.path) == str(path)


def test_conditions_need_two_runs_three_values_and_each_in_two_runs(tmp_path):
    one, two = events(tmp_path / "1.tsv", LABELS), events(tmp_path / "2.tsv", LABELS[::-1])
    assert task_conditions([one, two], "stim_file") == LABELS
    with pytest.raises(UserError, match="crossvalidated across runs"):
        task_conditions([one], "stim_file")
    few = events(tmp_path / "few.tsv", ["a.png", "b.png", "a.png"])
    with pytest.raises(UserError, match="at least 3 conditions"):
        task_conditions([few, few], "stim_file")
    other = events(tmp_path / "3.tsv", ["a.png", "b.png", "d.png"])
    with pytest.raises(UserError, match="only one run .c.png, d.png"):
        task_conditions([one, other], "stim_file")


def test_options_check_their_choices_and_model_specs(tmp_path):
    model = write(tmp_path / "m.tsv", pd.DataFrame(np.zeros((3, 3)), columns=LABELS))
    assert RSAOptions(rdm=(f"m={model}",)).models == {"m": str(model.resolve())}
    for values, message in (({"distance": "euclid"}, "unknown RDM distance"),
                            ({"comparison": "kendall"}, "unknown RDM comparison"),
                            ({"rdm": ("m",)}, "NAME=FILE"), ({"rdm": ("m-1=x.tsv",)}, "alphanumeric"),
                            ({"rdm": (f"m={tmp_path / 'none.tsv'}",)}, "does not exist"),
                            ({"rdm": (f"m={model}", f"m={model}")}, "share a name")):
        with pytest.raises(UserError, match=message):
            RSAOptions(**values)
