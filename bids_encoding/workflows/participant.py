"""The participant-level workflow: per subject and task, features -> model -> derivatives -> report.

Built the way fMRIPrep builds its workflows: ``init_*_wf`` functions that return a
Nipype workflow with an ``inputnode`` and an ``outputnode``. The graph only wires what
the plan (:mod:`bids_encoding.plan`) decided: one task workflow per
:class:`~bids_encoding.plan.TaskPlan`, made by its analysis's factory in
:data:`ANALYSES`, and derivatives are written only by sink nodes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Sequence

from nipype.interfaces.utility import IdentityInterface, Merge
from nipype.pipeline import engine as pe

from ..bids_io import BoldRun, MEEGRun
from ..config import RunConfig
from ..options import pack, unpack
from ..plan import Plan, TaskPlan
from ..plugins.registry import Registered
from .interfaces import (DerivativesSink, ExtractFeatures, FitDecoding, FitEmbedding, FitComparison, FitEncoding, FitJointEncoding,
                         FitRSA, FitTimeDecoding, FitTRF, SubjectReport)

RUN_FIELDS = ("events_files", "bold_files", "mask_files", "confound_files", "trs")
RECORDING_FIELDS = ("recording_files", "events_files", "runs")


def node_name(text: str) -> str:
    """A valid Nipype node name from any text."""
    return re.sub(r"\W+", "_", text).strip("_") or "node"


def init_task_encoding_wf(task: TaskPlan, options: dict, name: str, stimuli_dir: Path | None = None,
                          feature_cache: Path | None = None, n_cpus: int = 1) -> pe.Workflow:
    """Features of every run for each extractor, one encoding fit per extractor, and a joint banded fit
    of all extractors when there are several.

    Fits are linear algebra that BLAS already spreads over every core, so each fit node
    claims ``n_cpus``: MultiProc then runs one fit at a time instead of several fits whose
    threads fight over the same cores (which makes small eigendecompositions ~10x slower).

    Outputs ``outputnode.outputs``: the maps written by the fits, with entities and metadata.
    """
    wf = pe.Workflow(name=name)
    inputnode = _runs_inputnode(task.runs)
    outputnode = pe.Node(IdentityInterface(fields=["outputs"]), name="outputnode")
    models = task.models
    joint = len(models) > 1
    compare = bool(unpack(options)["options"].compare) if options else False
    n_fits = len(models) + joint + compare
    merge_outputs = pe.Node(Merge(n_fits), name="merge_outputs", run_without_submitting=True)
    merge_features = pe.Node(Merge(len(models), no_flatten=True), name="merge_features",
                             run_without_submitting=True) if joint or compare else None
    fit_inputs = [("bold_files", "bold_files"), ("mask_files", "mask_files"),
                  ("confound_files", "confound_files"), ("trs", "trs")]
    for index, (spec, plugin) in enumerate(models, start=1):
        extract = _extract_node(spec, plugin, stimuli_dir, feature_cache)
        fit = pe.Node(FitEncoding(options=options), name=node_name(f"fit_{spec}"), n_procs=n_cpus)
        wf.connect([
            (inputnode, extract, [("events_files", "events_file")]),
            (inputnode, fit, fit_inputs),
            (extract, fit, [("features_file", "feature_files")]),
            (fit, merge_outputs, [("outputs", f"in{index}")]),
        ])
        if merge_features is not None:
            wf.connect(extract, "features_file", merge_features, f"in{index}")
    if joint:
        fit_joint = pe.Node(FitJointEncoding(options=options), name="fit_joint", n_procs=n_cpus)
        wf.connect([
            (inputnode, fit_joint, fit_inputs),
            (merge_features, fit_joint, [("out", "feature_files")]),
            (fit_joint, merge_outputs, [("outputs", f"in{len(models) + 1}")]),
        ])
    if compare:
        fit_compare = pe.Node(FitComparison(options=options), name="fit_compare", n_procs=n_cpus)
        wf.connect([
            (inputnode, fit_compare, fit_inputs),
            (merge_features, fit_compare, [("out", "feature_files")]),
            (fit_compare, merge_outputs, [("outputs", f"in{n_fits}")]),
        ])
    wf.connect(merge_outputs, "out", outputnode, "outputs")
    return wf


def init_task_decoding_wf(task: TaskPlan, options: dict, name: str, stimuli_dir: Path | None = None,
                          feature_cache: Path | None = None, n_cpus: int = 1) -> pe.Workflow:
    """Decoding of one contrast from trial-wise brain responses, and from each extractor's features when given.

    Outputs ``outputnode.outputs``: the decoding table and the searchlight map, with entities and metadata.
    """
    wf, inputnode, fit = _single_fit_wf(name, _runs_inputnode(task.runs), RUN_FIELDS,
                                        FitDecoding(options=options), "fit_decoding", n_cpus)
    _connect_features(wf, inputnode, fit, task, stimuli_dir, feature_cache)
    return wf


def init_task_rsa_wf(task: TaskPlan, options: dict, name: str, stimuli_dir: Path | None = None,
                     feature_cache: Path | None = None, n_cpus: int = 1) -> pe.Workflow:
    """Each region's RDM of one task's trial responses, compared with the extractors' and the given model RDMs.

    Outputs ``outputnode.outputs``: the RDMs and the score table, with entities and metadata.
    """
    wf, inputnode, fit = _single_fit_wf(name, _runs_inputnode(task.runs), RUN_FIELDS, FitRSA(options=options),
                                        "fit_rsa", n_cpus)
    _connect_features(wf, inputnode, fit, task, stimuli_dir, feature_cache)
    return wf


def _connect_features(wf: pe.Workflow, inputnode: pe.Node, fit: pe.Node, task: TaskPlan, stimuli_dir: Path | None,
                      feature_cache: Path | None) -> None:
    """Every extractor of the task over its runs, their feature files merged into ``fit.feature_files``."""
    if task.models:
        merge_features = pe.Node(Merge(len(task.models), no_flatten=True), name="merge_features",
                                 run_without_submitting=True)
        for index, (spec, plugin) in enumerate(task.models, start=1):
            extract = _extract_node(spec, plugin, stimuli_dir, feature_cache)
            wf.connect([(inputnode, extract, [("events_files", "events_file")]),
                        (extract, merge_features, [("features_file", f"in{index}")])])
        wf.connect(merge_features, "out", fit, "feature_files")


def init_task_embedding_wf(task: TaskPlan, options: dict, name: str, n_cpus: int = 1, **_) -> pe.Workflow:
    """Every brain embedder fitted on one task's samples, with its evaluation.

    Outputs ``outputnode.outputs``: latents per run, weights and decoding tables, with entities and metadata.
    """
    wf, _, _ = _single_fit_wf(name, _runs_inputnode(task.runs), RUN_FIELDS, FitEmbedding(options=options),
                              "fit_embedding", n_cpus)
    return wf


def init_task_time_decoding_wf(task: TaskPlan, options: dict, name: str, n_cpus: int = 1, **_) -> pe.Workflow:
    """Time-resolved decoding of one EEG/MEG task's contrast. Outputs ``outputnode.outputs``."""
    wf, _, _ = _single_fit_wf(name, _recordings_inputnode(task.runs), RECORDING_FIELDS,
                              FitTimeDecoding(options=options), "fit_time_decoding", n_cpus)
    return wf


