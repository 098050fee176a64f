"""The one exception type for errors a user can cause.

The CLI prints its message as one paragraph and exits with status 2, without a
traceback. Every message names the file (when there is one), what is wrong and
what to do about it.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """An error the user can fix: bad input data, options or plugins."""

    exit_code = 2

    def __init__(self, problem: str, *, path: str | Path | None = None, fix: str | None = None):
        self.problem = problem.strip()
        self.path = str(path) if path is not None else None
        self.fix = fix.strip() if fix else None
        super().__init__(self.message)

    @property
    def message(self) -> str:
        parts = []
        if self.path:
            parts.append(f"{self.path}:")
        parts.append(self.problem.rstrip(".") + ".")
        if self.fix:
            parts.append(self.fix.rstrip(".") + ".")
        return " ".join(parts)
