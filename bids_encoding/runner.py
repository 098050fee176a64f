"""Runs a workflow: Nipype's execution plugin, a staging folder committed only on success, and the user-error channel.

A :class:`~bids_encoding.errors.UserError` raised inside a node (which may run in another
process, or on another machine under SLURM) is written by :func:`reporting_user_errors`
into the folder named by ``BIDS_ENCODING_ERROR_DIR``; :func:`run_workflow` reads it back
and raises it as one clear paragraph instead of Nipype's crash report. Both ends of that
channel live here. Disks that are full, over quota or read-only become one message
naming the folder (:mod:`.storage`), and the output folder is left as it was.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable

from .config import RunConfig
from .derivatives import BIDSIGNORE, dataset_description, dataset_links, staging, write_json
from .errors import UserError
from .storage import check_writable, remove_if_empty, storage_error

log = logging.getLogger("bids_encoding")
ERROR_DIR_VARIABLE = "BIDS_ENCODING_ERROR_DIR"


def reporting_user_errors(run_interface):
    """Decorate a Nipype interface's ``_run_interface`` so that its user errors reach the CLI from any process."""

    @functools.wraps(run_interface)
    def wrapper(self, runtime):
        try:
            return run_interface(self, runtime)
        except UserError as exc:
            folder = os.environ.get(ERROR_DIR_VARIABLE)
            if folder:
                Path(folder).mkdir(parents=True, exist_ok=True)
                (Path(folder) / f"{uuid.uuid4().hex}.json").write_text(json.dumps({"message": exc.message}))
            raise

    return wrapper


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


def nipype_runner(config: RunConfig):
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


def _configure_nipype(config: RunConfig) -> None:
    from nipype import config as nipype_config

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


def _failure(config: RunConfig, errors: Path, exc: Exception) -> UserError:
    """What a failed workflow tells the user: the nodes' user errors, a disk problem, or where the crash file is."""
    messages = sorted({json.loads(p.read_text())["message"] for p in errors.glob("*.json")})
    if messages:
        return UserError(" ".join(messages))
    storage = storage_error(config, str(exc))
    if storage:
        return storage
    first_line = str(exc).splitlines()[0] if str(exc) else ""
    crash = sorted((config.work_dir / "crash").glob("crash-*"), key=lambda p: p.stat().st_mtime)
    return UserError(
        f"a processing step failed with an error the app does not recognise ({type(exc).__name__}: {first_line})",
        path=crash[-1] if crash else config.work_dir / "crash",
        fix="The crash file holds the step, its inputs and the traceback; if the inputs look right, report it to the "
            "bids-encoding developers with that file (rerun with -v to print the traceback here)",
    )


def run_workflow(config: RunConfig, build: Callable[[Path], object], description: dict) -> int:
    """Build the workflow into a staging folder, run it and commit it; on failure, report and leave outputs as they
    were. Returns the number of files written."""
    created = check_writable(config)
    _configure_nipype(config)
    succeeded = False
    errors = None
    try:
        errors = Path(tempfile.mkdtemp(prefix="errors-", dir=config.work_dir))
        os.environ[ERROR_DIR_VARIABLE] = str(errors)
        with staging(config.output_dir) as stage:
            workflow = build(stage)
            workflow.base_dir = str(config.work_dir)
            runner = nipype_runner(config)
            try:
                workflow.run(plugin=runner)
            except Exception as exc:
                raise _failure(config, errors, exc) from None
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
