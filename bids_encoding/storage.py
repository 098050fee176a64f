"""Where outputs go: check that the output and work folders can be written before any work, and turn a full,
over-quota, read-only or forbidden disk into one clear error naming the folder.

Every failed run removes the folders it created, so the output folder is left as it was.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from pathlib import Path

from .derivatives import STATE_DIR
from .errors import UserError


def check_writable(config) -> list[Path]:
    """Fail before any work when the output or work folder cannot be written (read-only disk or mount, no
    permission, no space), naming the folder. Returns the folders it created, for a failed run to remove."""
    created: list[Path] = []
    for folder in (config.output_dir / STATE_DIR, config.work_dir):
        missing = [p for p in [folder, *folder.parents] if not p.exists()]
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=folder).close()
        except OSError as exc:
            where = next(p for p in [folder, *folder.parents] if p.exists())  # the folder we could not write into
            remove_if_empty(created + missing)
            raise (storage_error(config, str(exc), exc.errno, folder=where)
                   or UserError(f"cannot write here: {exc.strerror or exc}", path=where,
                                fix="Choose an OUTPUT_DIR (and --work-dir) where this user can create folders and files")
                   ) from None
        created += missing
    return created


def storage_error(config, text: str, code: int | None = None, folder: Path | None = None) -> UserError | None:
    """A UserError for a full, over-quota, read-only or forbidden disk, from an OSError's errno or a failed
    node's traceback text (``[Errno 28] ...``); None for any other error."""
    full, unwritable = (errno.ENOSPC, errno.EDQUOT), (errno.EROFS, errno.EACCES, errno.EPERM)
    # "[Errno 28] No space left on device: '/out/x.nii.gz'" (a copy names its source, then its target)
    matches = [m for m in re.finditer(r"\[Errno (\d+)\][^\n]*?(?:'([^'\n]+)')?$", text, re.MULTILINE)
               if int(m.group(1)) in full + unwritable and code in (None, int(m.group(1)))]
    if code is None and matches:
        code = int(matches[0].group(1))
    if code not in full + unwritable:
        return None
    if folder is None:  # the deepest of our folders holding the file named, else the one on the fullest disk
        named_file = Path(matches[0].group(2)) if matches and matches[0].group(2) else None
        candidates = [f for f in (config.work_dir, config.output_dir, config.feature_cache) if f]
        named = [f for f in candidates if named_file and named_file.is_relative_to(f)]
        folder = max(named, key=lambda f: len(f.parts)) if named else min(candidates, key=free_space)
    if code in full:
        fix = ("Free some space on that disk (or give an OUTPUT_DIR or --work-dir on a larger one), then run the same "
               "command again: finished steps are reused")
    else:
        fix = ("Choose a folder this user can write to (a container's output mount must not be read-only), "
               "or make it writable")
    return UserError(f"cannot write here: {os.strerror(code).lower()}; no derivative was written and the output folder "
                     "was left as it was", path=folder, fix=fix)


def free_space(folder: Path) -> float:
    existing = next((p for p in [folder, *folder.parents] if p.exists()), folder)
    try:
        return shutil.disk_usage(existing).free
    except OSError:
        return float("inf")


def remove_if_empty(folders: list[Path]) -> None:
    """Remove the folders a failed run created, innermost first, where it left them empty."""
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        try:
            folder.rmdir()
        except OSError:
            pass
