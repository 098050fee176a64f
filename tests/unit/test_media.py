"""Media stimuli (audio, video) and continuous features: reading, timing, resampling, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bids_encoding import features as feature_store
from bids_encoding.errors import UserError
from bids_encoding.fmri.design import tr_features
from bids_encoding.stimuli.media import iter_frames, video_info
from bids_encoding.meeg.preprocessing import feature_design
from bids_encoding.models.signal import lanczos_resample, resample_signal
from bids_encoding.plugin_api import FeatureExtractor, FeatureSet, Option
from bids_encoding.plugins.registry import instantiate
from bids_encoding.stimuli import Audio, Video, check_media, stimuli_from_events

from ..conftest import registry_with

RATE = 16000
FPS = 10


def write_wav(path: Path, seconds: float, tone: float = 440.0, rate: int = RATE) -> Path:
    import soundfile

    t = np.arange(int(seconds * rate)) / rate
    soundfile.write(str(path), 0.5 * np.sin(2 * np.pi * tone * t), rate, subtype="PCM_16")
    return path


def write_movie(path: Path, n_frames: int, fps: int = FPS, faststart: bool = False) -> Path:
    """A movie whose frame k is uniformly grey at level 2 * k (so a frame says which one it is)."""
    import av

    with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {}) as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "0"})
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv444p"
        for k in range(n_frames):
            frame = np.full((24, 32, 3), 2 * k, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def events_file(folder: Path, rows: list[dict]) -> Path:
    path = folder / "sub-01_task-x_events.tsv"
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False, na_rep="n/a")
    return path


@pytest.fixture
def stimuli_dir(tmp_path):
    folder = tmp_path / "stimuli"
    folder.mkdir()
    return folder


def test_events_naming_media_give_audio_and_video_played_from_their_onsets(stimuli_dir, tmp_path):
    write_wav(stimuli_dir / "a.wav", 3.0)
    write_movie(stimuli_dir / "m.mp4", 30)
    events = events_file(tmp_path, [{"onset": 2.0, "duration": 1.5, "stim_file": "a.wav"},
                                    {"onset": 5.0, "duration": 0.0, "stim_file": "m.mp4"}])
    found = stimuli_from_events(events, stimuli_dir)
    assert set(found) == {"audio", "video"}
    audio, video = found["audio"], found["video"]
    samples, rate = audio.read(0)
    assert rate == RATE and len(samples) == int(1.5 * RATE)  # cut at the event's duration
    assert abs(np.sqrt(np.mean(samples ** 2)) - 0.5 / np.sqrt(2)) < 0.01
    resampled, rate = audio.read(0, rate=8000)
    assert rate == 8000 and len(resampled) == int(1.5 * 8000)
    frames = list(video.frames(0, fps=4))  # duration 0: the whole 3 s file
    assert [t for t, _ in frames] == pytest.approx(np.arange(12) / 4)
    # the frame on screen at t is native frame floor(t * 10), grey level 2 * k
    levels = [float(f.mean()) for _, f in frames]
    assert levels == pytest.approx([2 * int(np.floor(t * FPS + 1e-9)) for t, _ in frames], abs=1.5)
    small = next(iter(video.frames(0, fps=1, size=(16, 12))))[1]
    assert small.shape == (12, 16, 3)


@pytest.mark.parametrize("problem", ["shorter", "unreadable", "truncated_video", "no_video", "codec"])
def test_media_errors_name_the_file_and_the_fix(stimuli_dir, tmp_path, problem):
    if problem == "shorter":
        write_wav(stimuli_dir / "a.wav", 2.0)
        rows, expected = [{"onset": 0.0, "duration": 3.0, "stim_file": "a.wav"}], "lasts 2.00 s"
    elif problem == "unreadable":
        (stimuli_dir / "a.wav").write_bytes(b"not a sound" * 20)
        rows, expected = [{"onset": 0.0, "duration": 0.0, "stim_file": "a.wav"}], "cannot be read"
    elif problem == "truncated_video":  # the header survives (faststart), half the frames do not
        data = write_movie(tmp_path / "full.mp4", 50, faststart=True).read_bytes()
        (stimuli_dir / "m.mp4").write_bytes(data[: len(data) // 2])
        rows, expected = [{"onset": 0.0, "duration": 0.0, "stim_file": "m.mp4"}], "truncated"
    elif problem == "no_video":
        write_wav(stimuli_dir / "sound.wav", 1.0)
        (stimuli_dir / "m.mp4").write_bytes((stimuli_dir / "sound.wav").read_bytes())
        rows, expected = [{"onset": 0.0, "duration": 0.0, "stim_file": "m.mp4"}], "no video stream"
    else:  # a Matroska file whose codec id FFmpeg does not know
        import av

        with av.open(str(tmp_path / "v.mkv"), "w") as container:
            stream = container.add_stream("mpeg4", rate=FPS)
            stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
            for k in range(5):
                container.mux(stream.encode(av.VideoFrame.from_ndarray(np.full((24, 32, 3), k, np.uint8), format="rgb24")))
            container.mux(stream.encode(None))
        data = (tmp_path / "v.mkv").read_bytes()
        assert b"V_MPEG4/ISO/ASP" in data
        (stimuli_dir / "m.mkv").write_bytes(data.replace(b"V_MPEG4/ISO/ASP", b"V_XXXXX/ISO/ASP"))
        rows, expected = [{"onset": 0.0, "duration": 0.0, "stim_file": "m.mkv"}], "codec"
    events = events_file(tmp_path, rows)
    found = stimuli_from_events(events, stimuli_dir)  # headers are read only when an extractor needs the media
    with pytest.raises(UserError) as error:
        media = next(iter(found.values()))
        check_media(media, events)
        list(media.frames(0, 2.0))  # decoding finds what the header hides
    message = str(error.value)
    assert expected in message and rows[0]["stim_file"] in message and error.value.fix


def test_continuous_features_keep_each_sample_s_time_across_events():
    clips = Audio(onset=np.array([1.0, 10.0]), duration=np.zeros(2), path=(Path("a"), Path("b")))
    features = FeatureSet.continuous(clips, [np.ones((3, 2)), 2 * np.ones((2, 2))], rate=4.0, columns=["x", "y"])
    features.check(len(clips))
    assert features.onset == pytest.approx([1.0, 1.25, 1.5, 10.0, 10.25])
    assert features.rate == 4.0 and features.columns == {"": ["x", "y"]}
    with pytest.raises(ValueError, match="one array per event"):
        FeatureSet.continuous(clips, [np.ones((3, 2))], rate=4.0)
    broken = FeatureSet(onset=features.onset, duration=features.duration, spaces={"": np.ones((4, 2))}, rate=4.0)
    with pytest.raises(ValueError, match="n_samples"):
        broken.check(len(clips))


def test_resampling_keeps_slow_signals_removes_what_the_new_rate_cannot_hold_and_keeps_time():
    rate, seconds = 100.0, 120.0
    t = np.arange(int(rate * seconds)) / rate
    slow, fast = np.sin(2 * np.pi * 0.2 * t), np.sin(2 * np.pi * 30.0 * t)
    out = resample_signal(t, np.column_stack([slow, fast]), rate, int(seconds * 8), 8.0)
    inner = slice(16, -16)
    expected = np.sin(2 * np.pi * 0.2 * np.arange(int(seconds * 8)) / 8.0)
    assert np.abs(out[inner, 0] - expected[inner]).max() < 0.02  # in time, not shifted
    assert np.abs(out[inner, 1]).max() < 0.02  # 30 Hz is above 4 Hz: filtered, not aliased
    # Lanczos to a 2 s grid averages: a constant stays constant, a 1 Hz wave vanishes
    averaged = lanczos_resample(t, np.column_stack([np.ones_like(t), np.sin(2 * np.pi * t)]), rate, 60, 2.0)
    assert np.abs(averaged[4:-4, 0] - 1).max() < 0.01 and np.abs(averaged[4:-4, 1]).max() < 0.01


def test_a_continuous_boxcar_gives_the_design_of_the_same_event():
    """A sound on from 20 to 26 s sampled at 50 Hz is, on the TR grid, the event (onset 20, duration 6)."""
    rate, tr, n_scans = 50.0, 2.0, 60
    t = np.arange(int(n_scans * tr * rate)) / rate
    on = ((t >= 20) & (t < 26)).astype(float)[:, None]
    continuous = FeatureSet(onset=t, duration=np.full(len(t), 1 / rate), spaces={"": on}, rate=rate)
    event = FeatureSet(onset=np.array([20.0]), duration=np.array([6.0]), spaces={"": np.ones((1, 1))})
    hrf, expected = (tr_features(f, "", n_scans, tr, "hrf")[:, 0] for f in (continuous, event))
    assert np.abs(hrf - expected).max() < 0.03 * expected.max()  # the same time course, the same scale
    # Lanczos: the sound's share of the time around each volume (1 while it plays), centred on its middle (23 s)
    fir = tr_features(continuous, "", n_scans, tr, "fir")[:, 0]
    assert fir[11:13] == pytest.approx([1.0, 1.0], abs=0.07) and np.abs(fir[:8]).max() < 0.02
    assert np.sum(fir * np.arange(n_scans) * tr) / fir.sum() == pytest.approx(23.0, abs=0.1)
    # on an M/EEG grid (100 Hz) the sound is on from sample 2000 to 2600
    grid = feature_design(continuous, "", 4000, 100.0)[:, 0]
    on_samples = np.flatnonzero(grid > grid.mean())
    assert abs(on_samples[0] - 2000) <= 2 and abs(on_samples[-1] - 2599) <= 2


class MeanLuminance(FeatureExtractor):
    """An image's mean grey level (what the test movie's frames encode)."""

    name = "luminance"
    modality = "image"
    options = {"scale": Option(1.0, "multiplier")}
    batches: list = []

    def extract(self, stimuli):
        from PIL import Image

        MeanLuminance.batches.append(len(stimuli))
        values = [[np.asarray(Image.open(p).convert("L"), float).mean() * self.scale] for p in stimuli.path]
        return FeatureSet.single(stimuli, np.array(values), ["luminance"])


@pytest.fixture
def registry():
    MeanLuminance.batches.clear()
    with registry_with(MeanLuminance) as found:
        yield found


def test_any_image_extractor_reads_a_movie_at_the_fps_the_host_adds(registry, stimuli_dir, tmp_path):
    write_movie(stimuli_dir / "m.mp4", 100)  # 10 s
    events = events_file(tmp_path, [{"onset": 3.0, "duration": 8.0, "stim_file": "m.mp4"}])
    extractor, _ = instantiate("luminance:fps=5;scale=2", registry)
    assert extractor.fps == 5.0 and extractor.get_options() == {"scale": 2.0}
    found, provenance = feature_store.extract("luminance:fps=5;scale=2", events, stimuli_dir, registry,
                                              cache_dir=tmp_path / "cache")
    assert found.rate == 5.0 and provenance["Options"] == {"scale": 2.0, "fps": 5.0}
    assert found.onset == pytest.approx(3.0 + np.arange(40) / 5)  # 8 s of the movie from its onset
    frame = np.floor(np.arange(40) / 5 * FPS + 1e-9)
    assert found.spaces[""][:, 0] == pytest.approx(2 * 2 * frame, abs=3)  # the frames in order, none skipped
    assert MeanLuminance.batches == [feature_store.FRAME_BATCH, 40 - feature_store.FRAME_BATCH]
    again, _ = feature_store.extract("luminance:fps=5;scale=2", events, stimuli_dir, registry, cache_dir=tmp_path / "cache")
    assert again.rate == 5.0 and len(MeanLuminance.batches) == 2  # from the cache, rate included
    with pytest.raises(UserError, match="fps"):
        instantiate("luminance:fps=0", registry)


def test_plugins_lists_the_fps_option_of_image_extractors_and_the_new_modalities():
    listing = subprocess.run([sys.executable, "-m", "bids_encoding", "plugins", "--json"], capture_output=True,
                             text=True, check=True)
    rows = {row["name"]: row for row in json.loads(listing.stdout)}
    assert "fps" in rows["cnn"]["options"] and "fps" not in rows["wordrate"]["options"]


def test_media_headers_are_read_without_decoding(stimuli_dir):
    movie = write_movie(stimuli_dir / "m.mp4", 25)
    info = video_info(movie)
    assert (info.rate, info.width, info.height) == (FPS, 32, 24) and info.duration == pytest.approx(2.5)
    assert len(list(iter_frames(movie, fps=2, duration=1.0))) == 2
    assert isinstance(Video(onset=np.zeros(1), duration=np.zeros(1), path=(movie,)).info(0).rate, float)
