"""Run a feature-extractor plugin on a run's stimuli, cache and store the result.

This is the stage between the events of a run and the design matrix. A plugin
that raises is reported as a user-facing error naming the plugin and its
distribution; a plugin that returns malformed features is caught here too, not
deep inside the model.

Features are cached on disk, content-addressed: the key hashes the plugin's
name, distribution and version, its options (plus the size and modification
time of any file or folder an option names, so a changed vector file or model
folder is noticed) and the stimuli themselves (onsets, words, image bytes), not
the path of the events file. A second run, in another output or work folder,
recomputes nothing. Parallel runs that need the same entry take turns on a lock
beside it (one computes, the others read), and each entry is written atomically.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from PIL import Image as PILImage

from .contrasts import contrast_events
from .errors import UserError
from .locks import exclusive
from .plugins.registry import Registered, Registry, host_options, installed_plugins, instantiate
from .plugins.types import FeatureSet
from .stimuli import Images, Stimuli, Video, check_media, stimuli_for, stimuli_from_events

log = logging.getLogger("bids_encoding")
CACHE_FORMAT = 1  # bump when what is stored changes


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stimulus_digest(stimuli: Stimuli) -> str:
    """A hash of what an extractor sees: every field of the stimulus sequence, and the bytes of files it names."""
    digest = hashlib.sha256(type(stimuli).__name__.encode())
    for item in dataclasses.fields(stimuli):
        if not item.compare:
            continue
        value = getattr(stimuli, item.name)
        digest.update(item.name.encode())
        if isinstance(value, np.ndarray):
            digest.update(np.ascontiguousarray(value, dtype=np.float64).tobytes())
        else:
            digest.update(json.dumps([_file_digest(v) if isinstance(v, Path) else v for v in value],
                                     default=str).encode())
    return digest.hexdigest()


def _path_stamp(value: Any) -> Any:
    """Size and modification time of a file or folder named by an option value, so that changing it is noticed."""
    if not isinstance(value, str) or not value or len(value) > 4096:
        return None
    path = Path(value).expanduser()
    try:
        if path.is_file():
            stat = path.stat()
            return [stat.st_size, stat.st_mtime_ns]
        if path.is_dir():
            return sorted([p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in path.iterdir() if p.is_file())
    except OSError:
        return None
    return None


def cache_key(entry: Registered, options: dict[str, Any], stimuli: Stimuli) -> str:
    """The content address of one extraction."""
    payload = {"format": CACHE_FORMAT, "plugin": entry.provenance(), "options": options,
               "paths": {k: _path_stamp(v) for k, v in options.items() if _path_stamp(v) is not None},
               "stimuli": stimulus_digest(stimuli)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def cache_path(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / key[:2] / f"{key}.npz"


def extract(spec: str, events_file: Path, stimuli_dir: Path | None, registry: Registry | None = None,
            cache_dir: Path | None = None) -> tuple[FeatureSet, dict[str, Any]]:
    """Features of one run's events for the extractor named by ``spec``, with provenance (from the cache if there)."""
    extractor, entry = instantiate(spec, registry if registry is not None else installed_plugins())
    found = stimuli_from_events(events_file, stimuli_dir)
    source = stimuli_for(extractor.modality, found)
    if source is None:
        raise UserError(
            f"feature extractor '{entry.name}' needs {extractor.modality} stimuli, but this events file has none",
            path=events_file,
            fix="Pick features that match the task's events (bids-encoding plugins lists each one's modality), or select another --task",
        )
    stimuli, options = found[source], extractor.get_options()
    check_media(stimuli, events_file)
    if source == extractor.modality:
        def compute() -> FeatureSet:
            return run_extractor(extractor, entry, stimuli, events_file)
    else:  # a movie's frames through an image extractor
        options = {**options, **host_options(extractor)}

        def compute() -> FeatureSet:
            return frame_features(extractor, entry, stimuli, extractor.fps, events_file)
    if cache_dir is None:
        features, provenance = _extract_now(compute, entry, options)
    else:
        cached = cache_path(cache_dir, cache_key(entry, options, stimuli))
        hit = _from_cache(cached, entry, events_file, warn=False)  # an entry is only read: no lock needed
        if hit is None:
            with _entry_lock(cached):  # parallel jobs with the same stimuli: one computes, the others read its entry
                hit = _from_cache(cached, entry, events_file) or _extract_now(compute, entry, options, store=cached)
        features, provenance = hit
    return features, {**provenance, "Spec": spec, "Events": str(events_file)}


