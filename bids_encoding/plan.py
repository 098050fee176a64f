"""The plan of one invocation, computed once: which analysis of which runs of which task, with which models.

``make_plan`` reads the dataset (pybids, the events, the installed plugins) and runs
every input check that needs no data: a wrong task, contrast, feature extractor or
trim fails here, in seconds, before Nipype starts. The workflows only wire nodes from
the plan (:mod:`.workflows`), and nothing below re-plans: events are read and plugins
instantiated once.
"""

from __future__ import annotations

import logging
import sys
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import __version__
from .bids_io import (BoldRun, MEEGRun, Run, check_dataset, check_same_grid, collect_bold_runs, collect_meeg_runs,
                      datatypes_present, load_layout, validate_dataset)
from .bids_io.outputs import GroupInput, check_group_inputs, collect_participant_outputs
from .config import RunConfig
from .contrasts import read_model_rdm, task_conditions
from .derivatives import dataset_links
from .errors import UserError
from .options import RSAOptions, check_region, parse_comparison, parse_contrast
from .plugins.registry import Registered, Registry, installed_plugins, instantiate
from .stimuli import check_media, read_events, stimuli_for, stimuli_from_events

log = logging.getLogger("bids_encoding")

DEFAULT_FEATURES = {"trials": ("trialtype", "a trial_type column"),
                    "text": ("wordrate", "words (a word or text column, or a transcript)")}
"""Without ``--features``, encoding models each task with these: by modality, the extractor and what the events
need for it (each only where installed)."""


VERSION_ENTITIES = ("acquisition", "space", "res", "den")  # runs differing in these are modelled apart
OUTPUT_ENTITIES = ("acquisition", "space", "den")  # and these name their outputs (den: of surfaces, e.g. fsLR 91k)


@dataclass(frozen=True)
class TaskPlan:
    """One analysis of one subject's task: its runs and, where features are modelled, its extractors."""

    subject: str
    task: str
    analysis: str  # "encoding", "decoding", "embedding", "rsa" (fMRI); "time_decoding", "trf" (EEG/MEG)
    runs: tuple[Run, ...]
    models: tuple[tuple[str, Registered], ...] = ()  # (spec, plugin) of each feature extractor

    @property
    def entities(self) -> dict[str, Any]:
        """The entities every output of this task shares, taken from its runs (acquisition, space, den)."""
        return {"subject": self.subject, "task": self.task,
                **{name: getattr(self.runs[0], name, None) for name in OUTPUT_ENTITIES}}

    @property
    def label(self) -> str:
        """The task and its acquisition, for node names (``objectviewing_acq1slice``): a subject's versions of a task
        differ in acquisition only, since --space and the filters choose one space, res and den."""
        acquisition = getattr(self.runs[0], "acquisition", None)
        return f"{self.task}_acq{acquisition}" if acquisition else self.task


@dataclass(frozen=True)
class Plan:
    """Everything the workflows need: the checked configuration, the tasks or the group inputs, provenance."""

    config: RunConfig
    description: dict  # the input's dataset_description.json
    tasks: dict[str, tuple[TaskPlan, ...]] = field(default_factory=dict)  # participant level: by subject
    group_inputs: tuple[GroupInput, ...] = ()  # group level
    stimuli_dir: Path | None = None
    links: dict[str, str] = field(default_factory=dict)  # dataset names for BIDS URIs
    provenance: dict[str, Any] = field(default_factory=dict)  # added to every sidecar


