"""Nipype workflows: ``init_*_wf`` factories that wire the plain analysis functions as nodes.

:func:`init_workflow` turns a :class:`~bids_encoding.plan.Plan` into the graph of its
level; the same graph runs with Nipype's Linear, MultiProc or SLURM plugin.
"""

import os
from pathlib import Path

os.environ.setdefault("NIPYPE_NO_ET", "1")  # no version check over the network

from ..plan import Plan  # noqa: E402
from .group import init_group_wf  # noqa: E402
from .participant import init_participant_wf  # noqa: E402

__all__ = ["init_workflow", "init_group_wf", "init_participant_wf"]


def init_workflow(plan: Plan, stage_dir: Path):
    """The whole invocation's workflow: every subject's participant workflow, or the group workflow."""
    from nipype.pipeline import engine as pe

    if plan.config.analysis_level == "group":
        wf = init_group_wf(plan, stage_dir)
        wf.name = "bids_encoding_group_wf"
        return wf
    wf = pe.Workflow(name="bids_encoding_wf")
    wf.add_nodes([init_participant_wf(plan, subject, stage_dir) for subject in plan.tasks])
    return wf
