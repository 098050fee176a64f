"""The participant-level workflow: per subject and task, features -> encoding model -> derivatives.

Built the way fMRIPrep builds its workflows: ``init_*_wf`` functions that return
a Nipype workflow with an ``inputnode`` and an ``outputnode``; the graph is
decided at build time from the runs found in the dataset, and derivatives are
written only by sink nodes.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from nipype.interfaces.utility import IdentityInterface, Merge
from nipype.pipeline import engine as pe

from ..bids_io import BoldRun, MEEGRun
from ..config import RunConfig
from ..derivatives import dataset_links
from ..errors import UserError
from ..plugin_manager import Registered, Registry, instantiate
from .interfaces import (DerivativesSink, ExtractFeatures, FitDecoding, FitEmbedding, FitEncoding, FitJointEncoding,
                         FitTimeDecoding, FitTRF, SubjectReport)


def node_name(text: str) -> str:
    """A valid Nipype node name from any text."""
    return re.sub(r"\W+", "_", text).strip("_") or "node"


def init_task_encoding_wf(task: str, models: list[tuple[str, Registered]], runs: list[BoldRun],
                          stimuli_dir: Path | None, options: dict, name: str,
                          feature_cache: Path | None = None, n_cpus: int = 1) -> pe.Workflow:
    """Features of every run for each extractor, one encoding fit per extractor, and a joint banded fit
    of all extractors when there are several.

    Fits are linear algebra that BLAS already spreads over every core, so each fit node
    claims ``n_cpus``: MultiProc then runs one fit at a time instead of several fits whose
    threads fight over the same cores (which makes small eigendecompositions ~10x slower).

    Outputs ``outputnode.outputs``: the maps written by the fits, with entities and metadata.
    """
    wf = pe.Workflow(name=name)
    inputnode = _runs_inputnode(runs)
    outputnode = pe.Node(IdentityInterface(fields=["outputs"]), name="outputnode")
    joint = len(models) > 1
    n_fits = len(models) + joint
    merge_outputs = pe.Node(Merge(n_fits), name="merge_outputs", run_without_submitting=True)
    merge_features = pe.Node(Merge(len(models), no_flatten=True), name="merge_features",
                             run_without_submitting=True) if joint else None
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
        if joint:
            wf.connect(extract, "features_file", merge_features, f"in{index}")
    if joint:
        fit_joint = pe.Node(FitJointEncoding(options=options), name="fit_joint", n_procs=n_cpus)
        wf.connect([
            (inputnode, fit_joint, fit_inputs),
            (merge_features, fit_joint, [("out", "feature_files")]),
            (fit_joint, merge_outputs, [("outputs", f"in{n_fits}")]),
        ])
    wf.connect(merge_outputs, "out", outputnode, "outputs")
    return wf


def init_task_decoding_wf(task: str, models: list[tuple[str, Registered]], runs: list[BoldRun],
                          stimuli_dir: Path | None, options: dict, name: str,
                          feature_cache: Path | None = None, n_cpus: int = 1) -> pe.Workflow:
    """Decoding of one contrast from trial-wise brain responses, and from each extractor's features when given.

    Outputs ``outputnode.outputs``: the decoding table and the searchlight map, with entities and metadata.
    """
    wf = pe.Workflow(name=name)
    inputnode = _runs_inputnode(runs)
    outputnode = pe.Node(IdentityInterface(fields=["outputs"]), name="outputnode")
    fit = pe.Node(FitDecoding(options=options), name="fit_decoding", n_procs=n_cpus)
    wf.connect([(inputnode, fit, [(field, field) for field in RUN_FIELDS]), (fit, outputnode, [("outputs", "outputs")])])
    if models:
        merge_features = pe.Node(Merge(len(models), no_flatten=True), name="merge_features", run_without_submitting=True)
        for index, (spec, plugin) in enumerate(models, start=1):
            extract = _extract_node(spec, plugin, stimuli_dir, feature_cache)
            wf.connect([(inputnode, extract, [("events_files", "events_file")]),
                        (extract, merge_features, [("features_file", f"in{index}")])])
        wf.connect(merge_features, "out", fit, "feature_files")
    return wf


def init_task_embedding_wf(task: str, runs: list[BoldRun], options: dict, name: str, n_cpus: int = 1) -> pe.Workflow:
    """Every brain embedder fitted on one task's samples, with its evaluation.

    Outputs ``outputnode.outputs``: latents per run, weights and decoding tables, with entities and metadata.
    """
    wf = pe.Workflow(name=name)
    inputnode = _runs_inputnode(runs)
    outputnode = pe.Node(IdentityInterface(fields=["outputs"]), name="outputnode")
    fit = pe.Node(FitEmbedding(options=options), name="fit_embedding", n_procs=n_cpus)
    wf.connect([(inputnode, fit, [(field, field) for field in RUN_FIELDS]), (fit, outputnode, [("outputs", "outputs")])])
    return wf


RUN_FIELDS = ("events_files", "bold_files", "mask_files", "confound_files", "trs")
RECORDING_FIELDS = ("recording_files", "events_files", "runs")


def _recordings_inputnode(runs: list[MEEGRun]) -> pe.Node:
    """The EEG/MEG runs of one task as lists, one entry per run, in a workflow's inputnode."""
    inputnode = pe.Node(IdentityInterface(fields=list(RECORDING_FIELDS)), name="inputnode")
    inputnode.inputs.recording_files = [str(r.recording) for r in runs]
    inputnode.inputs.events_files = [str(r.events) for r in runs]
    inputnode.inputs.runs = [{"subject": r.subject, "task": r.task, "recording": str(r.recording), "events": str(r.events),
                              "datatype": r.datatype, "sfreq": r.sfreq, "session": r.session, "run": r.run}
                             for r in runs]
    return inputnode


