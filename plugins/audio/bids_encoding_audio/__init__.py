"""Acoustic features of audio stimuli: the broadband amplitude envelope and a log-mel spectrogram.

Both extractors read each audio event's clip at the file's own rate (``Audio.read``) and return
continuous features at their ``rate`` option (Hz), one row per sample. Sample ``k`` of a clip
describes the sound around ``k / rate`` seconds after the clip's start: it is computed at the
audio sample nearest that time (``round(k * file_rate / rate)``), with a zero-phase filter or a
window centred there, so nothing is delayed and any ``rate`` works with any file rate (no
integer hop needed, no resampling of the audio). A clip of ``n`` audio samples gives
``ceil(n * rate / file_rate)`` rows: the times ``k / rate`` that fall inside it.

Long files are processed in blocks of :data:`BLOCK_SECONDS` with enough context on each side
that the result equals a whole-file computation (tests check this), so an hour of audio costs
its float32 samples plus a few tens of MB.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from bids_encoding.plugin_api import Audio, FeatureExtractor, FeatureSet, Option, UserError, hookimpl, track

BLOCK_SECONDS = 60.0
"""Seconds of audio computed at once (plus context): bounds memory whatever the file's length."""
HILBERT_GUARD_SECONDS = 1.0
"""Context on each side of a block for its Hilbert transform. The error a cut makes in the analytic
signal decays as 1 / distance; a second away it is far below the low-passed envelope's precision."""
STOPBAND_DB = 60.0
"""Attenuation of the envelope's anti-aliasing low-pass (Kaiser-window FIR) in its stop band."""
DEFAULT_LOWPASS = 30.0
"""Hz: envelope TRF studies keep the envelope below ~30 Hz (cortical tracking lives below ~10 Hz; Crosse
et al. 2016 low-pass and resample it to 64-128 Hz)."""
AMIN = 1e-10
"""Floor of the mel power before the log: digital silence reads -100 dB (re full scale), never -inf."""


def positive(raw: str) -> float:
    """A number above 0 (option parser)."""
    value = float(raw)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{raw} is not a positive number")
    return value


def optional_hz(raw: str) -> float | None:
    """A frequency in Hz, or ``none`` (option parser)."""
    if str(raw).strip().lower() in ("", "none", "nyquist"):
        return None
    value = float(raw)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{raw} is not a frequency in Hz")
    return value


def _option_error(name: str, problem: str, fix: str) -> UserError:
    return UserError(f"feature extractor '{name}': {problem}", fix=fix)


def sample_count(n_samples: int, file_rate: float, rate: float) -> int:
    """How many times ``k / rate`` fall inside a clip of ``n_samples`` at ``file_rate`` (at least one)."""
    return max(1, math.ceil(n_samples * rate / file_rate - 1e-9))


def sample_centres(n_out: int, file_rate: float, rate: float) -> np.ndarray:
    """The audio sample nearest each output time ``k / rate``."""
    return np.rint(np.arange(n_out) * (file_rate / rate)).astype(np.int64)


def check_rate(name: str, rate: float, file_rate: float, path: Path | None) -> None:
    """Features at ``rate`` need a file sampled at least twice as fast."""
    if rate > file_rate / 2:
        raise UserError(f"feature extractor '{name}' cannot compute features at rate={rate:g} Hz from this file, "
                        f"sampled at {file_rate:g} Hz: that rate needs a file sampled at {2 * rate:g} Hz or more",
                        path=path, fix=f"Lower the option rate to {file_rate / 2:g} Hz or less (e.g. {name}:rate=100; "
                                       "the host brings features to the data's own rate anyway)")


def _segment(samples: np.ndarray, start: int, stop: int) -> np.ndarray:
    """``samples[start:stop]`` as float32, zeros where the range leaves the clip."""
    out = np.zeros(stop - start, dtype=np.float32)
    lo, hi = max(start, 0), min(stop, len(samples))
    if hi > lo:
        out[lo - start:hi - start] = samples[lo:hi]
    return out


