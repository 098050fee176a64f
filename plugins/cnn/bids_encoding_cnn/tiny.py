"""Small randomly initialised vision models saved locally, loaded exactly as a hub model is.

Tests must never download, so they build a tiny transformers ResNet (or ViT)
from its config, with random weights, and save it with an image processor to a
folder that ``AutoModel`` / ``AutoImageProcessor`` load. Benchmarks can use the
same builders with larger sizes.
"""

from __future__ import annotations

from pathlib import Path


def _processor(kind: str, size: int):
    """A PIL-backend image processor (no torchvision needed) that resizes to ``size`` x ``size``, mean/std 0.5."""
    import transformers

    if kind == "convnext":
        cls = getattr(transformers, "ConvNextImageProcessorPil", None) or transformers.ConvNextImageProcessor
        # crop_pct only applies below 384: resize the shorter side to size / crop_pct, then crop size x size
        return cls(size={"shortest_edge": size}, crop_pct=1.0, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    cls = getattr(transformers, "ViTImageProcessorPil", None) or transformers.ViTImageProcessor
    return cls(size={"height": size, "width": size}, image_mean=[0.5] * 3, image_std=[0.5] * 3)


def build_resnet(folder: str | Path, image_size: int = 32, hidden_sizes=(8, 16, 24, 32), depths=(1, 1, 1, 1),
                 embedding_size: int = 8, seed: int = 0, **config) -> Path:
    """Save a randomly initialised transformers ResNet (``config`` overrides ResNetConfig) and its image processor.

    The processor (ConvNeXt's: shorter side to ``image_size``, centre crop, mean/std 0.5) is saved beside the
    model, so ``AutoImageProcessor.from_pretrained(folder)`` loads it. ``output_hidden_states`` then gives
    ``len(depths) + 1`` states: the stem and each stage.
    """
    import torch
    from transformers import ResNetConfig, ResNetModel

    folder = Path(folder)
    torch.manual_seed(seed)
    options = dict(num_channels=3, embedding_size=embedding_size, hidden_sizes=list(hidden_sizes),
                   depths=list(depths), layer_type="basic")
    model = ResNetModel(ResNetConfig(**{**options, **config}))
    model.save_pretrained(folder)
    _processor("convnext", image_size).save_pretrained(folder)
    return folder


def build_vit(folder: str | Path, image_size: int = 32, patch_size: int = 8, hidden_size: int = 16,
              num_hidden_layers: int = 2, seed: int = 0, **config) -> Path:
    """Save a randomly initialised transformers ViT (a CLS token and ``(image_size / patch_size) ** 2`` patches)."""
    import torch
    from transformers import ViTConfig, ViTModel

    folder = Path(folder)
    torch.manual_seed(seed)
    options = dict(image_size=image_size, patch_size=patch_size, hidden_size=hidden_size,
                   num_hidden_layers=num_hidden_layers, num_attention_heads=2, intermediate_size=2 * hidden_size)
    model = ViTModel(ViTConfig(**{**options, **config}))
    model.save_pretrained(folder)
    _processor("vit", image_size).save_pretrained(folder)
    return folder