def init_task_trf_wf(task: TaskPlan, options: dict, name: str, stimuli_dir: Path | None = None,
                     feature_cache: Path | None = None, n_cpus: int = 1) -> pe.Workflow:
    """Features of every run for each extractor, then one TRF fit per extractor. Outputs ``outputnode.outputs``."""
    wf = pe.Workflow(name=name)
    inputnode = _recordings_inputnode(task.runs)
    outputnode = pe.Node(IdentityInterface(fields=["outputs"]), name="outputnode")
    merge_outputs = pe.Node(Merge(len(task.models)), name="merge_outputs", run_without_submitting=True)
    for index, (spec, plugin) in enumerate(task.models, start=1):
        extract = _extract_node(spec, plugin, stimuli_dir, feature_cache)
        fit = pe.Node(FitTRF(options=options), name=node_name(f"fit_trf_{spec}"), n_procs=n_cpus)
        wf.connect([
            (inputnode, extract, [("events_files", "events_file")]),
            (inputnode, fit, [(field, field) for field in RECORDING_FIELDS]),
            (extract, fit, [("features_file", "feature_files")]),
            (fit, merge_outputs, [("outputs", f"in{index}")]),
        ])
    wf.connect(merge_outputs, "out", outputnode, "outputs")
    return wf


ANALYSES: dict[str, tuple[Callable[..., pe.Workflow], Callable[[RunConfig], dict]]] = {
    "encoding": (init_task_encoding_wf, lambda c: pack(options=c.encoding, fmri=c.fmri, stats=c.stats)),
    "decoding": (init_task_decoding_wf, lambda c: pack(options=c.decoding, fmri=c.fmri, stats=c.stats)),
    "embedding": (init_task_embedding_wf,
                  lambda c: pack(options=c.embedding, decoding=c.decoding, fmri=c.fmri, stats=c.stats)),
    "rsa": (init_task_rsa_wf, lambda c: pack(options=c.rsa, fmri=c.fmri, stats=c.stats)),
    "time_decoding": (init_task_time_decoding_wf, lambda c: pack(options=c.meeg, decoding=c.decoding, stats=c.stats)),
    "trf": (init_task_trf_wf, lambda c: pack(options=c.meeg)),
}
"""Each analysis a task plan can name: its workflow factory, and the option sections its fit nodes receive."""


