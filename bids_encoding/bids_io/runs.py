"""What every run has, whatever was recorded: subject, task, events, the entities that name it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True, kw_only=True)
class Run:
    """One run of one task: its events and the BIDS entities that name it.

    :class:`~.fmri.BoldRun` and :class:`~.meeg.MEEGRun` add what their recordings need.
    """

    subject: str
    task: str
    events: Path
    session: str | None = None
    run: str | None = None
    modalities: tuple[str, ...] = ()  # the stimulus modalities its events hold (text, image, trials)
    entities: dict[str, Any] = field(default_factory=dict, compare=False)
