"""Speech features: hidden states of a Hugging Face audio encoder, in causal windows, at the model's frame rate.

Any checkpoint that ``AutoModel`` and ``AutoFeatureExtractor`` load, by hub id (from the
local cache) or by a folder saved with ``save_pretrained``: the wav2vec2 family
(wav2vec2, HuBERT, WavLM, data2vec-audio, UniSpeech, wav2vec2-conformer), whose
convolutions turn 16 kHz samples into 50 frames/s, and the encoder of Whisper, which
reads 30 s of log-mel features (shorter input is padded with silence) and gives 1,500
frames, 50/s.

Causal windows (see :func:`plan_windows`). A brain hears speech as it comes; a model run
once over a whole story lets every frame attend to the rest of the story, future
included. So the clip is read in windows that end every ``stride`` seconds, each covering
the ``window`` seconds before its end (less near the start), and each window keeps only
the frames of its last ``stride`` seconds. Every kept frame then has at least
``window - stride`` s of past and at most ``stride`` s of future in its input;
``stride`` of one frame (0.02 s) is strictly causal, at ``window / stride`` times the
cost of one pass. Windows of equal length are batched (no padding: a padded batch would
change models whose first convolution normalises over time, as wav2vec2-base's does).

Defaults (``window=0``, ``stride=0``): 10 s windows every 5 s for the wav2vec2 family (at
least 5 s of past, at most 5 s of future, twice the cost of one pass; wav2vec2 was
pre-trained on crops of at most ~15 s, so 10 s stays in its training range); 30 s
windows every 10 s for Whisper (at least 20 s of past; every Whisper pass reads 30 s,
so its cost is ``30 s / stride`` passes: 3x).

Layers are numbered as ``output_hidden_states`` returns them: ``L0`` is the
convolutional feature encoder's output (projected, with the positional convolution)
or Whisper's convolutional embedding, ``L1`` ... ``Ln`` the transformer layers.
Frame ``j`` of a clip is placed at ``j / rate`` s from the event's onset: the start of
the samples it reads (25 ms for wav2vec2) or, for Whisper, its centre.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from bids_encoding.plugin_api import Audio, FeatureExtractor, FeatureSet, Option, UserError, hookimpl, layer_indices, track

DEFAULT_MODEL = "facebook/wav2vec2-base"
NEVER_DOWNLOADS = ("Give model= a folder saved with save_pretrained (the model and its feature extractor), or download "
                   "the model once where the internet is reachable (huggingface-cli download NAME) and copy the cache "
                   "(~/.cache/huggingface); bids-encoding never downloads at run time")


@dataclass(frozen=True)
class Frames:
    """How a model turns samples into frames: frame ``j`` reads samples ``[j * hop, j * hop + span)``.

    ``fixed`` is the number of frames of the fixed-length input that every pass reads (Whisper: 1,500 frames
    of 30 s, shorter input padded), None when a pass reads any length.
    """

    sampling_rate: int
    hop: int
    span: int
    fixed: int | None = None

    @property
    def rate(self) -> float:
        """Frames per second."""
        return self.sampling_rate / self.hop

    def count(self, n_samples: int) -> int:
        """How many whole frames ``n_samples`` samples give."""
        return 0 if n_samples < self.span else (n_samples - self.span) // self.hop + 1

    def samples(self, start: int, stop: int) -> slice:
        """The samples that frames ``[start, stop)`` read."""
        return slice(start * self.hop, (stop - 1) * self.hop + self.span)


def convolution_frames(kernels, strides, sampling_rate: int) -> Frames:
    """The frames of a stack of unpadded 1-D convolutions (the wav2vec2 family's feature encoder)."""
    hop, span = 1, 1
    for kernel, stride in zip(kernels, strides):
        span += (kernel - 1) * hop
        hop *= stride
    return Frames(int(sampling_rate), hop, span)


@dataclass(frozen=True)
class Window:
    """Frames ``[start, stop)`` read in one pass; frames from ``keep_from`` on take their features here."""

    start: int
    stop: int
    keep_from: int


def plan_windows(n_frames: int, window: int, stride: int) -> list[Window]:
    """Windows of at most ``window`` frames ending every ``stride`` frames, each keeping its last ``stride`` frames
    (the frames since the previous window's end), so that every frame is kept once."""
    if stride < 1 or window < stride:
        raise ValueError("stride must be at least 1 frame and window at least stride")
    windows, keep = [], 0
    while keep < n_frames:
        stop = min(keep + stride, n_frames)
        windows.append(Window(max(0, stop - window), stop, keep))
        keep = stop
    return windows


class Encoder:
    """A loaded audio encoder: its feature extractor, the network giving hidden states, and its frames."""

    def __init__(self, name: str, config, extractor, model, device: str, dtype: str):
        import torch

        self.name, self.extractor, self.device = name, extractor, device
        self.dtype = getattr(torch, dtype)
        self.revision = getattr(config, "_commit_hash", None)
        self.kind = type(model).__name__
        self.model = model.get_encoder() if getattr(config, "is_encoder_decoder", False) else model
        self.model = self.model.to(device).eval()
        self.input_name = self.model.main_input_name
        self.frames = model_frames(name, config, extractor, self.model)
        self.n_hidden = int(getattr(config, "encoder_layers", None) or config.num_hidden_layers) + 1
        self.width = int(getattr(config, "d_model", None) or config.hidden_size)
        self.parameters = int(sum(p.numel() for p in self.model.parameters()))

    def forward(self, pieces: list[np.ndarray]):
        """All hidden states of a batch of equal-length sample arrays (``n_hidden`` tensors, batch x frames x width)."""
        import torch

        inputs = self.extractor(pieces, sampling_rate=self.frames.sampling_rate, return_tensors="pt")
        values = inputs[self.input_name].to(device=self.device, dtype=self.dtype)
        with torch.inference_mode():
            return self.model(values, output_hidden_states=True).hidden_states

    def windowed(self, samples: np.ndarray, layers: list[int], window: int, stride: int, batch_size: int,
                 desc: str) -> dict[int, np.ndarray]:
        """Each layer's frames (``n_frames x width`` float32) of one clip, read in causal windows."""
        n_frames = self.frames.count(len(samples))
        windows = plan_windows(n_frames, window, stride)
        groups: dict[int, list[Window]] = {}
        for w in windows:  # equal lengths batch without padding (every Whisper input has the same length)
            groups.setdefault(0 if self.frames.fixed else w.stop - w.start, []).append(w)
        batches = [group[i:i + batch_size] for group in groups.values() for i in range(0, len(group), batch_size)]
        out = {layer: np.empty((n_frames, self.width), np.float32) for layer in layers}
        for batch in track(batches, f"{desc}: {n_frames} frames in {len(windows)} windows", unit="batches"):
            states = self.forward([samples[self.frames.samples(w.start, w.stop)] for w in batch])
            given, wanted = {s.shape[1] for s in states}, self.frames.fixed or batch[-1].stop - batch[-1].start
            if given != {wanted}:
                raise UserError(f"model '{self.name}' gives {'/'.join(map(str, sorted(given)))} frames where its "
                                f"convolutions predict {wanted}: its architecture ({self.kind}) is not one this "
                                "extractor knows how to window", fix=SUPPORTED)
            for row, w in enumerate(batch):
                for layer in layers:
                    kept = states[layer][row, w.keep_from - w.start:w.stop - w.start]
                    out[layer][w.keep_from:w.stop] = kept.float().cpu().numpy()
        return out


SUPPORTED = ("Use a wav2vec2-family model (wav2vec2, HuBERT, WavLM, data2vec-audio, UniSpeech, wav2vec2-conformer) "
             "or a Whisper model")


def model_frames(name: str, config, extractor, encoder) -> Frames:
    """The frame geometry of a supported encoder, read from its config, feature extractor and layers."""
    rate = getattr(extractor, "sampling_rate", None)
    if not rate:
        raise UserError(f"the feature extractor of '{name}' states no sampling_rate, so it is not an audio model",
                        fix=SUPPORTED)
    if getattr(config, "conv_kernel", None) and getattr(config, "conv_stride", None):
        return convolution_frames(config.conv_kernel, config.conv_stride, rate)
    if config.model_type == "whisper":
        hop = int(extractor.hop_length * encoder.conv1.stride[0] * encoder.conv2.stride[0])
        fixed = int(config.max_source_positions)
        if fixed * hop != extractor.n_samples:
            raise UserError(f"Whisper model '{name}' reads {fixed} frames ({fixed * hop} samples) but its feature "
                            f"extractor pads to {extractor.n_samples} samples",
                            fix="Save the model with the feature extractor it was trained with")
        return Frames(int(rate), hop, hop, fixed)
    raise UserError(f"model '{name}' ({config.model_type}) is not an audio encoder this extractor can window",
                    fix=SUPPORTED)


def resolve_device(device: str) -> str:
    """``auto``: CUDA when torch sees a GPU, else the CPU."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda was asked for but torch sees no CUDA device",
                        fix="Use device=cpu or device=auto, or install a CUDA build of torch on a machine with a GPU")
    return device


def looks_like_path(name: str) -> bool:
    """A name that can only be a folder (a hub id is ``org/name`` or ``name``)."""
    return name.startswith(("/", "./", "../", "~")) or name.endswith("/") or name.count("/") > 1 or "\\" in name


@functools.lru_cache(maxsize=2)
def load_encoder(name: str, device: str, dtype: str) -> Encoder:
    """The audio encoder named by ``model=`` (in eval mode on ``device``), loaded once per process."""
    import torch
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if dtype == "float16" and device == "cpu":
        raise UserError("dtype=float16 runs on a GPU only", fix="Use dtype=bfloat16 or float32 on the CPU")
    where = Path(name).expanduser()
    if not where.exists() and looks_like_path(name):
        raise UserError("the model folder does not exist", path=where,
                        fix="Give model= a folder written by save_pretrained (inside a container, the path as the "
                            "container sees it), or a hub id already in the Hugging Face cache")
    if where.exists() and not where.is_dir():
        raise UserError("model= names a file, but a Hugging Face audio model is a folder", path=where,
                        fix="Give the folder written by save_pretrained (config.json, the weights, "
                            "preprocessor_config.json)")
    source = str(where) if where.is_dir() else name
    try:
        config = AutoConfig.from_pretrained(source)
        extractor = AutoFeatureExtractor.from_pretrained(source)
        model = AutoModel.from_pretrained(source, dtype=getattr(torch, dtype))
    except (OSError, ValueError, KeyError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        if where.is_dir():
            raise UserError(f"the folder cannot be loaded as a Hugging Face audio model with its feature extractor "
                            f"({reason})", path=where,
                            fix="Give a folder written by save_pretrained of the model and of its feature extractor "
                                "(config.json, the weights, preprocessor_config.json)") from None
        raise UserError(f"audio model '{name}' is neither a local folder nor a model in the Hugging Face cache "
                        f"({reason})", fix=NEVER_DOWNLOADS) from None
    return Encoder(source, config, extractor, model, device, dtype)


def read_clip(stimuli: Audio, index: int, rate: int) -> np.ndarray:
    """Event ``index``'s samples at the model's ``rate``: resampled from a higher rate, refused from a lower one
    (upsampling cannot restore the frequencies the model was trained on)."""
    samples, native = stimuli.read(index)
    if native < rate:
        raise UserError(f"the audio is sampled at {native:g} Hz, below the {rate} Hz this model needs",
                        path=stimuli.path[index],
                        fix=f"Use a recording made at {rate} Hz or more, or a model trained at {native:g} Hz; "
                            "upsampling leaves the top of the spectrum empty, which the model never heard")
    if native > rate:
        samples, _ = stimuli.read(index, rate=rate)
    return samples


class Speech(FeatureExtractor):
    """Hidden states of a Hugging Face audio encoder (wav2vec2 family, Whisper) in causal windows, per layer."""

    name = "speech"
    modality = "audio"
    description = ("Hidden states (every layer by default) of a Hugging Face audio encoder (wav2vec2, HuBERT, WavLM, "
                   "Whisper), in causal windows, at the model's frame rate; model= hub id or local folder")
    options = {
        "model": Option(DEFAULT_MODEL, "hub id already in the Hugging Face cache (facebook/wav2vec2-base, "
                                       "facebook/hubert-base-ls960, microsoft/wavlm-base-plus, openai/whisper-base, ...) "
                                       "or a folder saved with save_pretrained (model and feature extractor)"),
        "layers": Option("all", "hidden states to keep: all, or indices such as 6,9 (0 = convolutional features, "
                                "-1 = last)"),
        "window": Option(0.0, "seconds of audio per pass, ending at the kept frames (0: 10 s; 30 s for Whisper, "
                              "which reads 30 s at most)"),
        "stride": Option(0.0, "seconds between window ends = the most future a frame sees (0: half the window; a "
                              "third for Whisper); one frame (0.02) is strictly causal, at window/stride the cost"),
        "batch_size": Option(8, "windows per forward pass"),
        "device": Option("auto", "where the model runs (auto: cuda when available)", choices=("auto", "cpu", "cuda")),
        "dtype": Option("float32", "weights and activations (float16 on cuda only)",
                        choices=("float32", "float16", "bfloat16")),
    }

    def window_frames(self, frames: Frames) -> tuple[int, int]:
        """``window`` and ``stride`` in whole frames (defaults filled in), checked against what the model reads."""
        window = float(self.window) or (frames.fixed / frames.rate if frames.fixed else 10.0)
        stride = float(self.stride) or window / (3 if frames.fixed else 2)
        w, s = round(window * frames.rate), round(stride * frames.rate)
        limit = frames.fixed or np.inf
        if not (1 <= s <= w <= limit) or window < 0 or stride < 0:
            most = f" and at most {frames.fixed / frames.rate:g} s, what one pass of this model reads" \
                if frames.fixed else ""
            raise UserError(f"window={window:g} s and stride={stride:g} s give windows of {w} and strides of {s} "
                            f"frames ({frames.rate:g} frames/s)",
                            fix=f"Choose a stride of at least one frame ({1 / frames.rate:g} s) and a window at least "
                                f"as long as the stride{most}")
        return w, s

    def extract(self, stimuli: Audio) -> FeatureSet:
        model_name = str(self.model).strip() or DEFAULT_MODEL
        device = resolve_device(self.device)
        encoder = load_encoder(model_name, device, self.dtype)
        frames = encoder.frames
        window, stride = self.window_frames(frames)
        layers = layer_indices(self.layers, encoder.n_hidden)
        clips: dict[str, list[np.ndarray]] = {f"L{layer}": [] for layer in layers}
        computed: dict[tuple, dict[int, np.ndarray]] = {}
        for index in range(len(stimuli)):
            key = (stimuli.path[index], stimuli.clip_duration(index))  # a clip played twice is computed once
            if key not in computed:
                samples = read_clip(stimuli, index, frames.sampling_rate)
                if frames.count(len(samples)) == 0:
                    raise UserError(f"the clip lasts {len(samples) / frames.sampling_rate:.3f} s, less than one "
                                    f"frame of the model ({frames.span / frames.sampling_rate:.3f} s)",
                                    path=stimuli.path[index], fix="Give the event a longer sound, or remove it")
                desc = f"{self.name} ({Path(model_name).name}) {Path(stimuli.path[index]).name}"
                computed[key] = encoder.windowed(samples, layers, window, stride, int(self.batch_size), desc)
            for layer in layers:
                clips[f"L{layer}"].append(computed[key][layer])
        columns = {label: [f"unit{i}" for i in range(encoder.width)] for label in clips}
        info = {
            "Model": model_name, "Class": encoder.kind, "Parameters": encoder.parameters, "Revision": encoder.revision,
            "Layers": layers, "FrameRate": frames.rate, "SamplingRate": frames.sampling_rate,
            "FrameSamples": frames.span, "FrameTime": "centre" if frames.fixed else "start",
            "WindowSeconds": window / frames.rate, "StrideSeconds": stride / frames.rate,
            "WindowFrames": window, "StrideFrames": stride, "PaddedInputSeconds":
                frames.fixed * frames.hop / frames.sampling_rate if frames.fixed else None,
            "Clips": len(computed), "DType": self.dtype, "Device": device,
            "Transformers": metadata.version("transformers"), "Torch": metadata.version("torch"),
        }
        return FeatureSet.continuous(stimuli, clips, rate=frames.rate, columns=columns, SpeechModel=info)


@hookimpl
def register_feature_extractors(register):
    register(Speech)