def make_plan(config: RunConfig) -> Plan:
    """The plan of the participant or group level, every input checked."""
    description = check_dataset(config.bids_dir)
    if config.analysis_level == "group":
        inputs = collect_participant_outputs(config.output_dir, config.participant_label, config.task)
        check_group_inputs(inputs, config.output_dir, config.participant_label)
        warn_permutation_floor(len({s for group in inputs for s in group.files}), config)
        return Plan(config, description, group_inputs=tuple(inputs), provenance=_provenance(config),
                    links={"": config.output_dir.as_uri()})  # bids:: = this dataset
    if not config.skip_bids_validation:
        validate_dataset(config.bids_dir)
    registry = installed_plugins()
    if config.analysis == "embedding":
        check_region(config.embedding, config.fmri)
        for spec in config.embedding.embedder:
            instantiate(spec, registry, "brain embedder")
    layout = load_layout(config.bids_dir, config.derivatives)
    subjects = list(config.participant_label) or layout.get_subjects()
    runs = {s: subject_runs(config, layout, s) for s in subjects}
    if not config.features and config.analysis == "encoding":
        # the plan's config (what the workflows read and every sidecar records) names the defaults chosen
        config = replace(config, features=default_features([r for of_subject in runs.values() for r in of_subject],
                                                           registry, config.bids_dir))
    tasks = {s: tuple(subject_tasks(config, runs[s], registry)) for s in subjects}
    provenance = _provenance(config)
    stimuli_dir = config.bids_dir / "stimuli"
    return Plan(config, description, tasks=tasks, stimuli_dir=stimuli_dir if stimuli_dir.is_dir() else None,
                links=dataset_links(config.bids_dir, config.derivatives), provenance=provenance)


def warn_permutation_floor(n_subjects: int, config: RunConfig) -> None:
    """Say so when a sign-flip test of this many subjects cannot reach ``--alpha``: its smallest corrected p is
    one over the number of distinct sign patterns (2^(n-1) for mne's one-sided table test)."""
    floor = 1 / 2 ** (n_subjects - 1)
    if config.group.sign_flips and floor > config.group.alpha:
        log.warning("%d subjects give a sign-flip test only %d distinct sign patterns, so its corrected p cannot "
                    "go below about %.3g, above --alpha %g: run more subjects (%d or more), or use --group-test "
                    "parametric", n_subjects, 2 ** n_subjects, floor, config.group.alpha,
                    next(n for n in range(n_subjects, 64) if 1 / 2 ** (n - 1) <= config.group.alpha))


def _provenance(config: RunConfig) -> dict[str, Any]:
    return {"Version": __version__, "Command": "bids-encoding " + " ".join(sys.argv[1:]), "Seed": config.seed,
            "Config": config.to_json()}


def default_features(runs: list[Run], registry: Registry, bids_dir: Path | None = None) -> tuple[str, ...]:
    """The feature extractors to fit when ``--features`` names none (:data:`DEFAULT_FEATURES`), logged by task.

    A default applies to a task when every run of it holds the extractor's stimuli (``trial_type`` values for
    ``trialtype``, words for ``wordrate``), in every selected subject. With none for any task, the error names
    the events and the installed extractors.
    """
    installed = registry.get("feature extractor", {})
    by_task = runs_by_task(runs)
    chosen: dict[str, list[str]] = {}  # spec -> the tasks it models
    for modality, (spec, _) in DEFAULT_FEATURES.items():
        tasks = sorted(task for task, task_runs in by_task.items() if all(modality in r.modalities for r in task_runs))
        if tasks and spec in installed:
            chosen[spec] = tasks
    if not chosen:
        known = ", ".join(sorted(installed)) or "none installed"
        needs = " or ".join(f"{what} (for {spec}{'' if spec in installed else ', not installed'})"
                            for spec, what in DEFAULT_FEATURES.values())
        raise UserError(
            f"no --features given, and no selected task's events have {needs}, so there is no default model "
            f"(tasks: {', '.join(sorted(by_task)) or 'none'})",
            path=runs[0].events.parent if runs else bids_dir,
            fix=f"Name at least one feature extractor with --features (installed: {known})",
        )
    log.info("no --features given: using %s", ", ".join(
        f"{spec} for task{'s' if len(tasks) > 1 else ''} {', '.join(tasks)}" for spec, tasks in chosen.items()))
    return tuple(chosen)


