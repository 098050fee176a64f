"""`bids-encoding demo` (what `make demo` runs): the example dataset, participant and group levels, reports."""

from __future__ import annotations

import pandas as pd
import pytest

from ..conftest import run_cli


@pytest.mark.slow
def test_demo_runs_both_levels_and_the_group_tables_find_each_planted_sphere(tmp_path):
    result = run_cli("demo", tmp_path / "demo", "--features", "wordrate", "trialtype")
    assert result.returncode == 0, result.stderr
    assert "Demo finished." in result.stdout
    out = tmp_path / "demo" / "derivatives" / "bids-encoding"
    assert {p.name for p in out.glob("*.html")} == {"sub-01.html", "sub-02.html", "group.html"}
    # every trial drives the face sphere (by category) and the latent sphere (one factor each), not the edges one
    for task, desc, spheres in (("lpp", "wordrate", {"wordrateSphere"}), ("faces", "trialtype", {"faceSphere", "latentSphere"})):
        regions = pd.read_csv(out / "group" / f"task-{task}_space-MNI152NLin2009cAsym_desc-{desc}_regions.tsv", sep="\t")
        ranked = regions.sort_values("mean", ascending=False)
        assert set(ranked["name"][: len(spheres)]) == spheres
        assert (ranked["mean"][: len(spheres)] > 0.05).all() and (ranked["mean"][len(spheres):] < 0.01).all()
        assert {"sub-01", "sub-02", "p_value", "p_fwe"} <= set(regions.columns)
