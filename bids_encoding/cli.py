"""``main()``: turn argv into a RunConfig, check inputs, build and run the workflow, commit outputs.

Errors a user can cause end as one paragraph on stderr and exit status 2 (with
the traceback only under ``-v``); the output folder is touched only after every
input check passed, and derivatives appear only when the whole run succeeded.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from . import __version__
from .errors import UserError
from .parser import COMMANDS, build_command_parser, build_parser

log = logging.getLogger("bids_encoding")
# real GloVe vectors and a real pretrained language model (all-MiniLM-L6-v2), both shipped on PyPI: offline
DEFAULT_DEMO_FEATURES = ("wordrate", "wordlength", "glove", "minilm:layers=4", "trialtype")


def _setup_logging(verbose: int) -> None:
    """Our log lines on stderr; Nipype's own handler quieter unless -v (and not printed twice)."""
    logging.basicConfig(level=logging.DEBUG if verbose > 1 else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s", datefmt="%H:%M:%S", force=True)
    from nipype import config as nipype_config, logging as nipype_logging

    # Nipype logs a failing node's traceback at ERROR; our CLI reports the cause itself, so without -v keep it quiet
    level = "INFO" if verbose else "CRITICAL"
    nipype_config.update_config({"logging": {"workflow_level": level, "interface_level": level, "utils_level": level}})
    nipype_logging.update_logging(nipype_config)
    logging.getLogger("nipype").propagate = False
    for noisy in ("matplotlib", "PIL", "bidsschematools"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    """The console entry point of ``bids-encoding`` and ``python -m bids_encoding``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = sum(a.count("v") for a in argv if a.startswith("-") and set(a[1:]) == {"v"}) + argv.count("--verbose")
    try:
        if argv and argv[0] in COMMANDS:
            return run_command(argv[0], argv[1:])
        return run_app(argv)
    except UserError as exc:
        if verbose:
            traceback.print_exc()
        print(f"bids-encoding: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("bids-encoding: interrupted; the output folder was left as it was", file=sys.stderr)
        return 130


# ---------------------------------------------------------------- helper commands

def run_command(command: str, argv: list[str]) -> int:
    args = build_command_parser(command).parse_args(argv)
    _setup_logging(args.verbose)
    if command == "plugins":
        return list_plugins(as_json=args.json)
    from .example import write_example_dataset

    if command == "example":
        path = write_example_dataset(args.dir, n_subjects=args.n_subjects, seed=args.seed)
        print(f"Example dataset written to {path}")
        return 0
    return run_demo(args.dir, tuple(args.features or DEFAULT_DEMO_FEATURES), args.n_cpus)


def list_plugins(as_json: bool = False) -> int:
    from .plugin_manager import installed_plugins

    rows = []
    for entry in (e for of_kind in installed_plugins().values() for _, e in sorted(of_kind.items())):
        name = entry.name
        rows.append({
            "name": name, "distribution": entry.distribution, "version": entry.version, "kind": entry.kind,
            "modality": entry.cls.modality, "description": entry.cls.description,
            "options": {k: {"default": o.default, "help": o.help} for k, o in entry.cls.options.items()},
        })
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print("No plugins installed. Install one, e.g. pip install bids-encoding-lexical")
        return 0
    for row in rows:
        print(f"{row['name']:<14} {row['kind']:<18} {row['modality']:<7} {row['distribution']} {row['version']}")
        if row["description"]:
            print(f"{'':<14} {row['description']}")
        for key, option in row["options"].items():
            print(f"{'':<14}   {key}={option['default']!r}  {option['help']}")
    return 0


def run_demo(folder: Path, features: tuple[str, ...], n_cpus: int) -> int:
    """Write the example dataset, then run participant and group levels on its preprocessed derivatives."""
    from .example import atlas_path, write_example_dataset

    folder = Path(folder)
    bids_dir = folder / "bids"
    if not (bids_dir / "dataset_description.json").exists():
        write_example_dataset(bids_dir)
    output_dir = folder / "derivatives" / "bids-encoding"
    common = [str(bids_dir), str(output_dir)]
    options = ["--derivatives", str(bids_dir / "derivatives" / "fmriprep"), "--features", *features,
               "--n-cpus", str(n_cpus), "--work-dir", str(folder / "work")]
    atlas = ["--atlas", str(atlas_path(bids_dir))] if atlas_path(bids_dir).exists() else []  # region tables
    for level, extra in (("participant", atlas), ("group", [])):
        status = run_app(common + [level] + options + extra)
        if status:
            return status
    print(f"\nDemo finished.\n  example dataset: {bids_dir}\n  derivatives:     {output_dir}\n"
          f"  reports:         {', '.join(str(p) for p in sorted(output_dir.glob('*.html')))}")
    return 0


# ---------------------------------------------------------------- the BIDS App

def run_app(argv: list[str]) -> int:
    from .config import config_from_args, parse_run_args

    config = config_from_args(parse_run_args(build_parser(), argv))
    _setup_logging(config.verbose)
    from .bids_io import check_dataset

    description = check_dataset(config.bids_dir)
    started = time.monotonic()
    if config.analysis_level == "participant":
        build = _participant_workflow(config)
    else:
        build = _group_workflow(config)
    n_written = _run_workflow(config, build, description)
    log.info("%s level finished in %.1f s: %d files written under %s", config.analysis_level,
             time.monotonic() - started, n_written, config.output_dir)
    return 0


def _participant_workflow(config):
    from .bids_io import load_layout, validate_dataset
    from .plugin_manager import installed_plugins
    from .plugin_manager import instantiate
    from .workflows.participant import decoding_tasks, embedding_tasks, plan_models

    if not config.skip_bids_validation:
        validate_dataset(config.bids_dir)
    registry = installed_plugins()
    if not config.features and config.analysis == "encoding":
        known = ", ".join(sorted(registry["feature extractor"])) or "none installed"
        raise UserError("no --features given, so there is nothing to model", path=config.bids_dir,
                        fix=f"Name at least one feature extractor with --features (installed: {known})")
    layout = load_layout(config.bids_dir, config.derivatives)
    subjects = list(config.participant_label) or layout.get_subjects()
    runs = {s: _subject_runs(config, layout, s) for s in subjects}
    for subject_runs in runs.values():  # every spec, task and contrast checked before anything runs
        plan_models(subject_runs, config.features, registry, required=config.analysis == "encoding")
        _check_trim(config, subject_runs)
        if config.analysis == "decoding":
            decoding_tasks(subject_runs, config.decode)
        if config.analysis == "embedding":
            embedding_tasks(subject_runs, config.decode, config.samples)
    for spec in config.embedding_options()["embedders"] if config.analysis == "embedding" else ():
        instantiate(spec, registry, "brain embedder")

    def build(stage: Path):
        from nipype.pipeline import engine as pe

        from .workflows import init_participant_wf

        wf = pe.Workflow(name="bids_encoding_wf")
        provenance = _provenance(config)
        wf.add_nodes([init_participant_wf(config, s, r, registry, stage, provenance) for s, r in runs.items()])
        return wf

    return build


def _check_trim(config, runs) -> None:
    """--trim (encoding of BOLD runs) must leave volumes to fit in every run."""
    for run in runs if config.analysis == "encoding" else ():
        n_volumes = getattr(run, "n_volumes", None)  # EEG/MEG recordings have none to trim
        if n_volumes is not None and n_volumes - sum(config.trim) < 2:
            raise UserError(f"--trim {config.trim[0]} {config.trim[1]} leaves {max(n_volumes - sum(config.trim), 0)} "
                            f"of this run's {n_volumes} volumes", path=run.bold,
                            fix="Trim fewer volumes: at least 2 must remain in every run")


def _subject_runs(config, layout, subject: str):
    """The subject's BOLD runs, or EEG/MEG recordings (``--datatype``, else the first of func, eeg, meg it has)."""
    from .bids_io import collect_bold_runs, collect_meeg_runs, datatypes_present

    datatype = config.datatype
    if datatype is None:
        present = datatypes_present(layout, subject) if subject in layout.get_subjects() else []
        datatype = present[0] if present else "func"
    if datatype == "func":
        return collect_bold_runs(layout, subject, tasks=config.task, sessions=config.session, runs=config.run,
                                 space=config.space, use_derivatives=bool(config.derivatives), filters=config.bids_filters)
    if config.analysis == "embedding":
        raise UserError(f"sub-{subject} has no BOLD runs, and --analysis embedding works on fMRI only",
                        path=config.bids_dir, fix="Use --analysis encoding or decoding on EEG/MEG recordings")
    if subject not in layout.get_subjects():
        raise UserError(f"subject '{subject}' is not in the dataset (subjects: {', '.join(layout.get_subjects())})",
                        path=config.bids_dir, fix="Check --participant-label")
    return collect_meeg_runs(layout, subject, datatype, tasks=config.task, sessions=config.session, runs=config.run,
                             filters=config.bids_filters)


def _group_workflow(config):
    from .group import GroupOptions, check_group_inputs, collect_participant_outputs

    inputs = collect_participant_outputs(config.output_dir, config.participant_label, config.task)
    check_group_inputs(inputs, config.output_dir, config.participant_label)
    GroupOptions.from_dict(config.group_options())

    def build(stage: Path):
        from .workflows.group import init_group_wf

        wf = init_group_wf(inputs, stage, config.group_options(), _provenance(config),
                           {"": config.output_dir.as_uri()})  # bids:: = this dataset
        wf.name = "bids_encoding_group_wf"
        return wf

    return build


def _provenance(config) -> dict:
    return {"Version": __version__, "Command": "bids-encoding " + " ".join(sys.argv[1:]), "Seed": config.seed,
            "Config": config.to_json()}


class NodeLog:
    """Nipype status callback: one log line per finished step, with its wall time."""

    def __init__(self):
        self.started: dict[str, float] = {}

    def __call__(self, node, status: str) -> None:
        name = node.fullname.replace("bids_encoding_wf.", "")
        if status == "start":
            self.started[name] = time.monotonic()
        elif status == "end" and not name.rsplit(".", 1)[-1].startswith("_") \
                and not name.endswith(("inputnode", "outputnode", "merge_outputs")):
            started = self.started.pop(name, None)
            log.info("done: %s%s", name, f" ({time.monotonic() - started:.1f} s)" if started else "")


def _user_name() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # no passwd entry, e.g. a container run with an arbitrary uid
        return str(os.getuid())


def _nipype_runner(config):
    """The Nipype execution plugin, made before anything runs: a wrong name or argument is the user's error, not a crash."""
    from nipype.pipeline import plugins

    plugin = getattr(plugins, f"{config.nipype_plugin}Plugin", None)
    if plugin is None:
        known = ", ".join(n[: -len("Plugin")] for n in dir(plugins) if n.endswith("Plugin") and n != "Plugin")
        raise UserError(f"there is no Nipype plugin called '{config.nipype_plugin}'", fix=f"Give --nipype-plugin one of: {known}")
    try:
        return plugin(plugin_args={"status_callback": NodeLog(), **config.nipype_plugin_args})
    except Exception as exc:
        raise UserError(f"the Nipype plugin {config.nipype_plugin} does not accept --nipype-plugin-args "
                        f"{json.dumps(config.nipype_plugin_args, default=str)} ({type(exc).__name__}: {exc})",
                        fix="Correct --nipype-plugin-args, e.g. '{\"n_procs\": 4}' for MultiProc") from None


def _run_workflow(config, build, description) -> int:
    """Run the workflow into a staging folder and commit it; on failure, report and leave outputs as they were."""
    from nipype import config as nipype_config

    from .derivatives import BIDSIGNORE, dataset_description, dataset_links, staging, write_json
    from .storage import check_writable, remove_if_empty, storage_error
    from .workflows.interfaces import ERROR_DIR_VARIABLE

    created = check_writable(config)
    nipype_config.update_config({
        "execution": {"crashdump_dir": str(config.work_dir / "crash"), "stop_on_first_crash": True,
                      "crashfile_format": "txt", "remove_unnecessary_outputs": False, "hash_method": "content",
                      # Nipype's graph viewer (index.html, graph.json) would be rewritten by every run sharing the work dir
                      "create_report": False,
                      # local plugins need no 2 s pause between polls; schedulers (SLURM, ...) keep Nipype's default
                      "poll_sleep_duration": 0.1 if config.nipype_plugin in ("Linear", "MultiProc") else 2},
        "monitoring": {"enabled": False},
    })
    if not os.environ.get("LOGNAME"):  # Nipype's SLURM plugin names jobs after it (KeyError without it)
        os.environ["LOGNAME"] = _user_name()
    succeeded = False
    errors = None
    try:
        errors = Path(tempfile.mkdtemp(prefix="errors-", dir=config.work_dir))
        os.environ[ERROR_DIR_VARIABLE] = str(errors)
        with staging(config.output_dir) as stage:
            workflow = build(stage)
            workflow.base_dir = str(config.work_dir)
            runner = _nipype_runner(config)
            try:
                workflow.run(plugin=runner)
            except Exception as exc:
                messages = sorted({json.loads(p.read_text())["message"] for p in errors.glob("*.json")})
                if messages:
                    raise UserError(" ".join(messages)) from None
                storage = storage_error(config, str(exc))
                if storage:
                    raise storage from None
                first_line = str(exc).splitlines()[0] if str(exc) else ""
                raise UserError(
                    f"a processing step failed ({type(exc).__name__}: {first_line})",
                    path=config.work_dir / "crash",
                    fix="This is likely a bug: the crash file there holds the details; please report it with that file",
                ) from None
            links = dataset_links(config.bids_dir, config.derivatives)
            write_json(stage / "dataset_description.json", dataset_description(config.bids_dir, description, links))
            (stage / ".bidsignore").write_text(BIDSIGNORE)
            n_files = sum(1 for p in stage.rglob("*") if p.is_file())
        succeeded = True
        return n_files
    except OSError as exc:  # outside the nodes: the work dir, staging, the commit
        storage = storage_error(config, str(exc), exc.errno)
        if storage is None:
            raise
        raise storage from None
    finally:
        os.environ.pop(ERROR_DIR_VARIABLE, None)
        if errors:
            shutil.rmtree(errors, ignore_errors=True)
        if not succeeded:
            remove_if_empty(created)
