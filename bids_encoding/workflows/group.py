"""The group-level workflow: one test per participant output name, then the group report."""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces.utility import Merge
from nipype.pipeline import engine as pe

from ..options import pack
from ..plan import Plan
from .interfaces import DerivativesSink, GroupReport, GroupStats
from .participant import node_name


def init_group_wf(plan: Plan, stage_dir: Path) -> pe.Workflow:
    """One statistics node and one sink per participant output name; one report for all."""
    inputs = plan.group_inputs
    options = pack(options=plan.config.group, inference=plan.config.stats)
    wf = pe.Workflow(name="group_wf")
    merge = pe.Node(Merge(len(inputs)), name="merge_outputs", run_without_submitting=True)
    subjects = sorted({s for group in inputs for s in group.files})
    for index, group in enumerate(sorted(inputs, key=lambda g: (g.kind, g.name)), start=1):
        name = node_name(f"{group.kind}_{group.name}")
        test = pe.Node(GroupStats(group=group.to_dict(), options=options), name=f"test_{name}")
        sink = pe.Node(DerivativesSink(base_directory=str(stage_dir), provenance=plan.provenance,
                                       dataset_links=plan.links, entities={}),
                       name=f"ds_{name}", run_without_submitting=True)
        wf.connect([(test, sink, [("outputs", "outputs")]), (sink, merge, [("out_files", f"in{index}")])])
    report = pe.Node(GroupReport(base_directory=str(stage_dir), n_subjects=len(subjects)), name="report",
                     run_without_submitting=True)
    wf.connect(merge, "out", report, "out_files")
    return wf
