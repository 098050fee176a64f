"""Motion energy on small synthetic movies: motion vs stillness, direction, streaming = one pass, timing, errors."""

from __future__ import annotations

import re
from pathlib import Path

import moten
import numpy as np
import pytest
from synthetic_movies import FPS, SECONDS

import bids_encoding_motionenergy as me
from bids_encoding.plugin_api import UserError, Video, extract_features, load_plugin, stimuli_from_events

SMALL = "size=32;spatial_frequencies=0,2,4"  # 32 x 24 frames, 46 filters: fast, and the grating's 4 cycles are in it


def as_video(*paths: Path, onsets=None, durations=None) -> Video:
    n = len(paths)
    return Video(onset=np.asarray(onsets if onsets is not None else 10.0 * np.arange(n), float),
                 duration=np.asarray(durations if durations is not None else np.zeros(n), float), path=tuple(paths))


def parameters(columns: list[str]) -> dict[str, np.ndarray]:
    """Each filter's spatial frequency, temporal frequency and direction, read back from its column name."""
    found = [dict(re.findall(r"(sf|tf|dir)([\d.]+)", column)) for column in columns]
    return {key: np.array([float(f[key]) for f in found]) for key in ("sf", "tf", "dir")}


def halves(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frames well inside the drifting half and the still half (a filter lasts 2/3 s around its frame)."""
    return values[int(0.5 * FPS):int(1.5 * FPS)], values[int(2.7 * FPS):int(3.7 * FPS)]


def luminance_frames(movie: Path, fps: int, size: tuple[int, int]) -> np.ndarray:
    return np.stack([me.luminance(frame) for _, frame in as_video(movie).frames(0, fps, size=size)])


# --------------------------------------------------------------------------- known truths


def test_motion_energy_is_high_while_the_grating_drifts_and_drops_when_it_stops(movies):
    linear = extract_features(f"motionenergy:{SMALL};log=false", as_video(movies["right"]))
    p = parameters(linear.columns[""])
    moving = p["tf"] > 0
    drift, still = halves(linear.spaces[""])
    # all motion-tuned filters together: their energy falls when the motion stops
    assert drift[:, moving].sum(1).min() > 1.4 * still[:, moving].sum(1).max()
    # the filters tuned to the grating (4 cycles per height, 2 Hz) fall the most
    tuned = moving & (p["sf"] == 4) & (p["tf"] == 2)
    assert drift[:, tuned].mean() > 10 * still[:, tuned].mean()
    # the default log compression keeps the order
    logged = extract_features(f"motionenergy:{SMALL}", as_video(movies["right"])).spaces[""]
    np.testing.assert_allclose(logged, np.log(linear.spaces[""] + 1e-5), rtol=1e-5, atol=1e-5)


def test_rightward_and_leftward_drifts_excite_the_filters_of_their_direction(movies):
    """pymoten (0.1.3) tunes a filter with ``direction`` d to motion toward d + 180 degrees: rightward motion drives
    its 180-degree filters, leftward its 0-degree ones (measured here; see the README)."""
    features = extract_features(f"motionenergy:{SMALL};log=false", as_video(movies["right"], movies["left"]))
    p = parameters(features.columns[""])
    n = SECONDS * FPS
    right, left = halves(features.spaces[""][:n])[0], halves(features.spaces[""][n:])[0]
    motion = (p["tf"] > 0) & (p["sf"] > 0)
    towards_right, towards_left = motion & (p["dir"] == 180), motion & (p["dir"] == 0)
    assert right[:, towards_right].mean() > 5 * right[:, towards_left].mean()
    assert left[:, towards_left].mean() > 5 * left[:, towards_right].mean()
    # a vertical grating moving sideways leaves the vertical directions nearly silent
    assert right[:, motion & (p["dir"] == 90)].mean() < 0.01 * right[:, towards_right].mean()


def test_streamed_chunks_equal_one_pass_over_all_frames(movies):
    pyramid = me.pyramid_for(24, 32, FPS, (0.0, 2.0, 4.0), (0.0, 2.0, 4.0), tuple(range(0, 360, 45)))
    frames = luminance_frames(movies["right"], FPS, (32, 24))
    one_pass = pyramid.project_stimulus_batched(frames, dtype="float64")
    # pymoten's per-filter reference (float64 frames: the log of small energies needs it) agrees
    np.testing.assert_allclose(one_pass, pyramid.project_stimulus(frames, dtype="float64"), rtol=1e-9, atol=1e-9)
    assert me.temporal_pad(pyramid) == 9
    for chunk in (1, 7, 10, 23, 59, 60, 500):  # shorter than the pad, odd sizes, the whole clip and more
        streamed = np.concatenate(list(me.stream_energy(pyramid, iter(frames), log=True, chunk=chunk)))
        np.testing.assert_allclose(streamed, one_pass, rtol=1e-12, atol=1e-10, err_msg=f"chunk={chunk}")


def test_the_extractor_streams_in_chunks_to_the_same_features(movies, monkeypatch):
    video = as_video(movies["right"], movies["left"])
    whole = extract_features(f"motionenergy:{SMALL}", video)  # 4 s clips: one chunk each
    monkeypatch.setattr(me, "CHUNK_SECONDS", 0.4)  # 6 frames: ten chunks per clip
    chunked = extract_features(f"motionenergy:{SMALL}", video)
    np.testing.assert_allclose(chunked.spaces[""], whole.spaces[""], rtol=1e-6, atol=1e-6)


def test_samples_start_at_each_events_onset_at_the_output_rate(movies):
    video = as_video(movies["right"], movies["left"], onsets=[12.5, 40.0], durations=[0.0, 3.0])
    frames = extract_features(f"motionenergy:{SMALL}", video)
    n_right, n_left = SECONDS * FPS, 3 * FPS  # the whole file; the event's 3 s
    assert frames.rate == FPS and frames.spaces[""].shape[0] == n_right + n_left
    np.testing.assert_allclose(frames.onset, np.r_[12.5 + np.arange(n_right) / FPS, 40.0 + np.arange(n_left) / FPS])
    np.testing.assert_allclose(frames.duration, 1 / FPS)

    averaged = extract_features(f"motionenergy:{SMALL};rate=5", video)
    k = np.floor(np.arange(n_right) * 5 / FPS + 0.5 + 1e-9).astype(int)  # frames within half a sample of k / 5 s
    expected = np.stack([frames.spaces[""][:n_right][k == b].mean(0) for b in range(k.max() + 1)])
    assert averaged.rate == 5 and averaged.info["MotionEnergy"]["Rate"] == 5
    np.testing.assert_allclose(averaged.spaces[""][:len(expected)], expected, rtol=1e-5, atol=1e-5)
    n_averaged = len(expected) + int(np.floor((n_left - 1) * 5 / FPS + 0.5)) + 1
    np.testing.assert_allclose(averaged.onset, np.r_[12.5 + np.arange(len(expected)) / 5,
                                                     40.0 + np.arange(n_averaged - len(expected)) / 5])


def test_defaults_use_pymotens_default_pyramid_and_say_its_size(movies):
    features = extract_features("motionenergy", as_video(movies["right"]))
    info = features.info["MotionEnergy"]
    default = moten.get_default_pyramid(vhsize=(72, 96), fps=15)  # 96 wide, the movie's 4:3
    assert info["FrameSize"] == [96, 72] and info["FramesPerSecond"] == 15 and info["Log"] is True
    assert info["Filters"] == default.nfilters == features.spaces[""].shape[1] == len(features.columns[""])
    assert info["Pyramid"]["FilterTemporalWidthFrames"] == 10 and info["FramesRead"] == [SECONDS * FPS]
    assert len(set(features.columns[""])) == default.nfilters


# --------------------------------------------------------------------------- the plugin as the app finds it


def test_found_through_its_entry_point_with_its_options():
    extractor, about = load_plugin("motionenergy:fps=10;spatial_directions=0,90,180,270;log=false")
    assert isinstance(extractor, me.MotionEnergy) and extractor.modality == "video"
    assert extractor.fps == 10 and extractor.spatial_directions == "0,90,180,270" and extractor.log is False
    assert about["Name"] == "motionenergy" and about["Distribution"] == "bids-encoding-motionenergy"


def test_a_runs_events_hand_it_the_movies_they_name(movies, tmp_path):
    """As the app does: an events file whose stim_file names a movie under stimuli/ gives Video stimuli."""
    stimuli_dir = tmp_path / "stimuli"
    stimuli_dir.mkdir()
    (stimuli_dir / "clip.mp4").write_bytes(movies["left"].read_bytes())
    events = tmp_path / "sub-01_task-movie_events.tsv"
    events.write_text("onset\tduration\tstim_file\n6.0\t2.0\tclip.mp4\n", encoding="utf-8")
    video = stimuli_from_events(events, stimuli_dir)["video"]
    features = extract_features(f"motionenergy:{SMALL};rate=1", video)
    np.testing.assert_allclose(features.onset, [6.0, 7.0, 8.0])  # 2 s: samples at 0, 1 and 2 s (half bins at ends)


@pytest.mark.parametrize("spec, words", [
    ("motionenergy:fps=1", "fps=1"),
    ("motionenergy:size=big", "size=big"),
    ("motionenergy:size=4", "size=4"),
    ("motionenergy:rate=30", "rate=30"),
    ("motionenergy:temporal_frequencies=0,8", "half the frame rate"),
    ("motionenergy:size=32;spatial_frequencies=0,2,16", "half the analysed frame height"),
    ("motionenergy:spatial_directions=left", "spatial_directions=left"),
    ("motionenergy:filter_temporal_width=1", "filter_temporal_width=1"),
])
def test_bad_options_are_user_errors(movies, spec, words):
    with pytest.raises(UserError, match=re.escape(words)) as caught:
        extract_features(spec, as_video(movies["right"]))
    assert caught.value.fix


def test_an_option_of_the_wrong_type_is_a_user_error():
    with pytest.raises(UserError, match="fps"):
        load_plugin("motionenergy:fps=fast")
