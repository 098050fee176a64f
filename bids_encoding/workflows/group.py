"""The group-level workflow: statistics across subjects of the participant maps, then the group report."""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces.utility import Merge
from nipype.pipeline import engine as pe

from .interfaces import DerivativesSink, GroupReport, GroupStats
from .participant import node_name


def init_group_wf(grouped: dict[tuple, dict[str, Path]], stage_dir: Path, provenance: dict,
                  links: dict[str, str]) -> pe.Workflow:
    """One statistics node and one sink per (task, space, feature space); one report for all."""
    wf = pe.Workflow(name="group_wf")
    merge = pe.Node(Merge(len(grouped)), name="merge_outputs")
    subjects = sorted({s for maps in grouped.values() for s in maps})
    for index, ((task, space, desc), maps) in enumerate(sorted(grouped.items()), start=1):
        name = node_name(f"{task}_{space}_{desc}")
        stats = pe.Node(GroupStats(maps={s: str(p) for s, p in maps.items()}, name=name), name=f"stats_{name}")
        sink = pe.Node(DerivativesSink(base_directory=str(stage_dir), provenance=provenance, dataset_links=links,
                                       entities={"task": task, "space": space, "desc": desc}),
                       name=f"ds_{name}", run_without_submitting=True)
        wf.connect([(stats, sink, [("outputs", "outputs")]), (sink, merge, [("out_files", f"in{index}")])])
    report = pe.Node(GroupReport(base_directory=str(stage_dir), n_subjects=len(subjects)), name="report",
                     run_without_submitting=True)
    wf.connect(merge, "out", report, "out_files")
    return wf