def _blocks(centres: np.ndarray, block: int) -> Iterator[np.ndarray]:
    """Indices of the output samples, in groups whose centres span about ``block`` audio samples."""
    edges = np.searchsorted(centres, np.arange(0, int(centres[-1]) + block + 1, block))
    for lo, hi in zip(edges[:-1], edges[1:]):
        if hi > lo:
            yield np.arange(lo, hi)


class _AudioExtractor(FeatureExtractor):
    """Shared by both extractors: reads each event's clip and assembles the continuous feature set."""

    modality = "audio"

    def __init__(self, **options):
        super().__init__(**options)
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise _option_error(self.name, f"rate={self.rate} is not a positive number of samples per second",
                                f"Give rate in Hz, e.g. {self.name}:rate=100")

    def features(self, samples: np.ndarray, file_rate: float,
                 path: Path | None) -> np.ndarray:  # pragma: no cover - interface
        """``n_out x n_columns`` features of one clip."""
        raise NotImplementedError

    def columns(self, file_rate: float) -> list[str]:  # pragma: no cover - interface
        """Column names (from the run's first file's rate)."""
        raise NotImplementedError

    def extract(self, stimuli: Audio) -> FeatureSet:
        clips, rates = [], []
        done: dict[tuple, tuple[np.ndarray, float]] = {}  # a sound played again is computed once
        for index in track(range(len(stimuli)), f"{self.name} of {len(stimuli)} audio clip(s)", unit="clips"):
            path, key = stimuli.path[index], (stimuli.path[index], stimuli.clip_duration(index))
            if key not in done:
                samples, file_rate = stimuli.read(index)
                check_rate(self.name, self.rate, file_rate, path)
                self.check_file(file_rate, rates[0] if rates else None, path)
                done[key] = self.features(samples, file_rate, path), file_rate
                del samples
            clips.append(done[key][0])
            rates.append(done[key][1])
        return FeatureSet.continuous(stimuli, clips, self.rate, self.columns(rates[0]),
                                     file_rates_hz=sorted(set(rates)), **self.info())

    def check_file(self, file_rate: float, first_rate: float | None, path: Path | None) -> None:
        """Checks of a file's rate beyond :func:`check_rate` (none by default)."""

    def info(self) -> dict:
        """Facts for the sidecar, beside the options."""
        return {}


# --------------------------------------------------------------------------- envelope


def lowpass_fir(cutoff: float, rate: float, file_rate: float) -> np.ndarray:
    """A linear-phase (Kaiser-window) low-pass at ``file_rate``: -6 dB at ``cutoff`` Hz, -60 dB from ``rate / 2``
    Hz at the latest, so that sampling its output at ``rate`` does not alias; odd length, so centred on its middle
    tap it delays nothing."""
    from scipy.signal import firwin, kaiserord

    width = min(2 * (rate / 2 - cutoff), cutoff / 2)  # transition band, centred on the cutoff
    numtaps, beta = kaiserord(STOPBAND_DB, width / (file_rate / 2))
    numtaps |= 1
    return firwin(numtaps, cutoff, window=("kaiser", beta), fs=file_rate).astype(np.float32)


