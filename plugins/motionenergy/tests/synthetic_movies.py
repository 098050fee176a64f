"""Small synthetic H.264 movies written with PyAV: drifting gratings with a known direction and timing.

A module with its own name (not conftest) so that tests can import it beside other plugins' conftests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

WIDTH, HEIGHT, FPS, SECONDS = 64, 48, 15, 4
CYCLES = 4  # per frame height: a 12-pixel period at 48 pixels high
DRIFT_HZ = 2.0  # temporal frequency of the drift: 24 pixels per second


def grating(t: float, direction: int) -> np.ndarray:
    """A vertical sine grating at time ``t`` drifting rightward (``direction`` 1) or leftward (-1), ``H x W x 3``."""
    x = np.arange(WIDTH) / HEIGHT  # in frame heights, as pymoten measures
    row = 128 + 100 * np.sin(2 * np.pi * (CYCLES * x - direction * DRIFT_HZ * t))
    return np.repeat(np.broadcast_to(row, (HEIGHT, WIDTH))[..., None], 3, axis=2).round().astype(np.uint8)


def write_movie(path: Path, frames, fps: int = FPS) -> Path:
    """Frames (``H x W x 3`` uint8) to an H.264 (yuv420p) MP4 at ``fps``, nearly lossless."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "4", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def drift_then_still(direction: int, moving_seconds: float = SECONDS / 2) -> list[np.ndarray]:
    """The grating drifting for ``moving_seconds``, then frozen where it stopped until the end."""
    times = np.arange(SECONDS * FPS) / FPS
    return [grating(min(t, moving_seconds), direction) for t in times]
