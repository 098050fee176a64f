"""The audio features recover planted sounds: a modulator, an onset, a tone's band, at the right run times."""

from __future__ import annotations

import re

import numpy as np
import pytest
import soundfile
from scipy.signal import hilbert

from bids_encoding.plugin_api import Audio, UserError, extract_features, load_plugin
from bids_encoding_audio import Envelope, MelSpectrogram, amplitude_envelope, log_mel, lowpass_fir, sample_centres

SR = 16000


def seconds(duration: float, rate: float = SR) -> np.ndarray:
    return np.arange(int(round(duration * rate))) / rate


def wav(folder, name: str, samples: np.ndarray, rate: int = SR):
    path = folder / name
    soundfile.write(path, np.asarray(samples, np.float32), rate, subtype="FLOAT")
    return path


def audio(paths, onsets, durations=None) -> Audio:
    durations = np.zeros(len(paths)) if durations is None else np.asarray(durations, float)
    return Audio(onset=np.asarray(onsets, float), duration=durations, path=tuple(paths), source="test")


def modulator(t: np.ndarray) -> np.ndarray:
    """Slow amplitude modulation (3 Hz and 1.3 Hz), all in the envelope's pass band."""
    return 1 + 0.5 * np.sin(2 * np.pi * 3 * t) + 0.3 * np.sin(2 * np.pi * 1.3 * t + 1)


def am_tone(t: np.ndarray, start: float, carrier: float = 1000.0) -> np.ndarray:
    """An amplitude-modulated tone that starts at ``start`` s, silence before."""
    return 0.2 * modulator(t) * np.sin(2 * np.pi * carrier * t) * (t >= start)


def rise_time(features, level: float, after: float = -np.inf) -> float:
    """Run time of the first envelope sample from ``after`` on above half of ``level`` (the sound's at its start):
    the middle of the low-passed step."""
    values = features.spaces[""][:, 0]
    return float(features.onset[np.argmax((values > level / 2) & (features.onset >= after))])


def test_envelope_recovers_the_modulator_at_run_time(tmp_path):
    t = seconds(8.0)
    stimuli = audio([wav(tmp_path, "am.wav", am_tone(t, start=2.0))], onsets=[3.0])
    features = extract_features("envelope", stimuli)  # through the host's checks
    assert features.rate == 100 and features.columns == {"": ["envelope"]}
    assert len(features.onset) == 800 and np.allclose(np.diff(features.onset), 0.01)
    # the sound starts 2.0 s into the file, played from 3.0 s
    assert rise_time(features, 0.2 * modulator(2.0)) == pytest.approx(5.0, abs=0.011)
    file_time = features.onset - 3.0
    steady = (file_time > 2.2) & (file_time < 7.8)
    envelope = features.spaces[""][steady, 0]
    assert np.corrcoef(envelope, modulator(file_time[steady]))[0, 1] > 0.99
    assert envelope.mean() == pytest.approx(0.2 * modulator(file_time[steady]).mean(), rel=0.02)  # amplitude units


def test_two_events_in_a_run_get_their_own_sample_times(tmp_path):
    first = wav(tmp_path, "first.wav", am_tone(seconds(2.0), start=0.5))
    second = wav(tmp_path, "second.wav", am_tone(seconds(3.0, 22050), start=0.7), rate=22050)
    # the second event plays only 1.5 s of its 3 s file
    features = Envelope(rate=64).extract(audio([first, second], onsets=[1.0, 10.0], durations=[0, 1.5]))
    features.check(2)
    assert len(features.onset) == 128 + 96
    expected = np.concatenate([1.0 + np.arange(128) / 64, 10.0 + np.arange(96) / 64])
    assert np.allclose(features.onset, expected) and features.duration == pytest.approx(1 / 64)
    for start, sound in [(1.0, 0.5), (10.0, 0.7)]:
        assert rise_time(features, 0.2 * modulator(sound), after=start) == pytest.approx(start + sound, abs=1 / 64)


def test_onsets_peak_where_the_sound_starts(tmp_path):
    t = seconds(4.0)
    burst = 0.3 * np.random.default_rng(0).standard_normal(len(t)) * (t >= 1.3)
    features = Envelope(onsets=True).extract(audio([wav(tmp_path, "burst.wav", burst)], onsets=[0.0]))
    assert features.columns[""] == ["envelope", "onsets"]
    onsets = features.spaces[""][:, 1]
    assert features.onset[np.argmax(onsets)] == pytest.approx(1.3, abs=0.011)
    # before the sound only the Hilbert transform's 1 / t leakage (non-causal) and the low-pass's ringing remain
    assert onsets.min() >= 0 and onsets[features.onset < 1.2].max() < 1e-2 * onsets.max()


def test_compression_is_a_power_of_the_envelope(tmp_path):
    t = seconds(3.0)
    tone = wav(tmp_path, "tone.wav", 0.25 * np.sin(2 * np.pi * 440 * t))
    values = Envelope(compress=0.6).extract(audio([tone], onsets=[0.0])).spaces[""][50:250, 0]
    assert values == pytest.approx(0.25 ** 0.6, rel=1e-3)