def init_task_time_decoding_wf(task: str, runs: list[MEEGRun], options: dict, name: str, n_cpus: int = 1) -> pe.Workflow:
    """Time-resolved decoding of one EEG/MEG task's contrast. Outputs ``outputnode.outputs``."""
    wf = pe.Workflow(name=name)
    inputnode = _recordings_inputnode(runs)
    outputnode = pe.Node(IdentityInterface(fields=["outputs"]), name="outputnode")
    fit = pe.Node(FitTimeDecoding(options=options), name="fit_time_decoding", n_procs=n_cpus)
    wf.connect([(inputnode, fit, [(field, field) for field in RECORDING_FIELDS]),
                (fit, outputnode, [("outputs", "outputs")])])
    return wf


def init_task_trf_wf(task: str, models: list[tuple[str, Registered]], runs: list[MEEGRun], stimuli_dir: Path | None,
                     options: dict, name: str, feature_cache: Path | None = None, n_cpus: int = 1) -> pe.Workflow:
    """Features of every run for each extractor, then one TRF fit per extractor. Outputs ``outputnode.outputs``."""
    wf = pe.Workflow(name=name)
    inputnode = _recordings_inputnode(runs)
    outputnode = pe.Node(IdentityInterface(fields=["outputs"]), name="outputnode")
    merge_outputs = pe.Node(Merge(len(models)), name="merge_outputs", run_without_submitting=True)
    for index, (spec, plugin) in enumerate(models, start=1):
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


def _runs_inputnode(runs: list[BoldRun]) -> pe.Node:
    """The runs of one task as lists, one entry per run, in a workflow's inputnode."""
    inputnode = pe.Node(IdentityInterface(fields=list(RUN_FIELDS)), name="inputnode")
    inputnode.inputs.events_files = [str(r.events) for r in runs]
    inputnode.inputs.bold_files = [str(r.bold) for r in runs]
    inputnode.inputs.mask_files = [str(r.mask) if r.mask else "" for r in runs]
    inputnode.inputs.confound_files = [str(r.confounds) if r.confounds else "" for r in runs]
    inputnode.inputs.trs = [r.tr for r in runs]
    return inputnode


def _extract_node(spec: str, plugin: Registered, stimuli_dir: Path | None, feature_cache: Path | None) -> pe.MapNode:
    """One extractor over every run's events (a MapNode: one process per run under MultiProc)."""
    return pe.MapNode(
        ExtractFeatures(spec=spec, plugin_version=f"{plugin.distribution}=={plugin.version}",
                        stimuli_dir=str(stimuli_dir or ""), cache_dir=str(feature_cache or "")),
        iterfield=["events_file"], name=node_name(f"extract_{spec}"),
    )


def runs_by_task(runs: list[BoldRun]) -> dict[str, list[BoldRun]]:
    grouped: dict[str, list[BoldRun]] = defaultdict(list)
    for run in runs:
        grouped[run.task].append(run)
    return dict(grouped)


def decoding_tasks(runs: list[BoldRun], contrast: str) -> list[str]:
    """The tasks whose events hold the contrast's column and values (checked in every run by the stage)."""
    from ..decoding import parse_contrast
    from ..stimuli import read_events

    column, values = parse_contrast(contrast)
    found = []
    for task, task_runs in runs_by_task(runs).items():
        events = read_events(task_runs[0].events)
        if column in events.columns and set(values) & set(events[column].astype(str).str.strip()):
            found.append(task)
    if not found:
        raise UserError(f"no selected task has events with {column} = {' or '.join(values)} (tasks: "
                        f"{', '.join(sorted(runs_by_task(runs)))})", path=runs[0].events,
                        fix="Check --decode against the events.tsv columns and values, or select another --task")
    return found


def embedding_tasks(runs: list[BoldRun], contrast: str, samples: str) -> list[str]:
    """The tasks to embed: those holding the contrast when one is given; for trial samples, those whose events
    have the condition column; for volume samples, every task."""
    if contrast:
        return decoding_tasks(runs, contrast)
    if samples == "trs":
        return list(runs_by_task(runs))
    from ..stimuli import read_events

    found = [task for task, task_runs in runs_by_task(runs).items() if "trial_type" in read_events(task_runs[0].events)]
    if not found:
        raise UserError("trial samples need a trial_type column in the events, and no selected task has one",
                        path=runs[0].events, fix="Name the column with --decode COLUMN=A,B, or embed volumes with --samples trs")
    return found


