"""``run_app(argv)``: the BIDS App from the command line to committed derivatives.

argv -> :class:`~bids_encoding.config.RunConfig` (:mod:`.parser`, :mod:`bids_encoding.config`)
-> :class:`~bids_encoding.plan.Plan` (every input checked, :mod:`bids_encoding.plan`)
-> Nipype graph (:mod:`bids_encoding.workflows`) -> run and commit (:mod:`bids_encoding.runner`).

Errors a user can cause end as one paragraph on stderr and exit status 2 (with the
traceback only under ``-v``); the output folder is touched only after every input check
passed, and derivatives appear only when the whole run succeeded.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from .parser import build_parser, parse_run_args

log = logging.getLogger("bids_encoding")


def setup_logging(verbose: int) -> None:
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


def run_app(argv: list[str]) -> int:
    """``bids-encoding BIDS_DIR OUTPUT_DIR {participant,group} [options]``."""
    from ..config import config_from_args
    from ..plan import make_plan
    from ..runner import run_workflow
    from ..workflows import init_workflow

    config = config_from_args(parse_run_args(build_parser(), argv))
    setup_logging(config.verbose)
    started = time.monotonic()
    plan = make_plan(config)

    def build(stage: Path):
        return init_workflow(plan, stage)

    n_written = run_workflow(config, build, plan.description)
    log.info("%s level finished in %.1f s: %d files written under %s", config.analysis_level,
             time.monotonic() - started, n_written, config.output_dir)
    return 0
