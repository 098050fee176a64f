"""Motion energy of movies: spatio-temporal Gabor filters (Nishimoto et al. 2011), computed with pymoten.

The extractor ``motionenergy`` reads the movies that a run's events name in
``stim_file`` and gives, for each movie, the log-compressed energy of a pyramid
of spatio-temporal Gabor filters (quadrature pairs at several spatial and
temporal frequencies, directions of motion and positions tiling the frame), one
column per filter, sampled at ``fps`` frames per second (or averaged down to
``rate`` Hz).

Frames are decoded one at a time and rescaled in FFmpeg to a small frame
(``size``, 96 pixels wide by default), converted to CIE L* luminance as pymoten
does, and projected on the pyramid in chunks of :data:`CHUNK_SECONDS` with an
overlap of one temporal filter length on each side, so memory holds one chunk,
never the movie, and the result equals pymoten's single pass over the whole clip.
"""

from __future__ import annotations

import math
from functools import lru_cache
from importlib import metadata
from typing import Iterable, Iterator

import numpy as np

from bids_encoding.plugin_api import FeatureExtractor, FeatureSet, Option, UserError, Video, hookimpl, str_list, track

CHUNK_SECONDS = 120.0
"""Seconds of frames projected at once: long, because pymoten rebuilds its filter bank at each call and its matrix
products run well below their speed on a few hundred frames (measured: 3 chunks of 900 frames took 2.5 times as long
as one pass over 2,700); 1,800 frames of 96 x 54 are 75 MB in float64."""
DEFAULT_DIRECTIONS = "0,45,90,135,180,225,270,315"


def float_list(raw: str) -> list[float]:
    """``"0,2,4"`` -> ``[0.0, 2.0, 4.0]``."""
    return [float(v) for v in str_list(raw)]


def frame_size(raw: str) -> tuple[int, int]:
    """``"96"`` (width; height from the movie) -> ``(96, 0)``; ``"96x72"`` -> ``(96, 72)``."""
    parts = str(raw).lower().replace(" ", "").split("x")
    if len(parts) > 2 or not all(p.isdigit() for p in parts):
        raise ValueError("write the width in pixels (96) or width x height (96x72)")
    width, height = int(parts[0]), int(parts[1]) if len(parts) == 2 else 0
    if width < 8 or (len(parts) == 2 and height < 8):
        raise ValueError("frames need at least 8 pixels a side")
    return width, height


# --------------------------------------------------------------------------- computation


@lru_cache(maxsize=4)
def pyramid_for(height: int, width: int, fps: int, temporal_frequencies: tuple[float, ...],
                spatial_frequencies: tuple[float, ...], spatial_directions: tuple[float, ...],
                filter_temporal_width: int | str = "auto"):
    """pymoten's motion energy pyramid for frames of ``height x width`` pixels at ``fps``."""
    import moten

    return moten.get_default_pyramid(vhsize=(height, width), fps=fps, temporal_frequencies=list(temporal_frequencies),
                                     spatial_frequencies=list(spatial_frequencies),
                                     spatial_directions=list(spatial_directions),
                                     filter_temporal_width=filter_temporal_width)


def luminance(frame: np.ndarray) -> np.ndarray:
    """An ``H x W x 3`` uint8 RGB frame as CIE L* (0-100), pymoten's conversion (``moten.io.imagearray2luminance``)."""
    from moten.io import imagearray2luminance

    return imagearray2luminance(frame, dtype=np.float64)[0]


def temporal_pad(pyramid) -> int:
    """Frames of context each side of a chunk: the filters' length minus one (a filter centred on frame ``t`` reads
    at most half its length away; pymoten pads its own temporal batches by the same amount)."""
    return max(int(pyramid.definition.filter_temporal_width) - 1, 0)


def project(pyramid, frames: np.ndarray, log: bool) -> np.ndarray:
    """pymoten's motion energy of ``n x H x W`` luminance frames (float64 throughout: the filters' sums cancel
    over thousands of pixels, which float32 would turn into noise under the log), as ``n x n_filters``."""
    from moten.utils import log_compress

    return pyramid.project_stimulus_batched(frames, dtype="float64",
                                            output_nonlinearity=log_compress if log else (lambda x: x))


def stream_energy(pyramid, frames: Iterable[np.ndarray], log: bool = True,
                  chunk: int = 1800) -> Iterator[np.ndarray]:
    """Motion energy of a stream of luminance frames, ``chunk`` frames at a time (``chunk x n_filters`` blocks, the
    last one shorter), equal to :func:`project` on all the frames at once.

    Each chunk is projected with :func:`temporal_pad` frames of context on each side (fewer at the ends of the
    stream, as in one pass), so only about ``chunk + 2 * pad`` frames are ever held."""
    pad = temporal_pad(pyramid)
    buffer: list[np.ndarray] = []  # frames from absolute index `first` on
    first = done = 0  # first buffered frame; first frame whose output is not yet given
    for frame in frames:
        buffer.append(frame)
        if first + len(buffer) >= done + chunk + pad:  # the chunk [done, done + chunk) has its context after it
            start = max(done - pad, 0)
            window = np.stack(buffer[start - first:done + chunk + pad - first])
            yield project(pyramid, window, log)[done - start:done - start + chunk]
            done += chunk
            keep = max(done - pad, 0)
            del buffer[:keep - first]
            first = keep
    if first + len(buffer) > done:  # the rest: the stream's end is the window's end
        start = max(done - pad, 0)
        yield project(pyramid, np.stack(buffer[start - first:]), log)[done - start:]