def amplitude_envelope(samples: np.ndarray, file_rate: float, rate: float, cutoff: float, compress: float = 1.0,
                       block_seconds: float = BLOCK_SECONDS) -> np.ndarray:
    """The broadband envelope ``|hilbert(x)| ** compress``, low-passed at ``cutoff`` Hz and sampled at ``rate``.

    Blockwise: each block's Hilbert transform sees :data:`HILBERT_GUARD_SECONDS` of audio on each side (with an
    FFT length from ``scipy.fft.next_fast_len``), and its low-pass the filter's half length more, so blocks join
    seamlessly and memory holds a block, never a complex copy of the whole file.
    """
    from scipy.fft import next_fast_len
    from scipy.signal import hilbert, oaconvolve

    taps = lowpass_fir(cutoff, rate, file_rate)
    half = len(taps) // 2
    guard = int(round(HILBERT_GUARD_SECONDS * file_rate))
    block = max(int(block_seconds * file_rate), 4 * len(taps))
    centres = np.minimum(sample_centres(sample_count(len(samples), file_rate, rate), file_rate, rate),
                         len(samples) - 1)
    out = np.empty(len(centres), dtype=np.float32)
    for chosen in _blocks(centres, block):
        # the low-pass needs the envelope over [first - half, last + half]; the Hilbert transform, guard more
        lo, hi = int(centres[chosen[0]]) - half, int(centres[chosen[-1]]) + half + 1
        start, stop = max(lo - guard, 0), min(hi + guard, len(samples))
        segment = samples[start:stop]
        # zero padding of a guard keeps the circular FFT from wrapping one cut end onto the other
        analytic = hilbert(segment, N=next_fast_len(len(segment) + guard))[:len(segment)]
        envelope = np.abs(analytic).astype(np.float32)
        del analytic
        if compress != 1.0:
            np.power(envelope, compress, out=envelope)
        envelope = _segment(envelope, lo - start, hi - start)  # outside the clip the envelope is 0 (silence)
        smooth = oaconvolve(envelope, taps, mode="valid")  # smooth[j] is centred on audio sample lo + half + j
        out[chosen] = smooth[centres[chosen] - (lo + half)]
    return np.maximum(out, 0.0)  # the filter's ringing dips below 0 beside sudden onsets: an envelope is never negative


def half_wave_derivative(envelope: np.ndarray, rate: float) -> np.ndarray:
    """``max(0, d envelope / dt)`` (central differences, per second): where the sound gets louder."""
    if len(envelope) < 2:
        return np.zeros_like(envelope)
    return np.maximum(np.gradient(envelope, 1.0 / rate), 0.0)


class Envelope(_AudioExtractor):
    """The broadband amplitude envelope, the classic regressor of speech- and music-tracking studies.

    Defaults: 100 Hz is fine for M/EEG TRFs and for fMRI (the host brings it to the TR grid); a 30 Hz
    low-pass keeps the band where cortical tracking lives (below ~10 Hz) with margin; no compression (1.0), so
    the feature is the physical envelope unless asked, since studies differ on the exponent; onsets off, as they
    are a second regressor that a model must choose to include.
    """

    name = "envelope"
    description = "Broadband amplitude envelope (|Hilbert|, low-passed), optionally compressed, with its onsets"
    options = {
        "rate": Option(100.0, "samples per second of the envelope (Hz); at most half the audio file's rate",
                       type=positive),
        "lowpass": Option(None, "low-pass cut-off (Hz, -6 dB) applied before sampling at rate; default 30 Hz, or "
                                "0.4 x rate for rates below 75 Hz; must be below rate / 2", type=optional_hz),
        "compress": Option(1.0, "exponent applied to the envelope before the low-pass: 1 keeps amplitude, 0.6 is "
                                "the usual perceptual (loudness-like) power-law compression (Biesmans et al. 2017)",
                           type=positive),
        "onsets": Option(False, "add a column 'onsets': the half-wave rectified derivative of the envelope, per "
                                "second (acoustic edges, as in Oganian & Chang 2019; Daube et al. 2019)"),
    }

    def __init__(self, **options):
        super().__init__(**options)
        if not (math.isfinite(self.compress) and self.compress > 0):
            raise _option_error(self.name, f"compress={self.compress} is not a positive exponent",
                                "Use 1 for the plain envelope, or 0.6 for the usual power-law compression")
        if self.lowpass is not None and not 0 < self.lowpass < self.rate / 2:
            raise _option_error(self.name, f"lowpass={self.lowpass:g} Hz must lie between 0 and half the rate "
                                f"({self.rate / 2:g} Hz), or the sampled envelope would alias",
                                f"Lower lowpass below {self.rate / 2:g} Hz, or raise rate above "
                                f"{2 * self.lowpass:g} Hz")

    @property
    def cutoff(self) -> float:
        """The low-pass cut-off in Hz that applies."""
        return self.lowpass if self.lowpass is not None else min(DEFAULT_LOWPASS, 0.4 * self.rate)

    def features(self, samples: np.ndarray, file_rate: float, path: Path | None) -> np.ndarray:
        envelope = amplitude_envelope(samples, file_rate, self.rate, self.cutoff, self.compress)
        if not self.onsets:
            return envelope[:, None]
        return np.column_stack([envelope, half_wave_derivative(envelope, self.rate)])

    def columns(self, file_rate: float) -> list[str]:
        return ["envelope", "onsets"] if self.onsets else ["envelope"]

    def info(self) -> dict:
        return {"lowpass_hz": self.cutoff}