def subject_runs(config: RunConfig, layout, subject: str) -> list[Run]:
    """The subject's BOLD runs, or EEG/MEG recordings (``--datatype``, else the first of func, eeg, meg it has)."""
    datatype = config.datatype
    if datatype is None:
        present = datatypes_present(layout, subject) if subject in layout.get_subjects() else []
        datatype = present[0] if present else "func"
    if datatype == "func":
        return collect_bold_runs(layout, subject, tasks=config.task, sessions=config.session, runs=config.run,
                                 space=config.space, den=config.den, use_derivatives=bool(config.derivatives),
                                 filters=config.bids_filters)
    if config.analysis in ("embedding", "rsa"):
        raise UserError(f"sub-{subject} has no BOLD runs, and --analysis {config.analysis} works on fMRI only",
                        path=config.bids_dir, fix="Use --analysis encoding or decoding on EEG/MEG recordings")
    if subject not in layout.get_subjects():
        raise UserError(f"subject '{subject}' is not in the dataset (subjects: {', '.join(layout.get_subjects())})",
                        path=config.bids_dir, fix="Check --participant-label")
    return collect_meeg_runs(layout, subject, datatype, tasks=config.task, sessions=config.session, runs=config.run,
                             filters=config.bids_filters)


def subject_tasks(config: RunConfig, runs: list[Run], registry: Registry) -> list[TaskPlan]:
    """One :class:`TaskPlan` per task the analysis applies to, with the extractors that apply to it."""
    check_trim(config, runs)
    by_task: dict[str, list[tuple[str, Registered]]] = defaultdict(list)
    if config.analysis == "decoding":
        by_task.update({task: [] for task in decoding_tasks(runs, config.decoding.decode)})
    if config.analysis == "embedding":
        by_task.update({task: [] for task in embedding_tasks(runs, config.decoding.decode, config.embedding.samples)})
    if config.analysis == "rsa":
        by_task.update({task: [] for task in rsa_tasks(runs, config.rsa)})
    stimuli_dir = config.bids_dir / "stimuli"
    for task, spec, entry in plan_models(runs, config.features, registry, required=config.analysis == "encoding",
                                         stimuli_dir=stimuli_dir if stimuli_dir.is_dir() else None):
        if config.analysis == "encoding" or task in by_task:
            by_task[task].append((spec, entry))
    grouped = runs_by_task(runs)
    plans = []
    if config.analysis == "encoding":
        for task, models in by_task.items():
            check_comparisons(config.encoding.compare, task, [entry.name for _, entry in models])
    for task, models in by_task.items():
        for task_runs in versions(grouped[task]):
            analysis = config.analysis
            if isinstance(task_runs[0], BoldRun):
                check_same_grid(list(task_runs))
            if isinstance(task_runs[0], MEEGRun):
                analysis = "time_decoding" if config.analysis == "decoding" else "trf"
            plans.append(TaskPlan(task_runs[0].subject, task, analysis, task_runs, tuple(models)))
    return plans


def check_comparisons(compare: tuple[str, ...], task: str, extractors: list[str]) -> None:
    """Every --compare label must be a feature space of a requested extractor (its name, or its name and a
    space label such as gpt2L6, which the extractor only reveals when it runs: the analysis checks those)."""
    known = [label for spec in compare for label in parse_comparison(spec)]
    unknown = sorted({label for label in known if not any(label.startswith(name) for name in extractors)})
    if unknown:
        raise UserError(f"--compare names feature spaces no requested extractor of task {task} makes: "
                        f"{', '.join(unknown)} (requested extractors: {', '.join(extractors) or 'none'}; a "
                        f"feature space is an extractor's name, followed by its space label when it has several)",
                        fix="Compare two of the requested feature spaces, or add the missing extractor to --features")


def versions(task_runs: list[Run]) -> list[tuple[Run, ...]]:
    """A task's runs split by acquisition and preprocessed version (space, res, den): each version is modelled
    on its own grid, and its outputs keep its entities."""
    grouped: dict[tuple, list[Run]] = defaultdict(list)
    for run in task_runs:
        grouped[tuple(getattr(run, name, None) for name in VERSION_ENTITIES)].append(run)
    return [tuple(group) for group in grouped.values()]


