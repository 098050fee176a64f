"""Array backends for the ridge solvers, chosen by name as in himalaya's ``set_backend``.

``numpy`` runs everywhere; ``torch`` (CPU) and ``torch_cuda`` need PyTorch, which
is imported only when asked for, so the core runs without it. Every backend
offers the same few operations; the solvers are written once against them.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from ..errors import UserError

BACKENDS = ("numpy", "torch", "torch_cuda")


class NumpyBackend:
    name = "numpy"

    def __init__(self, dtype: str = "float32"):
        self.dtype = np.dtype(dtype)

    def asarray(self, x: Any):
        return np.asarray(x, dtype=self.dtype)

    def to_numpy(self, x) -> np.ndarray:
        return np.asarray(x)

    def svd(self, x):
        """Thin SVD: U (n x r), s (r), Vt (r x p)."""
        return np.linalg.svd(x, full_matrices=False)

    def zeros(self, shape):
        return np.zeros(shape, dtype=self.dtype)

    def concatenate(self, parts):
        return np.concatenate(parts)

    def take_columns(self, x, index):
        return x[:, index]


class TorchBackend:
    def __init__(self, dtype: str = "float32", device: str = "cpu"):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.dtype = getattr(torch, dtype)
        self.name = "torch" if device == "cpu" else "torch_cuda"

    def asarray(self, x: Any):
        if isinstance(x, self.torch.Tensor):
            return x.to(device=self.device, dtype=self.dtype)
        return self.torch.as_tensor(np.asarray(x), dtype=self.dtype, device=self.device)

    def to_numpy(self, x) -> np.ndarray:
        return x.detach().cpu().numpy() if isinstance(x, self.torch.Tensor) else np.asarray(x)

    def svd(self, x):
        return self.torch.linalg.svd(x, full_matrices=False)

    def zeros(self, shape):
        return self.torch.zeros(shape, dtype=self.dtype, device=self.device)

    def concatenate(self, parts):
        return self.torch.cat(parts)

    def take_columns(self, x, index):
        return x[:, self.torch.as_tensor(np.asarray(index), device=self.device)]


@lru_cache(maxsize=None)
def get_backend(name: str = "numpy", dtype: str = "float32"):
    """The backend called ``name``, or a clear error when it cannot run here."""
    if name == "numpy":
        return NumpyBackend(dtype)
    if name in ("torch", "torch_cuda"):
        try:
            import torch
        except ImportError:
            raise UserError(f"the '{name}' backend needs PyTorch, which is not installed",
                            fix="pip install torch==2.13.0 (CPU), or use --backend numpy") from None
        if name == "torch_cuda" and not torch.cuda.is_available():
            raise UserError("the 'torch_cuda' backend needs a CUDA GPU, and none is visible",
                            fix="Use --backend torch (CPU) or numpy on this machine")
        return TorchBackend(dtype, "cuda" if name == "torch_cuda" else "cpu")
    raise UserError(f"unknown backend '{name}'", fix=f"Use one of: {', '.join(BACKENDS)}")
