"""The sparse autoencoder and its one training loop, shared by the brain embedder and the feature extractor.

Model (the "standard" SAE of Bricken et al. 2023 / Gao et al. 2024)::

    z     = sparsify(W_enc (x - b_dec) + b_enc)      encoder: Linear(d, m), then top-k or ReLU
    x_hat = W_dec z + b_dec                          decoder: columns of W_dec have unit norm

* ``b_dec`` starts at the training mean and is subtracted before the encoder;
* tied initialisation: ``W_dec`` has random unit-norm columns and ``W_enc = W_dec^T``;
* ``topk``: the k largest pre-activations of each sample are kept, ReLU'd (so at most k
  latents are active; fewer when some of the k are negative), the rest are zero (Gao et al.);
  ``l1``: ``z = ReLU(pre)`` with the penalty ``l1 * sum_i z_i ||W_dec[:, i]||``;
* after every Adam step the decoder's columns are put back on the unit sphere, and the
  gradient's component along each column is removed before the step (it would only change
  the column's norm).

The objective is scale-free: the squared reconstruction error is divided by ``V``, the
training samples' mean squared distance to their mean (so it is the fraction of variance
unexplained), and the L1 term by ``sqrt(V)`` (a latent that alone reconstructs a typical
sample has size about ``sqrt(V)``). So the same ``l1`` means the same trade-off for 50 word
dimensions and for 5,000 voxels: a latent pays for itself when it explains more than about
``l1`` of a sample's norm.

Training: mini-batches in an order drawn by a seeded ``torch.Generator``, validation MSE after
each epoch, early stopping after ``patience`` epochs without a relative improvement of
``MIN_DELTA``, and the weights of the best validation epoch restored. Nothing touches torch's
global random state (every draw uses the local generator), and on CPU deterministic algorithms
are switched on for the call only, so the same inputs, seed and thread count give bitwise
identical weights. A small problem (see :func:`cpu_settings`) runs on one CPU thread; the
thread count is otherwise left as it is.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import numpy as np
import torch

from bids_encoding.plugin_api import Step, UserError

from .options import SPARSITIES, TrainingConfig

VALIDATION_FRACTION = 0.1  # held out from the end of X when no validation samples are given
MIN_VALIDATION_ROWS = 10  # below this many samples nothing is held out: every epoch is run
MIN_DELTA = 1e-4  # relative drop of the validation MSE that counts as progress (resets patience)
# With fewer samples than a batch, an epoch is one Adam step: epochs and patience then count too few steps to
# converge (trial-wise samples of a region are often below 100). Training always allows this many steps, and
# waits this many steps without progress, whatever the epochs and patience options say.
MIN_STEPS = 5000
MIN_PATIENCE_STEPS = 200
ACTIVE = 1e-6  # a latent above this is active (the host's threshold)
CHUNK = 1024  # rows per forward pass outside training (temporaries: a few CHUNK x inputs arrays)
SMALL_PRODUCT = 1 << 24  # a training problem whose batch x inputs x latents is below this runs on one CPU thread
AUX_WEIGHT = 1 / 32  # weight of the AuxK loss that revives dead latents (topk only; Gao et al.'s value)


def resolve_device(name: str) -> torch.device:
    """``cpu`` or ``cuda`` (``cuda:N``) as a torch device, or a :class:`UserError`."""
    name = str(name).strip().lower()
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UserError(f"device={name} was asked for, but torch {torch.__version__} finds no CUDA GPU here",
                            fix="Use device=cpu (the default), or run on a machine with a GPU and a CUDA build of torch")
        try:
            device = torch.device(name)
            torch.zeros(1, device=device)
        except (RuntimeError, AssertionError) as exc:
            raise UserError(f"device={name} cannot be used ({exc})",
                            fix=f"Use device=cuda or cuda:N with N below {torch.cuda.device_count()}") from None
        return device
    raise UserError(f"device={name} is not a device the sparse autoencoder runs on", fix="Use device=cpu or device=cuda")


class SparseAutoencoder(torch.nn.Module):
    """``n_inputs -> n_latents -> n_inputs``; see the module's docstring."""

    def __init__(self, n_inputs: int, n_latents: int, sparsity: str = "topk", k: int = 8):
        super().__init__()
        if sparsity not in SPARSITIES:
            raise ValueError(f"sparsity {sparsity!r} is not one of {SPARSITIES}")
        self.sparsity, self.k = sparsity, int(k)
        self.b_dec = torch.nn.Parameter(torch.zeros(n_inputs))
        self.W_enc = torch.nn.Parameter(torch.zeros(n_latents, n_inputs))
        self.b_enc = torch.nn.Parameter(torch.zeros(n_latents))
        self.W_dec = torch.nn.Parameter(torch.zeros(n_inputs, n_latents))

    @torch.no_grad()
    def initialise(self, mean: torch.Tensor, generator: torch.Generator) -> None:
        """Random unit-norm decoder columns, the encoder their transpose, ``b_dec`` the mean."""
        W = torch.randn(self.W_dec.shape, generator=generator, dtype=torch.float32)
        W /= W.norm(dim=0, keepdim=True).clamp_min(1e-12)
        self.W_dec.copy_(W)
        self.W_enc.copy_(W.T)
        self.b_enc.zero_()
        self.b_dec.copy_(mean)

    def preactivations(self, x: torch.Tensor) -> torch.Tensor:
        """``W_enc (x - b_dec) + b_enc``, with ``b_dec`` folded into the bias: no gradient w.r.t. a batch-sized input."""
        return torch.addmm(torch.addmv(self.b_enc, self.W_enc, self.b_dec, alpha=-1), x, self.W_enc.T)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.sparsify(self.preactivations(x))

    def sparsify(self, pre: torch.Tensor) -> torch.Tensor:
        if self.sparsity == "topk" and self.k < pre.shape[1]:
            return topk_relu(pre, self.k)
        return pre.relu()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.b_dec, z, self.W_dec.T)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(x)
        return self.decode(z), z

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=0, keepdim=True).clamp_min(1e-12))

    @torch.no_grad()
    def project_decoder_gradient(self) -> None:
        """Remove from each decoder column's gradient its component along the (unit) column."""
        grad = self.W_dec.grad
        if grad is not None:
            grad.sub_(self.W_dec * (grad * self.W_dec).sum(0, keepdim=True))

    # ----------------------------------------------------------------------- numpy in and out

    def weights(self) -> dict[str, np.ndarray]:
        return {name: p.detach().to("cpu", torch.float32).numpy().copy() for name, p in self.named_parameters()}

    @classmethod
    def from_weights(cls, weights: dict[str, np.ndarray], sparsity: str, k: int,
                     device: torch.device | str = "cpu") -> "SparseAutoencoder":
        missing = {"W_enc", "b_enc", "W_dec", "b_dec"} - set(weights)
        if missing:
            raise UserError(f"the sparse autoencoder's weights lack {', '.join(sorted(missing))}",
                            fix="Restore from the weights file that the sae embedder wrote")
        n_latents, n_inputs = np.shape(weights["W_enc"])
        shapes = {"W_enc": (n_latents, n_inputs), "b_enc": (n_latents,), "W_dec": (n_inputs, n_latents),
                  "b_dec": (n_inputs,)}
        wrong = [f"{k} {tuple(np.shape(weights[k]))} (expected {s})" for k, s in shapes.items() if np.shape(weights[k]) != s]
        if wrong:
            raise UserError(f"the sparse autoencoder's weights have inconsistent shapes: {'; '.join(wrong)}",
                            fix="Restore from an unmodified weights file that the sae embedder wrote")
        model = cls(n_inputs, n_latents, sparsity, k)
        with torch.no_grad():
            for name, param in model.named_parameters():
                param.copy_(torch.as_tensor(np.asarray(weights[name], dtype=np.float32)))
        return model.to(device).eval()

    @property
    def device(self) -> torch.device:
        return self.W_dec.device

    def encode_array(self, X: np.ndarray) -> np.ndarray:
        """Latents of the rows of ``X`` (float32 numpy), computed in chunks."""
        return self._in_chunks(self.encode, X, self.W_enc.shape[0])

    def decode_array(self, Z: np.ndarray) -> np.ndarray:
        """Reconstructions of the rows of ``Z`` (float32 numpy), computed in chunks."""
        return self._in_chunks(self.decode, Z, self.W_dec.shape[0])

    @torch.no_grad()
    def _in_chunks(self, step, A: np.ndarray, width: int) -> np.ndarray:
        A = np.asarray(A, dtype=np.float32)
        out = np.empty((len(A), width), np.float32)
        for start in range(0, len(A), CHUNK):
            out[start:start + CHUNK] = step(torch.from_numpy(A[start:start + CHUNK]).to(self.device)).cpu().numpy()
        return out


