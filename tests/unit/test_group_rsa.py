"""The group level on RSA's participant outputs: the score tables are one more table kind, tested against 0 across
subjects, and each region gets its noise ceiling from the subjects' RDMs. Planted: subjects share one region's
geometry (plus their own noise) and not the other's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bids_encoding.analyses.group_stats import group_test
from bids_encoding.bids_io.outputs import collect_participant_outputs
from bids_encoding.derivatives import write_tsv
from bids_encoding.models import rsa
from bids_encoding.options import GroupOptions, StatsOptions

N_SUBJECTS, N_CONDITIONS = 6, 10


def participant_outputs(out: Path, seed: int = 0) -> None:
    """Each subject's RDMs of a region with the shared geometry ('shared') and one of noise ('noise'), and their
    Spearman scores against the true geometry, as the participant level writes them."""
    rng = np.random.default_rng(seed)
    labels = [f"image{i:02d}" for i in range(N_CONDITIONS)]
    truth = rsa.correlation_rdm(rng.standard_normal((N_CONDITIONS, 8)))
    for index in range(1, N_SUBJECTS + 1):
        folder = out / f"sub-{index:02d}" / "func"
        folder.mkdir(parents=True)
        prefix = f"sub-{index:02d}_task-faces_space-MNI152NLin2009cAsym"
        rows = []
        for region, signal in (("shared", 1.0), ("noise", 0.0)):
            rdm = signal * truth + 0.5 * rsa.correlation_rdm(rng.standard_normal((N_CONDITIONS, 8)))
            write_tsv(pd.DataFrame(rdm, columns=labels), folder / f"{prefix}_desc-{region}_rdm.tsv")
            rows.append({"region": region, "model": "truth", "score": rsa.compare(rdm, truth), "p_value": 0.5,
                         "n_conditions": N_CONDITIONS, "n_voxels": 20})
        write_tsv(pd.DataFrame(rows), folder / f"{prefix}_desc-rsa_scores.tsv")
        (folder / f"{prefix}_desc-rsa_scores.json").write_text(json.dumps({"Comparison": {"Name": "spearman"},
                                                                            "Chance": 0.0}))


@pytest.fixture
def tested(tmp_path) -> pd.DataFrame:
    participant_outputs(tmp_path)
    inputs = collect_participant_outputs(tmp_path)
    assert [(g.kind, g.suffix) for g in inputs] == [("table", "scores")]  # the RDMs are read beside the scores
    (tmp_path / "group").mkdir()
    outputs = group_test(inputs[0], tmp_path / "group", GroupOptions(), StatsOptions(n_permutations=1000))
    (output,) = outputs
    assert "noise_ceiling_lower" in output.metadata and output.metadata["NSubjects"] == N_SUBJECTS
    assert output.metadata["ParticipantLevel"]["Comparison"] == {"Name": "spearman"}
    return pd.read_csv(output.in_file, sep="\t").set_index("region")


def test_rsa_scores_are_tested_against_zero_across_subjects(tested):
    assert (tested["chance"] == 0).all() and (tested["n_subjects"] == N_SUBJECTS).all()
    assert tested.loc["shared", "p_fwe"] < 0.05 and tested.loc["noise", "p_fwe"] > 0.05
    assert tested.loc["shared", "mean"] == pytest.approx(tested.loc["shared", [f"sub-{i:02d}" for i in range(1, 7)]]
                                                         .mean())


def test_each_region_gets_its_noise_ceiling_across_subjects(tested):
    shared, noise = tested.loc["shared"], tested.loc["noise"]
    assert shared["noise_ceiling_lower"] <= shared["noise_ceiling_upper"]
    assert shared["noise_ceiling_lower"] > 0.5 > noise["noise_ceiling_lower"]
    # the true geometry scores within (or near) the ceiling: the subjects' RDMs share nothing else
    assert shared["noise_ceiling_lower"] - 0.1 <= shared["mean"] <= shared["noise_ceiling_upper"]