def average_bins(blocks: Iterable[np.ndarray], fps: float, rate: float) -> np.ndarray:
    """Frame-rate rows (consecutive blocks) averaged to ``rate`` Hz: sample ``k`` is the mean of the frames within half
    a sample of ``k / rate`` s, so that it stays centred on its time (the first sample averages half a bin)."""
    if rate == fps:
        return np.concatenate([block.astype(np.float32) for block in blocks])
    done: list[np.ndarray] = []
    open_sum, open_bin, open_count, seen = None, 0, 0, 0
    for block in blocks:
        bins = np.floor(np.arange(seen, seen + len(block)) * rate / fps + 0.5 + 1e-9).astype(int)
        seen += len(block)
        starts = np.flatnonzero(np.r_[True, np.diff(bins) != 0])
        sums, counts = np.add.reduceat(block, starts, axis=0), np.diff(np.r_[starts, len(block)])
        for index, (value, count) in enumerate(zip(sums, counts)):
            if open_sum is not None and bins[starts[index]] == open_bin:
                open_sum, open_count = open_sum + value, open_count + count
                continue
            if open_sum is not None:
                done.append((open_sum / open_count).astype(np.float32))
            open_sum, open_bin, open_count = value, bins[starts[index]], count
    if open_sum is not None:
        done.append((open_sum / open_count).astype(np.float32))
    return np.stack(done) if done else np.zeros((0, 0), np.float32)


def column_names(pyramid) -> list[str]:
    """One name per filter from its parameters: spatial frequency (cycles per frame height), temporal frequency (Hz),
    pymoten's ``direction`` (degrees), centre (x from 0 at the left to the aspect ratio, y from 0 at the top to 1)
    and the Gaussian envelope's s.d. (frame heights; it tells apart the zero-frequency filters that share a centre)."""
    p = pyramid.parameters
    return [f"sf{sf:g}-tf{tf:g}-dir{d:g}-x{x:.3f}-y{y:.3f}-sd{sd:.3g}"
            for sf, tf, d, x, y, sd in zip(p["spatial_freq"], p["temporal_freq"], p["direction"], p["centerh"],
                                           p["centerv"], p["spatial_env"])]


# --------------------------------------------------------------------------- the extractor