# --------------------------------------------------------------------------- mel spectrogram


class MelSpectrogram(_AudioExtractor):
    """Log-mel band energies: the spectrotemporal regressor of auditory encoding models.

    Defaults: 32 bands resolve formants and pitch-range energy while keeping a ridge model small; a 25 ms Hann
    window is the speech front end's (Kaldi, Whisper); 100 Hz as for the envelope; 0 Hz to the file's Nyquist
    frequency covers everything recorded (set ``fmax`` when files differ in rate, see the README).
    """

    name = "melspectrogram"
    description = "Log-mel spectrogram (librosa mel filters, dB), one column per band"
    options = {
        "rate": Option(100.0, "frames per second (Hz); frame k is centred k / rate s after the clip's start",
                       type=positive),
        "n_mels": Option(32, "number of mel bands"),
        "fmin": Option(0.0, "lowest frequency of the mel filters (Hz)"),
        "fmax": Option(None, "highest frequency of the mel filters (Hz); default: the audio file's Nyquist frequency",
                       type=optional_hz),
        "window": Option(0.025, "analysis window length in seconds (Hann)", type=positive),
    }

    def __init__(self, **options):
        super().__init__(**options)
        if self.n_mels < 1:
            raise _option_error(self.name, f"n_mels={self.n_mels} is not a number of bands",
                                f"Use a positive whole number, e.g. {self.name}:n_mels=32")
        if not self.fmin >= 0 or (self.fmax is not None and self.fmax <= self.fmin):
            raise _option_error(self.name, f"fmin={self.fmin:g} Hz and fmax={self.fmax} Hz do not make a band "
                                "(0 <= fmin < fmax)", "Give fmin below fmax, e.g. fmin=0,fmax=8000")

    def check_file(self, file_rate: float, first_rate: float | None, path: Path | None) -> None:
        nyquist = file_rate / 2
        if self.fmax is not None and self.fmax > nyquist:
            raise UserError(f"feature extractor '{self.name}' has fmax={self.fmax:g} Hz, above the Nyquist frequency "
                            f"of this file ({nyquist:g} Hz: it is sampled at {file_rate:g} Hz, and fmax needs "
                            f"{2 * self.fmax:g} Hz)", path=path,
                            fix=f"Lower fmax to {nyquist:g} Hz or less, or resample the file to {2 * self.fmax:g} Hz")
        if self.fmax is None and self.fmin >= nyquist:
            raise UserError(f"feature extractor '{self.name}' has fmin={self.fmin:g} Hz, at or above the Nyquist "
                            f"frequency of this file ({nyquist:g} Hz)", path=path,
                            fix=f"Lower fmin below {nyquist:g} Hz")
        if self.fmax is None and first_rate is not None and file_rate != first_rate:
            raise UserError(f"this file is sampled at {file_rate:g} Hz and the run's first audio file at "
                            f"{first_rate:g} Hz: with fmax unset (the Nyquist frequency) their mel bands would differ",
                            path=path, fix=f"Set fmax to {min(file_rate, first_rate) / 2:g} Hz or less for every run, "
                                           f"e.g. {self.name}:fmax=8000")

    def features(self, samples: np.ndarray, file_rate: float, path: Path | None) -> np.ndarray:
        return log_mel(samples, file_rate, self.rate, self.n_mels, self.fmin, self.fmax, self.window, path)

    def columns(self, file_rate: float) -> list[str]:
        return mel_columns(self.n_mels, self.fmin, self.fmax if self.fmax is not None else file_rate / 2)

    def info(self) -> dict:
        return {"window_s": self.window, "log": "10 log10(max(power, 1e-10)), dB re full scale"}