def topk_relu(pre: torch.Tensor, k: int) -> torch.Tensor:
    """The k largest entries of each row, ReLU'd; zero elsewhere."""
    values, indices = pre.topk(k, dim=1, sorted=False)
    return torch.zeros_like(pre).scatter_(1, indices, values.relu())


@contextlib.contextmanager
def cpu_settings(device: torch.device, macs_per_product: int):
    """For the duration of the call on CPU: deterministic algorithms, and one thread for a small problem.

    Products of fewer than ``SMALL_PRODUCT`` multiply-adds gain nothing from threads, and on a busy
    machine torch's idle threads spin-wait at every op: 3-10 times slower (the tests' 300 x 40 problems
    measured on the shared 2-core machines). Both settings are restored after.
    """
    if device.type != "cpu":
        yield
        return
    enabled, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    threads = torch.get_num_threads()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = False  # nothing reads uninitialised memory; NaN-filling
    # every new tensor (the deterministic mode's default) costs ~10 % of an epoch
    if macs_per_product < SMALL_PRODUCT:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = fill
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def _as_matrix(X: Any, what: str) -> np.ndarray:
    X = np.ascontiguousarray(X, dtype=np.float32)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise UserError(f"the sparse autoencoder needs {what} as a non-empty samples x features matrix, not shape {X.shape}",
                        fix="Give it at least one sample with at least one feature")
    if not np.all(np.isfinite(X)):
        raise UserError(f"the {what} hold NaN or infinite values", fix="Remove or repair those values first")
    return X