def init_participant_wf(plan: Plan, subject: str, stage_dir: Path) -> pe.Workflow:
    """All analyses of one subject, their derivatives and the subject's report."""
    config = plan.config
    wf = pe.Workflow(name=f"sub_{node_name(subject)}_wf")
    tasks = plan.tasks[subject]
    n_cpus = config.n_cpus if config.nipype_plugin == "MultiProc" else 1
    merge = pe.Node(Merge(len(tasks)), name="merge_outputs", run_without_submitting=True)
    for index, task in enumerate(tasks, start=1):
        factory, sections = ANALYSES[task.analysis]
        task_wf = factory(task, sections(config), name=node_name(f"{task.label}_{task.analysis}_wf"),
                          stimuli_dir=plan.stimuli_dir, feature_cache=config.feature_cache, n_cpus=n_cpus)
        sink = pe.Node(DerivativesSink(base_directory=str(stage_dir), provenance=plan.provenance,
                                       dataset_links=plan.links, entities=task.entities),
                       name=node_name(f"ds_{task.label}"), run_without_submitting=True)
        wf.connect([
            (task_wf, sink, [("outputnode.outputs", "outputs")]),
            (sink, merge, [("out_files", f"in{index}")]),
        ])
    report = pe.Node(SubjectReport(base_directory=str(stage_dir), subject=subject), name="report",
                     run_without_submitting=True)
    wf.connect(merge, "out", report, "out_files")
    return wf


def _single_fit_wf(name: str, inputnode: pe.Node, fields: Sequence[str], interface, fit_name: str,
                   n_cpus: int) -> tuple[pe.Workflow, pe.Node, pe.Node]:
    """A workflow whose one fit node reads the whole inputnode and fills the outputnode."""
    wf = pe.Workflow(name=name)
    outputnode = pe.Node(IdentityInterface(fields=["outputs"]), name="outputnode")
    fit = pe.Node(interface, name=fit_name, n_procs=n_cpus)
    wf.connect([(inputnode, fit, [(field, field) for field in fields]), (fit, outputnode, [("outputs", "outputs")])])
    return wf, inputnode, fit


def _runs_inputnode(runs: Sequence[BoldRun]) -> pe.Node:
    """The BOLD runs of one task as lists, one entry per run, in a workflow's inputnode."""
    inputnode = pe.Node(IdentityInterface(fields=list(RUN_FIELDS)), name="inputnode")
    inputnode.inputs.events_files = [str(r.events) for r in runs]
    inputnode.inputs.bold_files = [str(r.bold) for r in runs]
    inputnode.inputs.mask_files = [str(r.mask) if r.mask else "" for r in runs]
    inputnode.inputs.confound_files = [str(r.confounds) if r.confounds else "" for r in runs]
    inputnode.inputs.trs = [r.tr for r in runs]
    return inputnode


def _recordings_inputnode(runs: Sequence[MEEGRun]) -> pe.Node:
    """The EEG/MEG runs of one task as lists, one entry per run, in a workflow's inputnode."""
    inputnode = pe.Node(IdentityInterface(fields=list(RECORDING_FIELDS)), name="inputnode")
    inputnode.inputs.recording_files = [str(r.recording) for r in runs]
    inputnode.inputs.events_files = [str(r.events) for r in runs]
    inputnode.inputs.runs = [{"subject": r.subject, "task": r.task, "recording": str(r.recording), "events": str(r.events),
                              "datatype": r.datatype, "sfreq": r.sfreq, "session": r.session, "run": r.run}
                             for r in runs]
    return inputnode


def _extract_node(spec: str, plugin: Registered, stimuli_dir: Path | None, feature_cache: Path | None) -> pe.MapNode:
    """One extractor over every run's events (a MapNode: one process per run under MultiProc)."""
    return pe.MapNode(
        ExtractFeatures(spec=spec, plugin_version=f"{plugin.distribution}=={plugin.version}",
                        stimuli_dir=str(stimuli_dir or ""), cache_dir=str(feature_cache or "")),
        iterfield=["events_file"], name=node_name(f"extract_{spec}"),
    )