def mel_columns(n_mels: int, fmin: float, fmax: float) -> list[str]:
    """Column names with each band's centre frequency (librosa's Slaney mel scale), e.g. ``mel_250Hz``."""
    import librosa

    centres = librosa.mel_frequencies(n_mels + 2, fmin=fmin, fmax=fmax)[1:-1]
    for digits in range(0, 4):
        names = [f"mel_{f:.{digits}f}Hz" for f in centres]
        if len(set(names)) == len(names):
            return names
    return [f"mel{i}" for i in range(n_mels)]


def stft_sizes(file_rate: float, window: float) -> tuple[int, int]:
    """(window length, FFT length) in samples: the window rounded, the FFT the next power of two."""
    win_length = max(2, int(round(window * file_rate)))
    return win_length, 1 << (win_length - 1).bit_length()


def log_mel(samples: np.ndarray, file_rate: float, rate: float, n_mels: int, fmin: float, fmax: float | None,
            window: float, path: Path | None = None, block_seconds: float = BLOCK_SECONDS) -> np.ndarray:
    """``n_frames x n_mels`` log-mel energies (dB), frame ``k`` centred on the sample nearest ``k / rate`` s.

    The same numbers as ``librosa.power_to_db(librosa.feature.melspectrogram(..., center=True,
    pad_mode="constant"), ref=1, amin=1e-10, top_db=None)`` when ``file_rate / rate`` is a whole hop (tests check
    it), computed in blocks of frames, and for any ratio at the nearest sample instead of drifting.
    """
    import librosa
    from numpy.lib.stride_tricks import sliding_window_view
    from scipy.fft import rfft

    fmax = file_rate / 2 if fmax is None else fmax
    win_length, n_fft = stft_sizes(file_rate, window)
    with warnings.catch_warnings():  # librosa warns of empty filters; the UserError below says what to do
        warnings.simplefilter("ignore", UserWarning)
        basis = librosa.filters.mel(sr=file_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    if not np.all(basis.max(axis=1) > 0):
        raise UserError(f"melspectrogram: with n_mels={n_mels} between {fmin:g} and {fmax:g} Hz, some mel bands fall "
                        f"between the frequencies that a {window * 1000:g} ms window resolves at {file_rate:g} Hz "
                        "(they would be empty)", path=path,
                        fix="Lower n_mels, raise fmin, or lengthen window (e.g. window=0.05)")
    basis = basis.T.astype(np.float32)  # n_fft // 2 + 1 x n_mels
    taper = librosa.util.pad_center(librosa.filters.get_window("hann", win_length, fftbins=True), size=n_fft)
    taper = taper.astype(np.float32)
    centres = sample_centres(sample_count(len(samples), file_rate, rate), file_rate, rate)
    out = np.empty((len(centres), n_mels), dtype=np.float32)
    for chosen in _blocks(centres, max(int(block_seconds * file_rate), n_fft)):
        lo = int(centres[chosen[0]]) - n_fft // 2
        segment = _segment(samples, lo, int(centres[chosen[-1]]) - n_fft // 2 + n_fft)
        frames = sliding_window_view(segment, n_fft)[centres[chosen] - n_fft // 2 - lo] * taper  # row copies: fast
        power = np.abs(rfft(frames, axis=1)) ** 2  # float32 in, complex64 out: a block of frames, never the file
        out[chosen] = librosa.power_to_db(power @ basis, ref=1.0, amin=AMIN, top_db=None)
    return out


@hookimpl
def register_feature_extractors(register: Callable[[type], None]) -> None:
    for extractor in (Envelope, MelSpectrogram):
        register(extractor)
