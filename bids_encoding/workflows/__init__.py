"""Nipype workflows: ``init_*_wf`` factories that wire the plain stage functions as nodes.

The same graph runs with Nipype's Linear, MultiProc or SLURM plugin.
"""

import os

os.environ.setdefault("NIPYPE_NO_ET", "1")  # no version check over the network

from .participant import init_participant_wf  # noqa: E402

__all__ = ["init_participant_wf"]