def check_trim(config: RunConfig, runs: list[Run]) -> None:
    """--trim (encoding of BOLD runs) must leave volumes to fit in every run."""
    trim = config.encoding.trim
    for run in runs if config.analysis == "encoding" else ():
        n_volumes = getattr(run, "n_volumes", None)  # EEG/MEG recordings have none to trim
        if n_volumes is not None and n_volumes - sum(trim) < 2:
            raise UserError(f"--trim {trim[0]} {trim[1]} leaves {max(n_volumes - sum(trim), 0)} "
                            f"of this run's {n_volumes} volumes", path=run.bold,
                            fix="Trim fewer volumes: at least 2 must remain in every run")


def runs_by_task(runs: list[Run]) -> dict[str, list[Run]]:
    grouped: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        grouped[run.task].append(run)
    return dict(grouped)


def decoding_tasks(runs: list[Run], contrast: str) -> list[str]:
    """The tasks whose events hold the contrast's column and values (checked in every run by the analysis)."""
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


def embedding_tasks(runs: list[Run], contrast: str, samples: str) -> list[str]:
    """The tasks to embed: those holding the contrast when one is given; for trial samples, those whose events
    have the condition column; for volume samples, every task."""
    if contrast:
        return decoding_tasks(runs, contrast)
    if samples == "trs":
        return list(runs_by_task(runs))
    found = [task for task, task_runs in runs_by_task(runs).items() if "trial_type" in read_events(task_runs[0].events)]
    if not found:
        raise UserError("trial samples need a trial_type column in the events, and no selected task has one",
                        path=runs[0].events, fix="Name the column with --decode COLUMN=A,B, or embed volumes with --samples trs")
    return found


def rsa_tasks(runs: list[Run], options: RSAOptions) -> list[str]:
    """The tasks whose events hold the conditions column, each checked now: enough conditions, each in two runs,
    and every --rdm file's labels those conditions."""
    found = []
    for task, task_runs in runs_by_task(runs).items():
        if options.conditions not in read_events(task_runs[0].events).columns:
            continue
        conditions = task_conditions([r.events for r in task_runs], options.conditions)
        for name, path in options.models.items():
            read_model_rdm(name, path, conditions)
        found.append(task)
    if not found:
        raise UserError(f"no selected task's events have a {options.conditions} column, whose values are RSA's "
                        f"conditions (tasks: {', '.join(sorted(runs_by_task(runs)))})", path=runs[0].events,
                        fix="Name the events column of the conditions with --conditions, or select another --task")
    return found


def plan_models(runs: list[Run], specs: tuple[str, ...], registry: Registry, required: bool = True,
                stimuli_dir: Path | None = None) -> list[tuple[str, str, Registered]]:
    """Which (task, spec) pairs to fit: an extractor applies to a task whose runs all hold its modality.

    With ``required``, an extractor that fits no task is an error (encoding); decoding only
    adds features where they apply.
    """
    plan = []
    for spec in specs:
        extractor, entry = instantiate(spec, registry)
        tasks = []
        for task, task_runs in runs_by_task(runs).items():
            having = [r for r in task_runs if stimuli_for(extractor.modality, r.modalities)]
            if having and len(having) < len(task_runs):
                lacking = next(r for r in task_runs if not stimuli_for(extractor.modality, r.modalities))
                raise UserError(
                    f"feature extractor '{entry.name}' needs {extractor.modality} stimuli, which other runs of task "
                    f"'{task}' have but this run's events lack",
                    path=lacking.events, fix="Add the stimulus column to this events file, or leave the run out with --run",
                )
            for run in having:  # the sounds and movies it will read: readable, and as long as their events
                source = stimuli_for(extractor.modality, run.modalities)
                check_media(stimuli_from_events(run.events, stimuli_dir)[source], run.events)
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
