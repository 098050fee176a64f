"""Movies for the tests, written once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from synthetic_movies import drift_then_still, write_movie


@pytest.fixture(scope="session")
def movies(tmp_path_factory) -> dict[str, Path]:
    """``right`` / ``left``: a grating drifting rightward / leftward for 2 s, then still for 2 s (64 x 48, 15 fps,
    4 s)."""
    folder = tmp_path_factory.mktemp("movies")
    return {"right": write_movie(folder / "right.mp4", drift_then_still(1)),
            "left": write_movie(folder / "left.mp4", drift_then_still(-1))}