@torch.no_grad()
def _sum_squares(model: SparseAutoencoder, X: torch.Tensor) -> tuple[float, np.ndarray]:
    """Summed squared reconstruction error of ``X``, and how many samples each latent is active in."""
    total, active = 0.0, torch.zeros(model.W_enc.shape[0], dtype=torch.int64, device=X.device)
    for start in range(0, len(X), CHUNK):
        x = X[start:start + CHUNK]
        x_hat, z = model(x)
        total += float(((x - x_hat) ** 2).sum(dtype=torch.float64))
        active += (z > ACTIVE).sum(0)
    return total, active.cpu().numpy()


def _spread(X: torch.Tensor, mean: torch.Tensor) -> float:
    """Summed squared distance of the rows of ``X`` to ``mean`` (float64, in chunks)."""
    return sum(float(((X[s:s + CHUNK] - mean) ** 2).sum(dtype=torch.float64)) for s in range(0, len(X), CHUNK))


def _auxiliary_loss(model: SparseAutoencoder, pre: torch.Tensor, dead: torch.Tensor, residual: torch.Tensor,
                    k_aux: int) -> torch.Tensor:
    """AuxK (Gao et al. 2024): the top ``k_aux`` dead latents reconstruct what the live ones left over.

    Its gradient reaches only dead latents, pulling them towards directions the code misses.
    Normalised by the residual's own squared norm, so it matters as much late as early.
    """
    z_aux = topk_relu(pre.masked_fill(~dead, -math.inf), min(k_aux, int(dead.sum())))
    error = ((residual - z_aux @ model.W_dec.T) ** 2).sum(1).mean()
    return error / (residual ** 2).sum(1).mean().clamp_min(1e-12)


