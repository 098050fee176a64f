"""Brain embedders at scale: the sae embedder's time per epoch vs scikit-learn's MiniBatchDictionaryLearning per pass.

Run: .venv/bin/python bench/embedding.py [--samples 10000 --voxels 5000 --latents 512 --k 32 --batch-size 256]
(``--samples 2000 --voxels 1000`` is a quick check). Needs the plugin ``bids-encoding-sae`` installed.

Data: samples x voxels float32, each voxel z-scored (as the embedding stage hands it over), made of a
planted sparse code (``latents`` unit-norm atoms, ``k`` active per sample) plus as much noise again.
Validation: 10 % more samples drawn the same way, passed as ``X_val`` (the sae embedder's early
stopping reads them after every epoch; that pass is part of its epoch time).

* ours: ``SAEEmbedder(latents, sparsity=topk, k, batch_size)`` from ``bids_encoding_sae``, CPU, trained
  for 1 + ``--epochs`` epochs with early stopping off; the first epoch is the warm-up and the others
  are timed from the training history (each epoch: shuffled mini-batches, Adam steps, decoder
  renormalisation, the validation pass);
* peer: scikit-learn's ``MiniBatchDictionaryLearning(n_components=latents, batch_size, max_iter=1)``,
  its other options at their defaults (LARS lasso coding, ``alpha=1``), ``random_state=0``, on the same
  training samples. At full size one of its mini-batches takes about 25 s here, so a pass (40 of them)
  would take ~17 minutes: by default ``partial_fit`` is timed on ``--peer-batches`` mini-batches after a
  first (warm-up, dictionary initialisation) one and the mean extrapolated to a pass of
  ``ceil(samples / batch_size)`` mini-batches; ``--peer-full-pass`` times ``fit`` over the whole pass;
* context: the built-in ``pca`` embedder (exact SVD, ``latents`` components) fitted on the same samples,
  and numpy's float32 matmul speed.

All in this process, one after the other, with the thread counts left as they are. Peak RSS: the
high-water mark is reset before each (``/proc/self/clear_refs``) and read after, so each figure is that
fit's own peak, the data (about ``samples x voxels x 4`` bytes, plus the validation samples) included;
where the reset is not allowed, the process's peak so far. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import final_line, matmul_gflops, peak_rss_gb, timed  # noqa: E402

from bids_encoding.plugins.builtin import PCAEmbedder  # noqa: E402


def _status_gb(field: str = "VmHWM") -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024 ** 2
    return float("nan")


def measured(function, *args, **kwargs):
    """Result, wall seconds and peak RSS (GB) of one call (the peak reset first where Linux allows it)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        resettable = True
    except OSError:
        resettable = False
    result, seconds = timed(function, *args, **kwargs)
    return result, seconds, _status_gb() if resettable else peak_rss_gb()


