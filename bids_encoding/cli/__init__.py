"""The command line: the BIDS-App parser (``parser``), the app (``app``), the helper commands
(``commands``) and the Boutiques descriptor generated from the parser (``descriptor``).

``main`` is the one place that turns a :class:`~bids_encoding.errors.UserError` into one
paragraph on stderr and its exit status.
"""

from __future__ import annotations

import sys
import traceback

from ..errors import UserError
from .app import run_app
from .commands import run_command
from .parser import COMMANDS

__all__ = ["main"]


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