def train_sae(X: np.ndarray, X_val: np.ndarray | None, config: TrainingConfig, seed: int = 0,
              *, fewer_latents_fix: str = "Ask for fewer latents, or give more samples"
              ) -> tuple[SparseAutoencoder, dict[str, Any], dict[str, list[float]]]:
    """Fit a sparse autoencoder to the rows of ``X``; early stopping on ``X_val``.

    With ``X_val=None`` the last 10 % of ``X``'s rows are held out for early stopping (nothing
    is held out below 10 rows: then every epoch is run and the last one kept). Returns the
    fitted model (in eval mode, on ``config.device``), facts for a sidecar, and the per-epoch
    history (``train`` objective, ``validation`` MSE, and ``seconds`` since the call began at each epoch's end).
    """
    started = time.perf_counter()
    X = _as_matrix(X, "training samples")
    if X_val is None:
        n_val = int(round(len(X) * VALIDATION_FRACTION)) if len(X) >= MIN_VALIDATION_ROWS else 0
        held_out = f"the last {n_val} training samples" if n_val else "none"
        X, X_val = (X[:-n_val], X[-n_val:]) if n_val else (X, None)
    else:
        X_val = _as_matrix(X_val, "validation samples")
        held_out = "given"
        if X_val.shape[1] != X.shape[1]:
            raise UserError(f"the validation samples have {X_val.shape[1]} features, the training samples {X.shape[1]}",
                            fix="Give both as samples x the same features")
    n, d = X.shape
    m = int(config.latents)
    if m > n:
        raise UserError(f"the sparse autoencoder asks for {m} latents but has only {n} training samples: a latent "
                        "size larger than the samples it is learned from is meaningless", fix=fewer_latents_fix)
    if config.sparsity == "topk" and not 1 <= config.k <= m:
        raise UserError(f"k={config.k} active latents cannot be chosen from latents={m}",
                        fix=f"Give k between 1 and {m} (k <= latents)")
    device = resolve_device(config.device)
    generator = torch.Generator().manual_seed(int(seed))  # CPU generator: the same draws on any device

    with cpu_settings(device, min(n, int(config.batch_size)) * d * m):
        Xt = torch.from_numpy(X).to(device)
        Vt = torch.from_numpy(X_val).to(device) if X_val is not None else None
        mean = torch.from_numpy(X.mean(0, dtype=np.float64).astype(np.float32)).to(device)  # no float64 copy of X
        variance = max(_spread(Xt, mean) / n, 1e-12)  # V: mean squared distance of a sample to the mean
        model = SparseAutoencoder(d, m, config.sparsity, config.k)
        model.initialise(mean.cpu(), generator)
        model.to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=float(config.lr), fused=True)
        l1 = float(config.l1) / math.sqrt(variance) if config.sparsity == "l1" else 0.0

        history: dict[str, list[float]] = {"train": [], "validation": [], "seconds": []}
        best_val, best_epoch, best_state = math.inf, 0, None
        reference, since, stopped_early = math.inf, 0, False
        batch = max(1, int(config.batch_size))
        steps_per_epoch = math.ceil(n / batch)
        max_epochs = max(int(config.epochs), math.ceil(MIN_STEPS / steps_per_epoch))
        patience = max(int(config.patience), math.ceil(MIN_PATIENCE_STEPS / steps_per_epoch))
        idle = torch.zeros(m, dtype=torch.int64, device=device)  # samples since each latent was last active
        aux = min(m, max(1, d // 2)) if config.sparsity == "topk" and config.k < m else 0
        desc = f"sparse autoencoder training ({n} samples x {d} inputs -> {m} latents)"
        with Step(desc, total=max_epochs, unit="epochs") as progress:
            for epoch in range(1, max_epochs + 1):
                model.train()
                order = torch.randperm(n, generator=generator).to(device)
                total = torch.zeros((), dtype=torch.float64, device=device)
                for start in range(0, n, batch):
                    x = Xt.index_select(0, order[start:start + batch])
                    pre = model.preactivations(x)
                    z = model.sparsify(pre)
                    x_hat = model.decode(z)
                    loss = ((x - x_hat) ** 2).sum(1).mean() / variance
                    if l1:
                        loss = loss + l1 * (z * model.W_dec.norm(dim=0)).sum(1).mean()
                    idle += len(x)
                    idle.masked_fill_((z > 0).any(0), 0)
                    dead = idle > n  # not active for an epoch's worth of samples
                    if aux and bool(dead.any()):
                        loss = loss + AUX_WEIGHT * _auxiliary_loss(model, pre, dead, (x - x_hat).detach(), aux)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    model.project_decoder_gradient()
                    optimizer.step()
                    model.normalise_decoder()
                    total += loss.detach().double() * len(x)
                history["train"].append(float(total) / n)
                model.eval()
                if Vt is not None:
                    val = _sum_squares(model, Vt)[0] / Vt.numel()
                    history["validation"].append(val)
                    if val < best_val:
                        best_val, best_epoch = val, epoch
                        best_state = {key: value.detach().clone() for key, value in model.state_dict().items()}
                    if val < reference * (1 - MIN_DELTA):
                        reference, since = val, epoch
                    elif epoch - since >= patience:
                        stopped_early = True
                history["seconds"].append(time.perf_counter() - started)
                progress.update()
                if stopped_early:
                    progress.note = f"stopped early at epoch {epoch}, best {best_epoch}"
                    break
        if best_state is not None:
            model.load_state_dict(best_state)
        else:
            best_epoch = len(history["train"])
        model.eval()

        train_sse, active = _sum_squares(model, Xt)
        info: dict[str, Any] = {
            "Sparsity": config.sparsity, "Latents": m, "Inputs": d, "TrainingSamples": n,
            "ValidationSamples": 0 if X_val is None else len(X_val), "HeldOut": held_out,
            "Epochs": len(history["train"]), "MaxEpochs": max_epochs, "Patience": patience, "BestEpoch": best_epoch,
            "StoppedEarly": stopped_early, "TrainLoss": history["train"][best_epoch - 1],
            "TrainMSE": train_sse / Xt.numel(), "TrainR2": 1.0 - train_sse / (variance * n),
            "DeadLatents": int((active == 0).sum()), "MeanActiveLatents": float(active.sum() / n),
            "Seed": int(seed), "Device": str(device),
        }
        if config.sparsity == "topk":
            info["K"] = int(config.k)
        else:
            info["L1"] = float(config.l1)
        if Vt is not None:
            val_sse = _sum_squares(model, Vt)[0]
            info["ValidationMSE"] = val_sse / Vt.numel()
            info["ValidationR2"] = 1.0 - val_sse / max(_spread(Vt, mean), 1e-12)
    return model, info, history
