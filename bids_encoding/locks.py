"""File locks for runs that share one output folder (parallel jobs, one subject each).

``flock`` locks belong to an open file and vanish when their process dies, even by
SIGKILL: a killed run can never leave a lock held. A lock file may be removed by
its holder (to leave a folder as it was); whoever then wakes up holding the removed
file notices that the name now points elsewhere (or nowhere) and locks again.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator


def _is_current(handle: IO, path: Path) -> bool:
    """True while ``path`` still names the file ``handle`` has open (it was not removed or replaced)."""
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(handle.fileno())
    return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created with its folder if missing) for the block, waiting for others."""
    path = Path(path)
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            handle = open(path, "a")
        except FileNotFoundError:  # the folder was removed by a run that was leaving it as it found it: again
            continue
        fcntl.flock(handle, fcntl.LOCK_EX)
        if _is_current(handle, path):
            break
        handle.close()
    try:
        yield
    finally:
        handle.close()


def hold(path: Path) -> IO:
    """Create ``path`` and lock it for as long as the returned file stays open (a sign that its owner lives)."""
    handle = open(path, "a")
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return handle


def is_held(path: Path) -> bool:
    """True when a living process holds ``path`` (see :func:`hold`); a missing file is not held."""
    try:
        handle = open(path, "r")
    except FileNotFoundError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False
