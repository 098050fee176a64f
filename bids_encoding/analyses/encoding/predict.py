"""A saved encoding model applied to new stimuli: ``bids-encoding predict WEIGHTS.json EVENTS.tsv OUT``.

Reads back what ``--save-weights`` wrote (:func:`..encoding.weights_output`), extracts the
events' features with the same plugin, options and cache as the app, builds the run's
design with the fit's own :func:`..encoding.run_design`, and writes design @ weights as a
4D image on the model's grid, in z units of a run (in-silico experiments).
"""

from __future__ import annotations

import gzip
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from ... import __version__
from ... import features as feature_store
from ...derivatives import atomic_write, bids_label, derivative_path, parse_entities, software_versions, write_json
from ...errors import UserError
from ...options import DESIGNS, HRF_MODELS, EncodingOptions, FMRIOptions
from ...stimuli import read_events
from . import run_design

log = logging.getLogger("bids_encoding")


@dataclass(frozen=True)
class SavedModel:
    """An encoding model read back from its weights' sidecar and safetensors file (:func:`load_model`)."""

    sidecar_file: Path
    sidecar: dict[str, Any]
    weights: np.ndarray  # design columns x voxels
    intercept: np.ndarray  # voxels
    voxels: np.ndarray  # voxels x 3: (i, j, k) on the grid
    shape: tuple[int, int, int]
    affine: np.ndarray
    tr: float
    options: EncodingOptions  # the design and its delays
    hrf_model: str
    high_pass: float

    @property
    def name(self) -> str:
        return str(self.sidecar["FeatureSpace"])

    @property
    def spec(self) -> str:
        return str(self.sidecar["Extractor"]["Spec"])

    @property
    def label(self) -> str:
        """The feature space's label within its extractor's feature set (``""``, ``"L6"``)."""
        return str(self.sidecar["Extractor"].get("Space", ""))


def _not_a_model(path: Path, why: str) -> UserError:
    return UserError(f"this is not the sidecar of a saved encoding model: {why}", path=path,
                     fix="Give the .json sidecar of a desc-<space>_weights.safetensors file that 'bids-encoding ... "
                         "participant --save-weights' wrote (with the .safetensors file beside it)")