def _extract_now(compute: Callable[[], FeatureSet], entry: Registered, options: dict[str, Any],
                 store: Path | None = None) -> tuple[FeatureSet, dict[str, Any]]:
    features = compute()
    provenance = {"Plugin": entry.provenance(), "Options": options, "Details": features.info}
    if store is not None:
        _store_in_cache(features, provenance, store)
    return features, provenance


def _from_cache(cached: Path, entry: Registered, events_file: Path,
                warn: bool = True) -> tuple[FeatureSet, dict[str, Any]] | None:
    if not cached.exists():
        return None
    try:
        found = load(cached)
    except (OSError, ValueError, KeyError):
        if warn:
            log.warning("ignoring an unreadable cache entry %s", cached)
        return None
    log.info("features of %s by %s: from the cache (%s)", Path(events_file).name, entry.name, cached)
    return found


@contextmanager
def _entry_lock(cached: Path) -> Iterator[None]:
    """Hold the entry's lock (``<key>.lock`` beside it) while the entry is made, then remove it. Temporary files
    of this key that a killed writer left are removed under the lock, when nobody can be writing them. Without a
    writable cache folder there is no lock (nor an entry: :func:`_store_in_cache` warns about that)."""
    lock = cached.with_suffix(".lock")
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        lock.touch()
    except OSError:
        yield
        return
    with exclusive(lock):
        try:
            for stale in cached.parent.glob(f"{cached.stem}.*.tmp.npz"):
                stale.unlink(missing_ok=True)
            yield
        finally:
            lock.unlink(missing_ok=True)  # waiters notice the removal and lock anew (see locks.exclusive)


def run_extractor(extractor: Any, entry: Registered, stimuli: Stimuli, events_file: Path | None = None) -> FeatureSet:
    """The extractor's checked features of ``stimuli``; a plugin's failure becomes a :class:`UserError`."""
    try:
        features = extractor.extract(stimuli)
        features.check(len(stimuli))
    except UserError:
        raise
    except Exception as exc:
        raise UserError(
            f"feature extractor '{entry.name}' (from {entry.distribution} {entry.version}) failed: {type(exc).__name__}: {exc}",
            path=events_file,
            fix="Check the stimuli this events file lists and the extractor's options; if they are right, report it to the plugin's authors",
        ) from None
    return features


FRAME_BATCH = 32  # frames handed to an image extractor at once: its own batching works within, memory stays bounded


def frame_features(extractor: Any, entry: Registered, movies: Video, fps: float,
                   events_file: Path | None = None) -> FeatureSet:
    """An image extractor's features of a movie's frames sampled at ``fps``: continuous features at that rate.

    Frames are decoded one at a time and handed to the extractor as images (uncompressed BMP files in a temporary
    folder, as any image extractor reads its stimuli: lossless, and quicker to write than PNG) in batches of
    :data:`FRAME_BATCH`, so a long movie never sits in memory."""
    clips: list[dict[str, np.ndarray]] = []
    columns: dict[str, list[str]] = {}
    info: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bids-encoding-frames-") as folder:
        for index in range(len(movies)):
            rows: list[dict[str, np.ndarray]] = []
            batch: list[tuple[float, Path]] = []

            def flush() -> None:
                images = Images(onset=np.array([t for t, _ in batch]), duration=np.full(len(batch), 1.0 / fps),
                                source=movies.source, path=tuple(p for _, p in batch))
                features = run_extractor(extractor, entry, images, events_file)
                rows.append(features.spaces)
                columns.update(features.columns)
                for key, value in features.info.items():  # counts add up over batches; other facts are the first's
                    if isinstance(value, int) and not isinstance(value, bool) and key in info:
                        info[key] += value
                    else:
                        info.setdefault(key, value)
                for _, used in batch:
                    used.unlink()
                batch.clear()

            for number, (time, frame) in enumerate(movies.frames(index, fps)):
                path = Path(folder, f"clip{index}_frame{number:07d}.bmp")
                PILImage.fromarray(frame).save(path)
                batch.append((time, path))
                if len(batch) == FRAME_BATCH:
                    flush()
            if batch:
                flush()
            clips.append({label: np.concatenate([r[label] for r in rows]) for label in rows[0]})
    labels = list(clips[0])
    return FeatureSet.continuous(movies, {label: [clip[label] for clip in clips] for label in labels}, fps,
                                 columns={label: columns.get(label) for label in labels},
                                 **{**info, "Frames": {"PerSecond": fps, "Sampling": "the frame on screen at k / fps s"}})


