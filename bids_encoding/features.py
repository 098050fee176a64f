"""Run a feature-extractor plugin on a run's stimuli and store the result.

This is the stage between the events of a run and the design matrix. A plugin
that raises is reported as a user-facing error naming the plugin and its
distribution; a plugin that returns malformed features is caught here too, not
deep inside the model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserError
from .plugin_api import FeatureSet
from .plugin_manager import Registered, installed_plugins, instantiate
from .stimuli import stimuli_from_events


def extract(spec: str, events_file: Path, stimuli_dir: Path | None, registry: dict[str, Registered] | None = None) -> tuple[FeatureSet, dict[str, Any]]:
    """Features of one run's events for the extractor named by ``spec``, with provenance."""
    extractor, entry = instantiate(spec, registry if registry is not None else installed_plugins())
    stimuli = stimuli_from_events(events_file, stimuli_dir).get(extractor.modality)
    if stimuli is None:
        raise UserError(
            f"feature extractor '{entry.name}' needs {extractor.modality} stimuli, but this events file has none",
            path=events_file,
            fix="Pick features that match the task's events (bids-encoding plugins lists each one's modality), or select another --task",
        )
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
    provenance = {"Plugin": entry.provenance(), "Options": extractor.get_options(), "Spec": spec, **features.info}
    return features, provenance


def save(features: FeatureSet, provenance: dict[str, Any], path: Path) -> Path:
    """Store a feature set as ``.npz`` (arrays) with its provenance as JSON inside."""
    arrays = {f"space_{label}": values for label, values in features.spaces.items()}
    np.savez(path, onset=features.onset, duration=features.duration, **arrays,
             meta=np.array(json.dumps({"columns": features.columns, "provenance": provenance}, default=str)))
    return path


def load(path: Path) -> tuple[FeatureSet, dict[str, Any]]:
    """Read back what :func:`save` wrote."""
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        spaces = {key[len("space_"):]: data[key] for key in data.files if key.startswith("space_")}
        features = FeatureSet(onset=data["onset"], duration=data["duration"], spaces=spaces, columns=meta["columns"])
    return features, meta["provenance"]
