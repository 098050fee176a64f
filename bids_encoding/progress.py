"""Progress of long steps: a bar on a terminal, a few plain log lines anywhere else.

Fitting, searchlights, feature extraction and training can run for minutes. On a
terminal (stderr is a TTY, in the main process) a tqdm bar shows how far a step
is. Anywhere else (a CI log, a file, a Nipype MultiProc worker, a SLURM job) the
step writes plain lines through the ``bids_encoding`` logger instead: one each
time another tenth of the work is done, or after a minute without one, so a log
never fills with thousands of lines. Either way the step ends with one summary
line, ``<step>: done in X s``.

Steps that finish within ``BIDS_ENCODING_PROGRESS_SECONDS`` (default 5 s) stay
quiet: no bar, no lines, and the summary only at debug level, so that short fits
do not repeat what Nipype's per-node line already says.

Usage::

    for chunk in track(chunks, "ridge fit", unit="chunk"):
        ...

    with Step("sae training", total=max_epochs, unit="epoch") as step:
        for epoch in ...:
            ...
            step.update()
        step.note = "stopped early"
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import time
from typing import Iterable, Iterator, TypeVar

log = logging.getLogger("bids_encoding")
T = TypeVar("T")

QUIET_SECONDS_VARIABLE = "BIDS_ENCODING_PROGRESS_SECONDS"
HEARTBEAT_SECONDS = 60.0  # a line at least this often while a step advances too slowly for 10 % steps
FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"


def quiet_seconds() -> float:
    """How long a step runs before it shows progress (``$BIDS_ENCODING_PROGRESS_SECONDS``, default 5)."""
    try:
        return max(0.0, float(os.environ.get(QUIET_SECONDS_VARIABLE, 5.0)))
    except ValueError:
        return 5.0


def on_terminal() -> bool:
    """A bar only where a person watches: stderr is a TTY, and this is not a worker process of a pool."""
    stream = sys.stderr
    return (bool(getattr(stream, "isatty", lambda: False)()) and os.environ.get("TERM") != "dumb"
            and multiprocessing.parent_process() is None)


def _ensure_handler() -> None:
    """Where nobody configured logging (a SLURM job, a spawned worker), our lines still reach stderr."""
    if not log.hasHandlers():
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(FORMAT, datefmt="%H:%M:%S"))
        log.addHandler(handler)
        if log.level == logging.NOTSET:
            log.setLevel(logging.INFO)


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 600 else f"{value / 60:.1f} min"


class Step:
    """One long step: ``update()`` as work is done, and a summary line with its wall time at the end.

    ``total`` may be None (unknown); ``note`` is added to the summary (e.g. why it stopped early).
    """

    def __init__(self, desc: str, total: int | None = None, unit: str = "it"):
        self.desc, self.total, self.unit = desc, total, unit
        self.done = 0
        self.note = ""
        self.quiet = quiet_seconds()
        self._bar = None
        self._started = self._last_line = 0.0
        self._last_tenth = 0

    def __enter__(self) -> "Step":
        self._started = self._last_line = time.monotonic()
        _ensure_handler()
        if on_terminal():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, desc=self.desc, unit=self.unit, leave=False, delay=self.quiet,
                             file=sys.stderr, dynamic_ncols=True)
        return self

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._started < self.quiet:
            return
        tenth = int(10 * self.done / self.total) if self.total else 0
        if tenth > self._last_tenth or now - self._last_line >= HEARTBEAT_SECONDS:
            self._last_tenth, self._last_line = tenth, now
            log.info("%s: %s", self.desc, self._position(now))

    def _position(self, now: float) -> str:
        elapsed = now - self._started
        if not self.total:
            return f"{self.done} {self.unit} in {_seconds(elapsed)}"
        left = elapsed * (self.total - self.done) / self.done if self.done else float("nan")
        return (f"{self.done}/{self.total} {self.unit} ({100 * self.done / self.total:.0f} %), "
                f"{_seconds(elapsed)} elapsed, about {_seconds(left)} left")

    def __exit__(self, kind, value, traceback) -> None:
        if self._bar is not None:
            self._bar.close()
        if kind is not None:
            return
        wall = time.monotonic() - self._started
        level = logging.INFO if wall >= self.quiet else logging.DEBUG
        note = f" ({self.note})" if self.note else ""
        log.log(level, "%s: done in %s%s", self.desc, _seconds(wall), note)


def track(iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """Yield the items of ``iterable``, showing the progress of the loop as a :class:`Step`."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with Step(desc, total, unit) as step:
        for item in iterable:
            yield item
            step.update()