def load_model(sidecar_file: Path) -> SavedModel:
    """Read a saved encoding model (the sidecar of its ``_weights.safetensors``), every field checked."""
    sidecar_file = Path(sidecar_file)
    if not sidecar_file.is_file():
        raise UserError("the weights sidecar does not exist", path=sidecar_file,
                        fix="Give the .json sidecar of a desc-<space>_weights.safetensors file written with "
                            "--save-weights")
    try:
        sidecar = json.loads(sidecar_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _not_a_model(sidecar_file, f"it cannot be read as JSON ({exc})") from None
    needed = ("FeatureSpace", "Extractor", "Design", "RepetitionTime", "Grid")
    missing = [key for key in needed if not isinstance(sidecar, dict) or key not in sidecar]
    if missing:
        raise _not_a_model(sidecar_file, f"it has no {', '.join(missing)}"
                                         + (" (a sidecar of an embedder's weights?)" if "Embedder" in sidecar else ""))
    tensors_file = sidecar_file.with_name(sidecar_file.name.removesuffix(".json") + ".safetensors")
    if not tensors_file.is_file():
        raise UserError("the weights file beside this sidecar does not exist", path=tensors_file,
                        fix="Keep the .safetensors file beside its .json sidecar, with the same name")
    try:
        from safetensors.numpy import load_file

        tensors = load_file(str(tensors_file))
    except Exception as exc:  # safetensors raises its own SafetensorError, OSError or ValueError
        raise UserError(f"the weights file cannot be read as safetensors ({type(exc).__name__}: {exc})",
                        path=tensors_file, fix="Restore it, or re-run the participant level with --save-weights") from None
    try:
        design, grid = sidecar["Design"], sidecar["Grid"]
        shape = tuple(int(n) for n in grid["Shape"])
        affine = np.asarray(grid["Affine"], dtype=float)
        tr = float(sidecar["RepetitionTime"])
        if design["Type"] not in DESIGNS or (design["Type"] == "hrf" and design.get("HRFModel") not in HRF_MODELS):
            raise ValueError(f"unknown design {design['Type']!r} / HRF {design.get('HRFModel')!r}")
        delays = tuple(int(d) for d in design.get("Delays") or EncodingOptions().delays)
        options = EncodingOptions(design=design["Type"], delays=delays)
        high_pass = float(design.get("HighPass") or 0.0)
        spec = str(sidecar["Extractor"]["Spec"])
        if len(shape) != 3 or affine.shape != (4, 4) or not tr > 0 or not math.isfinite(tr) or not spec:
            raise ValueError("the grid needs a 3D shape and a 4x4 affine, the TR a positive number, the extractor a "
                             "spec")
    except (KeyError, TypeError, ValueError, AttributeError, UserError) as exc:
        raise _not_a_model(sidecar_file, f"its model description is incomplete or invalid ({exc})") from None
    absent = [key for key in ("weights", "intercept", "voxels") if key not in tensors]
    if absent:
        raise UserError(f"the weights file has no tensor {', '.join(absent)}", path=tensors_file,
                        fix="Give an encoding model's weights written with --save-weights (not an embedder's)")
    weights, intercept, voxels = tensors["weights"], tensors["intercept"], tensors["voxels"]
    n_voxels = weights.shape[1] if weights.ndim == 2 else -1
    if (weights.ndim != 2 or intercept.shape != (n_voxels,) or voxels.shape != (n_voxels, 3)
            or (len(voxels) and (voxels.min() < 0 or np.any(voxels.max(axis=0) >= np.asarray(shape))))):
        raise UserError(f"the weights file's tensors do not fit together (weights {list(weights.shape)}, intercept "
                        f"{list(intercept.shape)}, voxels {list(voxels.shape)}, grid {list(shape)})",
                        path=tensors_file, fix="Restore the file and its sidecar from the same run")
    return SavedModel(sidecar_file, sidecar, weights.astype(np.float32, copy=False),
                      intercept.astype(np.float32, copy=False), voxels.astype(np.int64), shape, affine, tr, options,
                      str(design.get("HRFModel") or FMRIOptions().hrf_model), high_pass)


def model_design(model: SavedModel, features: feature_store.FeatureSet, n_volumes: int) -> np.ndarray:
    """A run's design for a saved model: :func:`run_design`, with the design the model was fitted with."""
    return run_design(features, model.label, n_volumes, model.tr, model.options, model.hrf_model, model.high_pass)


def volumes_to_cover(events_file: Path, tr: float) -> int:
    """The volumes from 0 to the end of the last event, rounded up to whole TRs."""
    events = read_events(events_file)
    end = float((events["onset"] + events["duration"]).max()) if len(events) else 0.0
    return int(math.ceil(end / tr - 1e-9))


def predict(model: SavedModel, events_file: Path, stimuli_dir: Path | None = None, n_volumes: int | None = None,
            cache_dir: Path | None = None, registry=None) -> tuple[np.ndarray, dict[str, Any]]:
    """The model's predicted response (volumes x voxels, z units) to the stimuli of ``events_file``, and the
    features' provenance. The features come from the same extractor, options and cache as the app's."""
    events_file = Path(events_file)
    if n_volumes is not None and n_volumes < 2:
        raise UserError(f"--n-volumes {n_volumes}: a prediction is z-scored over its volumes, as a run, and needs at "
                        "least 2", fix="Give the number of volumes of the run to predict, e.g. --n-volumes 200")
    if n_volumes is None:
        n_volumes = volumes_to_cover(events_file, model.tr)
        if n_volumes < 2:
            raise UserError(f"the events end {'before any volume' if n_volumes == 0 else 'within the first TR'} "
                            f"({model.tr:g} s), too early for a prediction z-scored over a run", path=events_file,
                            fix="Give the run's length with --n-volumes N")
    features, provenance = feature_store.extract(model.spec, events_file, stimuli_dir, registry, cache_dir)
    fitted = model.sidecar["Extractor"]
    now = provenance.get("Plugin", {})
    if (now.get("Distribution"), now.get("Version")) != (fitted.get("Distribution"), fitted.get("Version")) or \
            json.dumps(provenance.get("Options"), sort_keys=True, default=str) != \
            json.dumps(fitted.get("Options"), sort_keys=True, default=str):
        log.warning("the model of %s was fitted on features of %s %s with options %s; these come from %s %s with options "
                    "%s: the prediction is only as good as the features agree", model.name,
                    fitted.get("Distribution"), fitted.get("Version"), fitted.get("Options"), now.get("Distribution"),
                    now.get("Version"), provenance.get("Options"))
    if model.label not in features.spaces:
        raise UserError(f"the extractor '{model.spec}' gave the feature spaces {sorted(features.spaces)} for these "
                        f"events, not '{model.label}', which the model of {model.name} was fitted on",
                        path=events_file, fix="Install the plugin version the model was fitted with (see its sidecar's "
                                              "'Extractor')")
    design = model_design(model, features, n_volumes)
    if design.shape[1] != model.weights.shape[0]:
        raise UserError(f"the design of these events has {design.shape[1]} columns, and the model of {model.name} "
                        f"{model.weights.shape[0]} weights per voxel", path=events_file,
                        fix="Install the plugin version the model was fitted with (see its sidecar's 'Extractor')")
    return design @ model.weights + model.intercept, provenance


def prediction_entities(model: SavedModel, events_file: Path) -> dict[str, str]:
    """The name of a prediction: the brain's entities (subject, acquisition, space) from the model's file name, the
    stimuli's (session, task, run) from the events' (a task named after the events file when its name has none)."""
    fitted, stimuli = parse_entities(model.sidecar_file), parse_entities(events_file)
    task = stimuli.get("task") or bids_label(Path(events_file).name.split(".")[0].removesuffix("_events")) or "events"
    return {"subject": fitted.get("subject", ""), "session": stimuli.get("session", ""), "task": task,
            "acquisition": fitted.get("acquisition", ""), "run": stimuli.get("run", ""),
            "space": fitted.get("space", ""), "desc": bids_label(model.name, "Predicted")}


def write_prediction(model: SavedModel, prediction: np.ndarray, events_file: Path, out_dir: Path,
                     provenance: dict[str, Any], command: str | None = None) -> Path:
    """The predicted response as a 4D NIfTI on the model's grid (0 outside its voxels, TR in the header) and its
    JSON sidecar, each written atomically into ``out_dir`` under a BIDS-style name."""
    data = np.zeros(model.shape + (len(prediction),), dtype=np.float32)
    data[tuple(model.voxels.T)] = prediction.T
    img = nib.Nifti1Image(data, model.affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_zooms(img.header.get_zooms()[:3] + (model.tr,))
    name = derivative_path(prediction_entities(model, events_file), "bold", ".nii.gz").name
    target = Path(out_dir) / name
    atomic_write(target, lambda tmp: tmp.write_bytes(gzip.compress(img.to_bytes(), compresslevel=6, mtime=0)))
    tensors = model.sidecar_file.with_name(model.sidecar_file.name.removesuffix(".json") + ".safetensors")
    write_json(target.with_name(name.replace(".nii.gz", ".json")), {
        "Description": f"BOLD response predicted by the encoding model of {model.name} for the stimuli of "
                       f"{Path(events_file).name}: design @ weights + intercept, in z units of a run (the model was "
                       "fitted to BOLD z-scored within each run); 0 outside the model's voxels",
        "Units": "z", "RepetitionTime": model.tr, "NumberOfVolumes": int(len(prediction)), "StartTime": 0.0,
        "FeatureSpace": model.name,
        "EncodingModel": {"Weights": str(model.sidecar_file), "Extractor": model.sidecar["Extractor"],
                          "Design": model.sidecar["Design"], "Model": model.sidecar.get("Model")},
        "Features": provenance,
        "Sources": [str(Path(events_file).resolve()), str(model.sidecar_file.resolve()), str(tensors.resolve())],
        "bids-encoding": {"Version": __version__, "Command": command, "SoftwareVersions": software_versions()},
    })
    return target


def predict_response(weights_file: Path, events_file: Path, out_dir: Path, stimuli_dir: Path | None = None,
                     n_volumes: int | None = None, cache_dir: Path | None = None, registry=None,
                     command: str | None = None) -> Path:
    """``bids-encoding predict``: a saved model's predicted response to an events file's stimuli, written into
    ``out_dir``; returns the image's path."""
    model = load_model(weights_file)
    prediction, provenance = predict(model, events_file, stimuli_dir, n_volumes, cache_dir, registry)
    return write_prediction(model, prediction, events_file, out_dir, provenance, command)