def _store_in_cache(features: FeatureSet, provenance: dict[str, Any], path: Path) -> None:
    """Write a cache entry atomically (a temporary file renamed), so parallel runs never read half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{path.stem}.", suffix=".tmp.npz")
        os.close(handle)
        try:
            save(features, provenance, Path(tmp))
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    except OSError as exc:
        log.warning("could not write the feature cache entry %s (%s); features are not cached", path, exc)


def save(features: FeatureSet, provenance: dict[str, Any], path: Path) -> Path:
    """Store a feature set as ``.npz`` (arrays) with its provenance as JSON inside."""
    arrays = {f"space_{label}": values for label, values in features.spaces.items()}
    with open(path, "wb") as handle:  # a file object: numpy would append .npz to a name without it
        np.savez(handle, onset=features.onset, duration=features.duration, **arrays,
                 meta=np.array(json.dumps({"columns": features.columns, "rate": features.rate,
                                           "provenance": provenance}, default=str)))
    return path


def load(path: Path) -> tuple[FeatureSet, dict[str, Any]]:
    """Read back what :func:`save` wrote."""
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        spaces = {key[len("space_"):]: data[key] for key in data.files if key.startswith("space_")}
        features = FeatureSet(onset=data["onset"], duration=data["duration"], spaces=spaces, columns=meta["columns"],
                              rate=meta.get("rate"))
    return features, meta["provenance"]


def trial_features(feature_file: Path, events_file: Path, column: str,
                   values: Sequence[str] | None) -> dict[str, np.ndarray]:
    """Each feature space's rows for the trials of one run (matched by onset), trials x features.

    The trials are the events of ``column`` whose value is one of ``values`` (every event with a value when
    ``values`` is None), in onset order, as :func:`~bids_encoding.contrasts.contrast_events` labels them.
    """
    features, provenance = load(feature_file)
    if features.rate is not None:
        name = (provenance.get("Plugin") or {}).get("Name", "the extractor")
        raise UserError(f"{name}'s features are continuous ({features.rate:g} samples per second, from audio or video), "
                        "so they have no row per trial to compare trials by", path=events_file,
                        fix="Use event features (one row per trial: an image, trial type or word extractor) for decoding "
                            "and RSA, or model continuous features with --analysis encoding")
    events = contrast_events(events_file, column, values)
    onsets = events.loc[events["label"] != "", "onset"].to_numpy(float)
    rows = []
    for onset in onsets:
        distance = np.abs(np.asarray(features.onset, float) - onset)
        nearest = int(np.argmin(distance)) if len(distance) else -1
        if nearest < 0 or distance[nearest] > 1e-3:
            raise UserError(f"no feature row has the onset of the trial at {onset:g} s of {Path(events_file).name}",
                            path=feature_file, fix="Give the features extracted from this run's events")
        rows.append(nearest)
    return {label: np.asarray(values_, float)[rows] for label, values_ in features.spaces.items()}


def groups(feature_files) -> list[list[Path]]:
    """Feature files as one list per extractor: an analysis is given one list of per-run files, or several."""
    if not feature_files:
        return []
    if isinstance(feature_files[0], (str, Path)):
        return [[Path(f) for f in feature_files]]
    return [[Path(f) for f in group] for group in feature_files]