def make_data(samples: int, voxels: int, atoms: int, k: int, seed: int = 0) -> np.ndarray:
    """A planted sparse code plus noise of equal variance, each voxel z-scored; float32, built in chunks."""
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((atoms, voxels)).astype(np.float32)
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    X = np.empty((samples, voxels), np.float32)
    for start in range(0, samples, 1000):
        n = min(1000, samples - start)
        codes = np.zeros((n, atoms), np.float32)
        rows = np.repeat(np.arange(n), k)
        codes[rows, np.argsort(rng.random((n, atoms)), axis=1)[:, :k].ravel()] = rng.uniform(1, 3, n * k)
        X[start:start + n] = codes @ D * np.sqrt(voxels / k / 4.0) + rng.standard_normal((n, voxels), np.float32)
    X -= X.mean(0)
    X /= X.std(0)
    return X


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--voxels", type=int, default=5_000)
    parser.add_argument("--latents", type=int, default=512)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs after the warm-up epoch")
    parser.add_argument("--peer-batches", type=int, default=3,
                        help="scikit-learn's timed mini-batches (after a first one), extrapolated to a pass")
    parser.add_argument("--peer-full-pass", action="store_true",
                        help="time scikit-learn's whole pass instead (about 25 s per mini-batch at full size here: ~17 min)")
    parser.add_argument("--skip-pca", action="store_true")
    args = parser.parse_args()
    if args.samples < 2 * args.batch_size or args.k > args.latents:
        parser.error("give --samples of at least two batches, and --k <= --latents")

    from bids_encoding_sae import SAEEmbedder
    from sklearn.decomposition import MiniBatchDictionaryLearning

    import torch

    n, d, m = args.samples, args.voxels, args.latents
    both = make_data(n + n // 10, d, m, args.k)
    X, X_val = both[:n], both[n:]
    del both
    base_gb = _status_gb("VmRSS")
    print(f"data: {n} samples x {d} voxels (+{len(X_val)} validation samples), float32, z-scored; "
          f"latents {m}, topk k={args.k}, batch {args.batch_size}; torch {torch.__version__} with "
          f"{torch.get_num_threads()} threads; numpy float32 matmul {matmul_gflops():.0f} GFLOP/s; "
          f"RSS before the fits (data, libraries) {base_gb:.2f} GB")

    sae = SAEEmbedder(latents=m, sparsity="topk", k=args.k, batch_size=args.batch_size, epochs=1 + args.epochs,
                      patience=10 ** 6)
    _, sae_s, sae_gb = measured(sae.fit, X, X_val, seed=0)
    stamps = np.asarray(sae.history_["seconds"])
    warmup_s, epoch_s = float(stamps[0]), float(np.diff(stamps).mean())
    flops = 12.0 * n * d * m  # per epoch: encoder and decoder forward, their weight gradients, the latents' gradient
    print(f"ours   sae embedder:  {epoch_s:7.2f} s per epoch (mean of {args.epochs} after a {warmup_s:.2f} s warm-up "
          f"epoch; ~{flops / epoch_s / 1e9:.0f} GFLOP/s in the dense products), {sae_s:.1f} s in all, "
          f"peak RSS {sae_gb:.2f} GB; validation R2 {sae.info_['ValidationR2']:.3f} after {sae.info_['Epochs']} epochs, "
          f"{sae.info_['DeadLatents']} dead latents")

    batches = -(-n // args.batch_size)
    peer = MiniBatchDictionaryLearning(n_components=m, batch_size=args.batch_size, max_iter=1, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if args.peer_full_pass:
            _, peer_s, peer_gb = measured(peer.fit, X)
            how = f"measured: fit with max_iter=1, {peer.n_steps_} mini-batches"
        else:
            timed_batches = min(args.peer_batches, batches - 1)
            starts = [i * args.batch_size for i in range(timed_batches + 1)]

            def partial_fits():
                seconds = [timed(peer.partial_fit, X[s:s + args.batch_size])[1] for s in starts]
                return seconds[0], float(np.mean(seconds[1:]))

            (peer_warmup_s, peer_batch_s), _, peer_gb = measured(partial_fits)
            peer_s = peer_batch_s * batches
            how = (f"extrapolated: {peer_batch_s:.2f} s per mini-batch (partial_fit, mean of {timed_batches} after a "
                   f"{peer_warmup_s:.2f} s first batch) x {batches} mini-batches; --peer-full-pass measures a whole fit")
    print(f"peer   sklearn MiniBatchDictionaryLearning: {peer_s:7.2f} s per pass ({how}), peak RSS {peer_gb:.2f} GB")
    print(f"ratio  ours per epoch / theirs per pass: {epoch_s / peer_s:.4f} ({peer_s / epoch_s:.0f}x faster per pass "
          "over the data)")

    pca_s = pca_gb = None
    if not args.skip_pca:
        _, pca_s, pca_gb = measured(PCAEmbedder(latents=m).fit, X, X_val, seed=0)
        print(f"pca    built-in embedder (exact SVD, {m} components): {pca_s:7.2f} s to fit, peak RSS {pca_gb:.2f} GB")

    final_line(rss_before_fits_gb=base_gb, samples=n, voxels=d, latents=m, k=args.k, batch_size=args.batch_size, sae_epoch_s=epoch_s,
               sae_warmup_epoch_s=warmup_s, sae_peak_rss_gb=sae_gb, sklearn_pass_s=peer_s,
               sklearn_peak_rss_gb=peer_gb, ratio_sae_epoch_vs_sklearn_pass=epoch_s / peer_s,
               pca_fit_s=pca_s, pca_peak_rss_gb=pca_gb)


if __name__ == "__main__":
    main()
