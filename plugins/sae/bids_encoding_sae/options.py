"""The training options both ``sae`` plugins take (one definition), and their validation.

No torch here: the plugin is imported by every bids-encoding command, and torch only
when something is trained or encoded.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from bids_encoding.plugin_api import Option, UserError

SPARSITIES = ("topk", "l1")


@dataclass(frozen=True)
class TrainingConfig:
    """Every option that shapes training (hashable: it keys the feature extractor's memo)."""

    latents: int
    sparsity: str = "topk"
    k: int = 8
    l1: float = 0.1
    epochs: int = 500
    batch_size: int = 256
    lr: float = 1e-3
    patience: int = 20
    device: str = "cpu"


TRAINING_OPTIONS: dict[str, Option] = {
    "sparsity": Option("topk", "topk: keep the k largest pre-activations of each sample, ReLU'd (OpenAI's top-k SAE); "
                               "l1: ReLU latents with an L1 penalty", choices=SPARSITIES),
    "k": Option(8, "active latents per sample with sparsity=topk (at most latents)"),
    "l1": Option(0.1, "with sparsity=l1: the penalty; a latent pays for itself when it explains more than about "
                      "this fraction of a sample's norm (the loss is scale-free)"),
    "epochs": Option(500, "most passes over the training samples"),
    "batch_size": Option(256, "samples per Adam step"),
    "lr": Option(1e-3, "Adam's learning rate"),
    "patience": Option(20, "stop after this many epochs without a better validation MSE (best weights restored)"),
    "device": Option("cpu", "cpu, or cuda for a GPU"),
}


def with_defaults(**defaults: Any) -> dict[str, Option]:
    """The training options with some defaults changed (the same help and parsing)."""
    return {key: replace(option, default=defaults[key]) if key in defaults else option
            for key, option in TRAINING_OPTIONS.items()}


def training_config(plugin: Any):
    """The validated training options of a configured plugin as a ``TrainingConfig``, or a :class:`UserError`."""
    name = f"{plugin.kind} '{plugin.name}'"
    sparsity = str(plugin.sparsity).strip().lower()
    if sparsity not in SPARSITIES:
        raise UserError(f"{name} has no sparsity '{plugin.sparsity}' (known: {', '.join(SPARSITIES)})",
                        fix="Use sparsity=topk (with k=) or sparsity=l1 (with l1=)")
    values = {}
    for key in ("latents", "k", "epochs", "batch_size", "patience"):
        raw = getattr(plugin, key)
        try:
            values[key] = int(raw)
            if values[key] != float(raw) or values[key] < (0 if key == "patience" else 1):
                raise ValueError
        except (TypeError, ValueError):
            raise UserError(f"option {key}={raw} of {name} is not a positive whole number",
                            fix=f"Give {key} as a whole number of at least {0 if key == 'patience' else 1}") from None
    for key in ("l1", "lr"):
        raw = getattr(plugin, key)
        try:
            values[key] = float(raw)
            if not values[key] >= 0 or (key == "lr" and values[key] == 0) or values[key] == float("inf"):
                raise ValueError
        except (TypeError, ValueError):
            raise UserError(f"option {key}={raw} of {name} is not a usable number",
                            fix=f"Give {key} as a {'positive' if key == 'lr' else 'non-negative'} number") from None
    if sparsity == "topk" and values["k"] > values["latents"]:
        raise UserError(f"{name} asks for k={values['k']} active latents out of latents={values['latents']}",
                        fix=f"Give k <= latents (e.g. k={max(1, values['latents'] // 8)}), or more latents")
    device = str(plugin.device).strip().lower()
    if device != "cpu":
        from .model import resolve_device  # torch only for a GPU

        resolve_device(device)
    return TrainingConfig(sparsity=sparsity, device=device, **values)