class MotionEnergy(FeatureExtractor):
    """Spatio-temporal Gabor motion energy of movies (pymoten), one column per filter, streamed in chunks."""

    name = "motionenergy"
    modality = "video"
    description = ("Motion energy of movies: log energy of a pyramid of spatio-temporal Gabor filters "
                   "(Nishimoto et al. 2011, pymoten) on small luminance frames, one column per filter")
    options = {
        "fps": Option(15, "frames per second analysed (an integer; the filters' time base and the output rate)",
                      type=int),
        "size": Option("96", "frame size analysed: width in pixels (height from the movie's aspect ratio), or WxH",
                       type=str),
        "temporal_frequencies": Option("0,2,4", "temporal frequencies of the filters (Hz)", type=str),
        "spatial_frequencies": Option("0,2,4,8,16", "spatial frequencies (cycles per frame height)", type=str),
        "spatial_directions": Option(DEFAULT_DIRECTIONS, "directions of motion (degrees; 0 rightward, 90 upward)",
                                     type=str),
        "filter_temporal_width": Option(0, "length of the temporal filters in frames (0: pymoten's 2/3 s)", type=int),
        "log": Option(True, "log-compress the energies, log(x + 1e-5), as Nishimoto et al. 2011 and pymoten do"),
        "rate": Option(0.0, "output rate in Hz, averaging frames (0: fps); e.g. 1 for fMRI", type=float),
    }

    # ------------------------------------------------------------------ options

    def settings(self) -> dict:
        """Every option checked and parsed, before any movie is read."""
        fps = int(self.fps)
        if fps < 2:
            raise UserError(f"fps={self.fps} is too low for motion energy", fix="Use fps=15 (the default) or more")
        try:
            width, height = frame_size(self.size)
        except ValueError as exc:
            raise UserError(f"size={self.size} is not a frame size ({exc})",
                            fix="Use e.g. size=96 or size=96x72") from None
        lists = {}
        for key in ("temporal_frequencies", "spatial_frequencies", "spatial_directions"):
            try:
                values = tuple(float_list(getattr(self, key)))
            except ValueError:
                values = ()
            if not values or not all(np.isfinite(v) and v >= 0 for v in values):
                raise UserError(f"{key}={getattr(self, key)} is not a list of numbers of 0 or more",
                                fix=f"Write them separated by commas, e.g. {key}={self.options[key].default}")
            lists[key] = values
        if max(lists["temporal_frequencies"]) >= fps / 2:
            raise UserError(f"temporal_frequencies={self.temporal_frequencies} reaches half the frame rate "
                            f"(fps={fps}): such filters alias", fix=f"Keep temporal frequencies below {fps / 2:g} Hz, "
                                                                    "or raise fps")
        temporal_width = int(self.filter_temporal_width)
        if temporal_width < 0 or temporal_width == 1:
            raise UserError(f"filter_temporal_width={temporal_width} frames cannot hold a temporal filter",
                            fix="Use 0 (pymoten's 2/3 s) or at least 2 frames")
        if int(fps * 2 / 3) < 2 and temporal_width == 0:
            raise UserError(f"at fps={fps} pymoten's filters last fewer than 2 frames", fix="Use fps=15 or more")
        rate = float(self.rate) or float(fps)
        if not (np.isfinite(rate) and 0 < rate <= fps):
            raise UserError(f"rate={self.rate} must be above 0 and at most fps={fps} (it averages frames)",
                            fix="Use e.g. rate=1 for fMRI, or rate=0 for one sample per frame")
        return dict(fps=fps, width=width, height=height, rate=rate, log=bool(self.log),
                    filter_temporal_width=temporal_width or "auto", **lists)

    def analysed_size(self, movies: Video, width: int, height: int) -> tuple[int, int]:
        """The analysed frame size: given, or ``width`` wide with the first movie's aspect ratio (every movie is
        rescaled to it, so that all share one pyramid)."""
        if height:
            return width, height
        info = movies.info(0)
        return width, max(8, int(round(width * info.height / info.width)))

    # ------------------------------------------------------------------ extraction

    def clip_energy(self, movies: Video, index: int, pyramid, size: tuple[int, int], s: dict,
                    chunk: int) -> tuple[np.ndarray, int]:
        """One movie's motion energy at ``s["rate"]`` (``n_samples x n_filters``), and how many frames were read."""
        count = 0

        def frames() -> Iterator[np.ndarray]:
            nonlocal count
            for _, frame in movies.frames(index, s["fps"], size=size):
                count += 1
                yield luminance(frame)

        seconds = movies.clip_duration(index) or movies.info(index).duration
        blocks = track(stream_energy(pyramid, frames(), s["log"], chunk),
                       f"{self.name}: movie {index + 1} of {len(movies)} ({movies.path[index].name})",
                       total=math.ceil(seconds * s["fps"] / chunk), unit="chunks")
        return average_bins(blocks, s["fps"], s["rate"]), count

    def extract(self, stimuli: Video) -> FeatureSet:
        s = self.settings()
        width, height = self.analysed_size(stimuli, s["width"], s["height"])
        if max(s["spatial_frequencies"]) >= height / 2:
            raise UserError(f"spatial_frequencies={self.spatial_frequencies} reaches half the analysed frame height "
                            f"({height} pixels): such filters alias",
                            fix=f"Keep spatial frequencies below {height / 2:g} cycles per frame height, or raise size")
        pyramid = pyramid_for(height, width, s["fps"], s["temporal_frequencies"], s["spatial_frequencies"],
                              s["spatial_directions"], s["filter_temporal_width"])
        chunk = max(1, int(round(CHUNK_SECONDS * s["fps"])))
        clips, frames_read = [], []
        for index in range(len(stimuli)):
            energy, n_frames = self.clip_energy(stimuli, index, pyramid, (width, height), s, chunk)
            clips.append(energy)
            frames_read.append(n_frames)
        definition = pyramid.definition
        info = {"MotionEnergy": {
            "Filters": int(pyramid.nfilters),
            "Pyramid": {"TemporalFrequencies": list(s["temporal_frequencies"]),
                        "SpatialFrequencies": list(s["spatial_frequencies"]),
                        "SpatialDirections": list(s["spatial_directions"]),
                        "FilterTemporalWidthFrames": int(definition.filter_temporal_width),
                        "AspectRatio": float(definition.aspect_ratio)},
            "FrameSize": [width, height], "FramesPerSecond": s["fps"], "Rate": s["rate"],
            "Averaging": None if s["rate"] == s["fps"] else "mean of the frames within half a sample of each sample",
            "Log": s["log"], "Luminance": "CIE L* (pymoten's rgb2lab) of frames rescaled by FFmpeg",
            "FramesRead": frames_read, "Pymoten": metadata.version("pymoten"),
        }}
        return FeatureSet.continuous(stimuli, clips, s["rate"], columns=column_names(pyramid), **info)


@hookimpl
def register_feature_extractors(register):
    register(MotionEnergy)