def test_blockwise_envelope_equals_the_whole_file_computation():
    """Blocks of 0.3 s give the envelope of one Hilbert transform and one low-pass over the whole clip, silent
    around it (an FFT 8 times its length), to 1e-3 of its peak: broadband noise, the hardest case for the cuts."""
    t = seconds(6.0)
    x = (np.random.default_rng(1).standard_normal(len(t)) * modulator(t)).astype(np.float32)
    blocks = amplitude_envelope(x, SR, 100, 30, block_seconds=0.3)
    taps = lowpass_fir(30, 100, SR)
    smooth = np.convolve(np.abs(hilbert(x.astype(float), N=8 * len(x))[:len(x)]), taps, mode="same")
    reference = np.maximum(smooth[sample_centres(600, SR, 100)], 0)
    assert np.abs(blocks - reference).max() < 1e-3 * reference.max()


def band_centres(columns: list[str]) -> np.ndarray:
    return np.array([float(re.fullmatch(r"mel_([\d.]+)Hz", c).group(1)) for c in columns])


def test_melspectrogram_of_a_tone_peaks_in_its_band(tmp_path):
    tone = wav(tmp_path, "tone.wav", 0.5 * np.sin(2 * np.pi * 1000 * seconds(1.0)))
    features = extract_features("melspectrogram:n_mels=32", audio([tone], onsets=[0.0]))
    assert features.spaces[""].shape == (100, 32)
    centres = band_centres(features.columns[""])
    assert np.all(np.diff(centres) > 0) and centres[-1] < SR / 2
    peaks = features.spaces[""][5:95].argmax(axis=1)
    assert np.all(peaks == np.argmin(np.abs(centres - 1000)))


# a whole hop of 160 samples; a hop of 220.5 samples, where a rounded hop would be 4.5 frames off by 20 s
@pytest.mark.parametrize("rate, switch", [(16000, 1.0), (22050, 20.0)])
def test_melspectrogram_follows_a_tone_switch_to_the_frame(tmp_path, rate, switch):
    t = seconds(switch + 1.0, rate)
    tone = 0.5 * np.where(t < switch, np.sin(2 * np.pi * 500 * t), np.sin(2 * np.pi * 4000 * t))
    features = MelSpectrogram(fmax=8000).extract(audio([wav(tmp_path, "switch.wav", tone, rate)], onsets=[2.0]))
    centres = band_centres(features.columns[""])
    low, high = np.argmin(np.abs(centres - 500)), np.argmin(np.abs(centres - 4000))
    values = features.spaces[""]
    switched = features.onset[np.argmax(values[:, high] > values[:, low])]
    assert switched == pytest.approx(2.0 + switch, abs=0.011)  # played from 2.0 s
    assert np.all(values[features.onset < 1.98 + switch].argmax(axis=1) == low)
    assert np.all(values[features.onset > 2.02 + switch].argmax(axis=1) == high)


def test_blockwise_melspectrogram_equals_one_block():
    x = np.random.default_rng(2).standard_normal(SR * 3).astype(np.float32) * 0.1
    whole = log_mel(x, SR, 100, 32, 0.0, None, 0.025)
    blocks = log_mel(x, SR, 100, 32, 0.0, None, 0.025, block_seconds=0.25)
    assert whole.shape == (300, 32) and np.allclose(whole, blocks, atol=1e-3)


def test_found_by_its_entry_point_with_options():
    extractor, about = load_plugin("envelope:rate=64,onsets=true")
    assert isinstance(extractor, Envelope) and extractor.rate == 64 and extractor.onsets
    assert about["Distribution"] == "bids-encoding-audio" and about["Name"] == "envelope"
    extractor, _ = load_plugin("melspectrogram:n_mels=40;fmin=50;fmax=8000")
    assert isinstance(extractor, MelSpectrogram)
    assert (extractor.n_mels, extractor.fmin, extractor.fmax) == (40, 50, 8000)


@pytest.mark.parametrize("spec", ["envelope:rate=0", "envelope:rate=fast", "envelope:lowpass=60", "envelope:compress=0",
                                  "melspectrogram:n_mels=0", "melspectrogram:fmin=9000,fmax=8000",
                                  "melspectrogram:window=-1"])
def test_bad_options_are_user_errors(spec):
    with pytest.raises(UserError):
        load_plugin(spec)


def test_files_that_cannot_give_the_features_are_user_errors_naming_them(tmp_path):
    slow = wav(tmp_path, "slow.wav", np.zeros(300), rate=150)
    with pytest.raises(UserError, match="200 Hz") as caught:
        Envelope().extract(audio([slow], onsets=[0.0]))
    assert caught.value.path == str(slow)
    speech = wav(tmp_path, "speech.wav", np.zeros(SR))
    with pytest.raises(UserError, match="Nyquist") as caught:
        MelSpectrogram(fmax=10000).extract(audio([speech], onsets=[0.0]))
    assert caught.value.path == str(speech) and "20000 Hz" in caught.value.message
    music = wav(tmp_path, "music.wav", np.zeros(22050), rate=22050)
    with pytest.raises(UserError, match="fmax") as caught:
        MelSpectrogram().extract(audio([speech, music], onsets=[0.0, 5.0]))
    assert caught.value.path == str(music)
    with pytest.raises(UserError, match="empty") as caught:
        MelSpectrogram(n_mels=128, window=0.004).extract(audio([speech], onsets=[0.0]))
    assert caught.value.path == str(speech)
