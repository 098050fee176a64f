"""Reading audio and video stimuli: headers for the checks, samples and frames for the extractors.

Audio is read with soundfile (libsndfile: WAV, FLAC, OGG, MP3), and with PyAV (FFmpeg) for what
libsndfile cannot decode; video with PyAV, one frame at a time, so that an hour of video never sits
in memory at full resolution. Every failure a user can cause (a truncated or unreadable file, a
codec that is not available, a video without frames) is a :class:`UserError` naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import UserError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov")


@dataclass(frozen=True)
class MediaInfo:
    """What a media file's header says: its duration (s), its rate (audio samples or video frames per second), and a
    video's frame size."""

    duration: float
    rate: float
    width: int = 0
    height: int = 0


def _unreadable(path: Path, exc: Exception, kind: str) -> UserError:
    return UserError(f"the {kind} file cannot be read ({type(exc).__name__}: {exc})", path=path,
                     fix=f"Replace it with a complete, readable {kind} file (re-export or re-encode it, e.g. with ffmpeg "
                         "to WAV or H.264 MP4), or correct stim_file in the events file")


def _av():
    import av

    return av


def _codec_missing(path: Path, exc: Exception | str) -> UserError:
    return UserError(f"the file uses a codec that the installed FFmpeg (PyAV) cannot decode ({exc})", path=path,
                     fix="Re-encode it with a common codec (H.264 video in MP4, or WAV/FLAC audio), e.g. "
                         "ffmpeg -i IN -c:v libx264 OUT.mp4")


def audio_info(path: str | Path) -> MediaInfo:
    """Duration and sampling rate of an audio file, from its header."""
    import soundfile

    path = Path(path)
    try:
        info = soundfile.info(str(path))
        if info.frames <= 0 or info.samplerate <= 0:
            raise ValueError("no samples")
        return MediaInfo(duration=info.frames / info.samplerate, rate=float(info.samplerate))
    except (RuntimeError, ValueError, soundfile.LibsndfileError):
        pass
    with _open_container(path, "audio") as container:
        stream = _first_stream(container, "audio", path)
        duration = _stream_duration(container, stream)
        if not duration or not stream.rate:
            raise UserError("the audio file has no samples", path=path, fix="Replace it with a complete audio file")
        return MediaInfo(duration=duration, rate=float(stream.rate))


def read_audio(path: str | Path, duration: float | None = None) -> tuple[np.ndarray, float]:
    """The first ``duration`` seconds (all when None) of an audio file as mono float32 samples in [-1, 1], and the
    file's sampling rate; channels are averaged."""
    import soundfile

    path = Path(path)
    try:
        with soundfile.SoundFile(str(path)) as handle:
            rate = float(handle.samplerate)
            frames = handle.frames if duration is None else min(handle.frames, int(round(duration * rate)))
            samples = handle.read(frames, dtype="float32", always_2d=True)
        if len(samples) < frames:
            raise UserError(f"the audio file is truncated: its header promises {frames} samples, {len(samples)} "
                            "could be read", path=path, fix="Replace it with a complete copy of the file")
        return (samples[:, 0] if samples.shape[1] == 1 else samples.mean(axis=1)), rate
    except (RuntimeError, soundfile.LibsndfileError):
        return _read_audio_av(path, duration)


def _read_audio_av(path: Path, duration: float | None) -> tuple[np.ndarray, float]:
    av = _av()
    with _open_container(path, "audio") as container:
        stream = _first_stream(container, "audio", path)
        rate = float(stream.rate)
        limit = None if duration is None else int(round(duration * rate))
        chunks, n = [], 0
        try:
            for frame in container.decode(stream):
                block = frame.to_ndarray()
                block = block.reshape(-1, block.shape[-1]) if frame.format.is_planar else \
                    block.reshape(-1, len(frame.layout.channels)).T
                if block.dtype.kind in "iu":
                    block = block / float(np.iinfo(block.dtype).max)
                chunks.append(block.mean(axis=0).astype(np.float32))
                n += chunks[-1].shape[0]
                if limit is not None and n >= limit:
                    break
        except av.error.FFmpegError as exc:
            raise _unreadable(path, exc, "audio") from None
    if not chunks:
        raise UserError("the audio file has no samples", path=path, fix="Replace it with a complete audio file")
    samples = np.concatenate(chunks)
    return (samples if limit is None else samples[:limit]), rate