def plan_models(runs: list[BoldRun], specs: tuple[str, ...], registry: Registry,
                required: bool = True) -> list[tuple[str, str, Registered]]:
    """Which (task, spec) pairs to fit: an extractor applies to a task whose runs all hold its modality.

    With ``required``, an extractor that fits no task is an error (encoding); decoding only
    adds features where they apply.
    """
    plan = []
    for spec in specs:
        extractor, entry = instantiate(spec, registry)
        tasks = []
        for task, task_runs in runs_by_task(runs).items():
            having = [r for r in task_runs if extractor.modality in r.modalities]
            if having and len(having) < len(task_runs):
                lacking = next(r for r in task_runs if extractor.modality not in r.modalities)
                raise UserError(
                    f"feature extractor '{entry.name}' needs {extractor.modality} stimuli, which other runs of task "
                    f"'{task}' have but this run's events lack",
                    path=lacking.events, fix="Add the stimulus column to this events file, or leave the run out with --run",
                )
            if having:
                tasks.append(task)
                plan.append((task, spec, entry))
        if not tasks and required:
            raise UserError(
                f"feature extractor '{entry.name}' needs {extractor.modality} stimuli, but no selected run's events hold any "
                f"(tasks: {', '.join(sorted(runs_by_task(runs)))})",
                path=runs[0].events.parent,
                fix="Choose features that match the events (bids-encoding plugins shows each one's modality)",
            )
    return plan


def init_participant_wf(config: RunConfig, subject: str, runs: list[BoldRun] | list[MEEGRun], registry: Registry,
                        stage_dir: Path, provenance: dict) -> pe.Workflow:
    """All models of one subject, their derivatives and the subject's report."""
    wf = pe.Workflow(name=f"sub_{node_name(subject)}_wf")
    links = dataset_links(config.bids_dir, config.derivatives)
    stimuli_dir = config.bids_dir / "stimuli"
    stimuli_dir = stimuli_dir if stimuli_dir.is_dir() else None
    tasks = runs_by_task(runs)
    by_task: dict[str, list[tuple[str, Registered]]] = defaultdict(list)
    if config.analysis == "decoding":
        by_task.update({task: [] for task in decoding_tasks(runs, config.decode)})
    if config.analysis == "embedding":
        by_task.update({task: [] for task in embedding_tasks(runs, config.decode, config.samples)})
    for task, spec, entry in plan_models(runs, config.features, registry, required=config.analysis == "encoding"):
        if config.analysis == "encoding" or task in by_task:
            by_task[task].append((spec, entry))
    n_cpus = config.n_cpus if config.nipype_plugin == "MultiProc" else 1
    merge = pe.Node(Merge(len(by_task)), name="merge_outputs", run_without_submitting=True)
    for index, (task, models) in enumerate(by_task.items(), start=1):
        task_runs = tasks[task]
        entities = {"subject": subject, "task": task, "space": getattr(task_runs[0], "space", None)}
        if isinstance(task_runs[0], MEEGRun) and config.analysis == "decoding":
            task_wf = init_task_time_decoding_wf(task, task_runs, config.meeg_options(),
                                                 name=node_name(f"{task}_time_decoding_wf"), n_cpus=n_cpus)
        elif isinstance(task_runs[0], MEEGRun):
            task_wf = init_task_trf_wf(task, models, task_runs, stimuli_dir, config.meeg_options(),
                                       name=node_name(f"{task}_trf_wf"), feature_cache=config.feature_cache,
                                       n_cpus=n_cpus)
        elif config.analysis == "embedding":
            task_wf = init_task_embedding_wf(task, task_runs, config.embedding_options(),
                                             name=node_name(f"{task}_embedding_wf"), n_cpus=n_cpus)
        elif config.analysis == "decoding":
            task_wf = init_task_decoding_wf(task, models, task_runs, stimuli_dir, config.decoding_options(),
                                            name=node_name(f"{task}_decoding_wf"), feature_cache=config.feature_cache,
                                            n_cpus=n_cpus)
        else:
            task_wf = init_task_encoding_wf(task, models, task_runs, stimuli_dir, config.encoding_options(),
                                            name=node_name(f"{task}_encoding_wf"), feature_cache=config.feature_cache,
                                            n_cpus=n_cpus)
        sink = pe.Node(DerivativesSink(base_directory=str(stage_dir), provenance=provenance, dataset_links=links,
                                       entities=entities),
                       name=node_name(f"ds_{task}"), run_without_submitting=True)
        wf.connect([
            (task_wf, sink, [("outputnode.outputs", "outputs")]),
            (sink, merge, [("out_files", f"in{index}")]),
        ])
    report = pe.Node(SubjectReport(base_directory=str(stage_dir), subject=subject), name="report",
                     run_without_submitting=True)
    wf.connect(merge, "out", report, "out_files")
    return wf