def _open_container(path: Path, kind: str):
    av = _av()
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise _unreadable(path, exc, kind) from None


def _first_stream(container, kind: str, path: Path):
    """The container's first audio or video stream, one FFmpeg can decode."""
    streams = container.streams.audio if kind == "audio" else container.streams.video
    if not streams:
        fix = ("Point stim_file at an audio file, or at a video with a sound track" if kind == "audio"
               else "Point stim_file at a video file (MP4, MKV, AVI, MOV)")
        raise UserError(f"the file holds no {kind} stream", path=path, fix=fix)
    if streams[0].codec_context is None:
        raise _codec_missing(path, "the stream's codec is unknown to it")
    return streams[0]


def _stream_duration(container, stream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # av.time_base
    return 0.0


def video_info(path: str | Path) -> MediaInfo:
    """Duration, frame rate and frame size of a video file, from its header."""
    path = Path(path)
    with _open_container(path, "video") as container:
        stream = _first_stream(container, "video", path)
        rate = float(stream.average_rate or stream.base_rate or 0)
        duration = _stream_duration(container, stream)
        if not duration and stream.frames and rate:
            duration = stream.frames / rate
        if not duration or not rate:
            raise UserError("the video has no frames (or its header gives no duration or frame rate)", path=path,
                            fix="Replace it with a complete video file")
        return MediaInfo(duration=duration, rate=rate, width=stream.codec_context.width,
                         height=stream.codec_context.height)


def iter_frames(path: str | Path, fps: float, duration: float | None = None,
                size: tuple[int, int] | None = None) -> Iterator[tuple[float, np.ndarray]]:
    """The video's frames sampled at ``fps`` (the frame on screen at ``k / fps`` seconds), as ``(time, height x width
    x 3 uint8 RGB)`` pairs, for its first ``duration`` seconds (all when None). ``size`` (width, height) rescales them
    in FFmpeg, before they reach Python. Decoded one by one, so memory holds one frame."""
    av = _av()
    path = Path(path)
    info = video_info(path)
    end = info.duration if duration is None else duration
    targets = iter(np.arange(int(np.floor(end * fps + 1e-9))) / fps)
    target = next(targets, None)
    last, last_time, yielded = None, 0.0, 0
    with _open_container(path, "video") as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        # a stream may start after 0 (its first timestamp): the movie starts with its first frame
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        try:
            for frame in container.decode(stream):
                time = float(frame.time) - start if frame.time is not None else 0.0
                while target is not None and time > target + 1e-6 and last is not None:
                    yield target, last
                    yielded += 1
                    target = next(targets, None)
                if target is None:
                    break
                last, last_time = _rgb(frame, size), time
        except av.error.FFmpegError as exc:
            if isinstance(exc, getattr(av.error, "DecoderNotFoundError", ())):
                raise _codec_missing(path, exc) from None
            raise _unreadable(path, exc, "video") from None
        if target is not None and last is not None and last_time < end - 2.0 / info.rate - 0.05:
            raise UserError(f"the video is truncated: its frames stop at {last_time:.2f} s, but it should last "
                            f"{end:.2f} s", path=path, fix="Replace it with a complete copy of the file")
        while target is not None and last is not None:  # the last frame stays on screen to the end
            yield target, last
            yielded += 1
            target = next(targets, None)
    if not yielded:
        raise UserError("the video has no frames to decode", path=path, fix="Replace it with a complete video file")


def _rgb(frame, size: tuple[int, int] | None) -> np.ndarray:
    if size is None:
        return frame.to_ndarray(format="rgb24")
    return frame.reformat(width=size[0], height=size[1], format="rgb24").to_ndarray()


def resample_audio(samples: np.ndarray, rate: float, target: float) -> np.ndarray:
    """Samples at ``rate`` brought to ``target`` Hz by polyphase filtering (anti-aliased when going down)."""
    if abs(rate - target) < 1e-9:
        return samples
    from scipy.signal import resample_poly

    exact = float(rate).is_integer() and float(target).is_integer()
    ratio = Fraction(int(target), int(rate)) if exact else Fraction(target / rate).limit_denominator(1000)
    return resample_poly(samples, ratio.numerator, ratio.denominator).astype(np.float32)
