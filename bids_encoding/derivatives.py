"""BIDS derivative names, sidecars and safe writing.

Every output file name is built here from entities (nothing else builds a
file name by hand). Files are written atomically (a temporary name in the same
folder, then ``os.replace``), and a whole invocation writes into a staging
folder that is moved into place only when everything succeeded: a failed run
leaves the output folder as it was.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import platform
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from . import __version__
from .locks import exclusive, hold, is_held

log = logging.getLogger("bids_encoding")

# BIDS entity order (specification, appendix "Entity table"), plus ``stat`` after desc as in BEP041/fitlins.
ENTITY_ORDER = [
    ("subject", "sub"), ("session", "ses"), ("task", "task"), ("acquisition", "acq"), ("run", "run"),
    ("hemi", "hemi"), ("space", "space"), ("recording", "recording"), ("res", "res"), ("den", "den"), ("desc", "desc"),
    ("stat", "stat"),
]
KEY_TO_ENTITY = {key: name for name, key in ENTITY_ORDER}
SUFFIX_DATATYPE = {"statmap": "func", "timeseries": "func", "stim": "func"}
STATE_DIR = ".bids-encoding"
STATE_LOCK = "lock"  # held while creating, sweeping or committing a staging folder


@dataclass(frozen=True)
class Output:
    """One file an analysis wrote in its node's folder, with what its BIDS name and sidecar need.

    ``entities`` are added to the task's (subject, task, space); ``datatype`` is the folder (func, eeg, meg).
    Nipype carries outputs between nodes as plain dicts (:meth:`to_dict`, :meth:`from_dict`).
    """

    in_file: str
    entities: dict[str, Any]
    suffix: str = "statmap"
    metadata: dict[str, Any] = field(default_factory=dict)
    datatype: str = "func"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: "dict[str, Any] | Output") -> "Output":
        return values if isinstance(values, Output) else cls(**values)


def bids_label(*parts: str) -> str:
    """Join parts into a BIDS label: alphanumeric only (``gpt2`` + ``L6`` -> ``gpt2L6``)."""
    return "".join(ch for part in parts for ch in str(part) if ch.isalnum())


def derivative_path(entities: dict[str, Any], suffix: str, extension: str, datatype: str | None = "func") -> Path:
    """Relative path of a derivative file: ``sub-01/func/sub-01_task-x_desc-y_stat-z_statmap.nii.gz``.

    Without a ``subject`` entity the file goes under ``group/``.
    """
    parts = [f"{key}-{bids_label(entities[name])}" for name, key in ENTITY_ORDER if entities.get(name) not in (None, "")]
    name = "_".join(parts + [suffix]) + extension
    if entities.get("subject"):
        folder = Path(f"sub-{bids_label(entities['subject'])}")
        if entities.get("session"):
            folder /= f"ses-{bids_label(entities['session'])}"
        return folder / (datatype or "") / name
    return Path("group") / name


def parse_entities(filename: str | Path) -> dict[str, str]:
    """Entities of a file name we wrote (the inverse of :func:`derivative_path`), plus ``suffix``."""
    stem = Path(filename).name.split(".")[0]
    *pairs, suffix = stem.split("_")
    out = {KEY_TO_ENTITY.get(k, k): v for k, _, v in (p.partition("-") for p in pairs)}
    out["suffix"] = suffix
    return out


def software_versions() -> dict[str, str]:
    """Versions of the libraries that shape the numbers, for every sidecar."""
    import importlib.metadata as md

    versions = {"python": platform.python_version(), "bids-encoding": __version__}
    for dist in ("numpy", "scipy", "scikit-learn", "nilearn", "nibabel", "nipype", "pybids"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return versions


# Files the BIDS validator's schema does not cover yet: reports and their figures, statistical
# maps (BEP041 names, as fitlins writes them; on surfaces .shape.gii per hemisphere and CIFTI
# .dscalar.nii), surface brain masks, latent time series, embedders' weights, RSA's RDMs
# and scores. The rest (masks, stimulus features, dataset_description) is validated.
BIDSIGNORE = """*.html
**/figures
*_statmap.nii.gz
*_statmap.shape.gii
*_statmap.dscalar.nii
*_statmap.json
*_mask.shape.gii
*_mask.dscalar.nii
*hemi*mask.json
*den*mask.json
*_regions.tsv
*_regions.json
*_layers.tsv
*_layers.json
*_decoding.tsv
*_decoding.json
*_timeseries.tsv.gz
*_timeseries.json
*_weights.safetensors
*_weights.json
*_encoding.tsv
*_encoding.json
*_trf.tsv.gz
*_trf.json
*_ave.fif
*_ave.json
*_rdm.tsv
*_rdm.json
*_scores.tsv
*_scores.json
group
"""


def dataset_links(bids_dir: Path, derivatives: tuple[Path, ...] = ()) -> dict[str, str]:
    """Names for the input datasets, used in BIDS URIs (``bids:raw:sub-01/...``)."""
    links = {"raw": Path(bids_dir).resolve().as_uri()}
    links.update({f"deriv{i}": Path(d).resolve().as_uri() for i, d in enumerate(derivatives)})
    return links


def bids_uri(path: str | Path, links: dict[str, str]) -> str:
    """``bids:<dataset>:<relative path>`` for a file inside one of the linked datasets (the deepest match)."""
    path = Path(path).resolve()
    best = None
    for name, uri in links.items():
        root = Path(uri.removeprefix("file://"))
        if path.is_relative_to(root) and (best is None or len(root.parts) > len(best[1].parts)):
            best = (name, root)
    return f"bids:{best[0]}:{path.relative_to(best[1]).as_posix()}" if best else path.as_uri()


def dataset_description(source_dataset: Path, source_description: dict, links: dict[str, str] | None = None) -> dict[str, Any]:
    """dataset_description.json of the output folder (a BIDS derivative dataset)."""
    generated_by = {"Name": "bids-encoding", "Version": __version__,
                    "CodeURL": "https://github.com/bids-encoding/bids-encoding"}
    image = os.environ.get("BIDS_ENCODING_CONTAINER")
    if image:
        generated_by["Container"] = {"Type": "docker", "Tag": image}
    source = {"URL": Path(source_dataset).resolve().as_uri()}
    if source_description.get("DatasetDOI"):
        source["DOI"] = source_description["DatasetDOI"]
    return {
        "Name": f"bids-encoding outputs for {source_description.get('Name', Path(source_dataset).name)}",
        "BIDSVersion": source_description.get("BIDSVersion", "1.10.0"),
        "DatasetType": "derivative",
        "GeneratedBy": [generated_by],
        "SourceDatasets": [source],
        "DatasetLinks": links or dataset_links(source_dataset),
    }


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def save_nifti(img, path: Path) -> Path:
    """Save an image with its spatial unit set (mm), as validators expect."""
    img.header.set_xyzt_units("mm")
    img.to_filename(str(path))
    return Path(path)


def save_tsv_gz(values, path: Path) -> Path:
    """A headerless, tab-separated, gzipped table (BIDS ``_stim``/``_physio``), with an empty gzip header
    (no file name, zero time) so that the same numbers always give the same bytes."""
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as handle:
        np.savetxt(handle, values, fmt="%.6g", delimiter="\t")
    return Path(path)


def write_tsv(table, path: Path) -> Path:
    """A BIDS TSV from a pandas DataFrame: tab-separated, a header row, ``n/a`` for missing values, six
    significant digits, ``\\n`` line ends (the same numbers always give the same bytes)."""
    table.to_csv(path, sep="\t", index=False, na_rep="n/a", float_format="%.6g", lineterminator="\n")
    return Path(path)


def column_descriptions(columns: dict[str, str]) -> dict[str, dict[str, str]]:
    """A TSV sidecar's column entries (``{"column": {"Description": ...}}``) from column names and descriptions."""
    return {name: {"Description": text} for name, text in columns.items()}


def write_json(path: Path, data: dict[str, Any]) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"))


def copy_file(source: Path, path: Path) -> Path:
    return atomic_write(path, lambda tmp: shutil.copyfile(source, tmp))


@contextmanager
def staging(output_dir: Path) -> Iterator[Path]:
    """A folder to write this invocation's outputs into; moved into ``output_dir`` only on success.

    Parallel runs may share ``output_dir``: each stage is marked alive by a lock its run holds, stages of
    killed runs are swept, and commits take turns under ``.bids-encoding/lock``.
    """
    output_dir = Path(output_dir)
    state = output_dir / STATE_DIR
    stage = state / f"staging-{uuid.uuid4().hex[:12]}"
    with exclusive(state / STATE_LOCK):  # a sweep never sees a stage that is made but not yet held
        sweep_stale_stages(state)
        stage.mkdir()
        owner = hold(_owner_lock(stage))
    try:
        yield stage
        with exclusive(state / STATE_LOCK):
            commit(stage, output_dir)
    finally:
        with exclusive(state / STATE_LOCK):
            shutil.rmtree(stage, ignore_errors=True)
            owner.close()
            _owner_lock(stage).unlink(missing_ok=True)
            if os.listdir(state) == [STATE_LOCK]:  # nothing else here: leave the folder as it was
                (state / STATE_LOCK).unlink()


def _owner_lock(stage: Path) -> Path:
    return stage.with_name(stage.name + ".lock")


def sweep_stale_stages(state: Path) -> list[Path]:
    """Remove the staging folders of runs that were killed (no living process holds their lock).

    Call it holding ``state / STATE_LOCK``, under which stages are created.
    """
    removed = []
    for stage in sorted(state.glob("staging-*")):
        if stage.suffix == ".lock" or is_held(_owner_lock(stage)):
            continue
        shutil.rmtree(stage, ignore_errors=True)
        _owner_lock(stage).unlink(missing_ok=True)
        removed.append(stage)
    for lock in state.glob("staging-*.lock"):  # a lock whose stage was removed just before its run was killed
        if not lock.with_suffix("").exists() and not is_held(lock):
            lock.unlink(missing_ok=True)
    if removed:
        log.info("removed %d unfinished staging folder(s) left by runs that were stopped: %s", len(removed),
                 ", ".join(p.name for p in removed))
    return removed


def commit(stage: Path, output_dir: Path) -> list[Path]:
    """Move every staged file into the output folder (each move an atomic rename).

    Files in subfolders go first and top-level files (reports, dataset_description.json) last, so that a
    report is never there before what it shows. Call it holding the output folder's lock.
    """
    moved = []
    for source in sorted((p for p in stage.rglob("*") if p.is_file()),
                         key=lambda p: (len(p.relative_to(stage).parts) == 1, p)):
        target = output_dir / source.relative_to(stage)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.name == "dataset_description.json" and target.parent == output_dir and target.exists():
            write_json(source, merged_description(target, source))
        os.replace(source, target)
        moved.append(target)
    return moved


def merged_description(existing: Path, new: Path) -> dict[str, Any]:
    """The new dataset_description.json, keeping the dataset links and sources an earlier run recorded
    (its sidecars' BIDS URIs name them); an unreadable old one is replaced."""
    description = json.loads(Path(new).read_text())
    try:
        old = json.loads(Path(existing).read_text())
    except (OSError, ValueError):
        return description
    if not isinstance(old, dict):
        return description
    description["DatasetLinks"] = {**old.get("DatasetLinks", {}), **description.get("DatasetLinks", {})}
    sources = description.get("SourceDatasets", [])
    description["SourceDatasets"] = [s for s in old.get("SourceDatasets", []) if s not in sources] + sources
    return description


def write_outputs(base: Path, entities: dict[str, Any], outputs: list[Output | dict[str, Any]],
                  provenance: dict | None = None, links: dict[str, str] | None = None) -> list[str]:
    """Copy each :class:`Output` (or its dict) to its BIDS name, with a sidecar.

    ``Sources`` given as paths become BIDS URIs into ``links``. Returns the paths written, relative to ``base``.
    """
    written = []
    provenance = {**(provenance or {}), "SoftwareVersions": software_versions()}
    for output in map(Output.from_dict, outputs):
        source = Path(output.in_file)
        extension = "".join(source.suffixes)
        relative = derivative_path({**entities, **output.entities}, output.suffix, extension, output.datatype)
        if str(relative) in written:  # e.g. the task's brain mask, returned by every model of the task
            continue
        copy_file(source, base / relative)
        sidecar = {**output.metadata, "bids-encoding": provenance}
        if "Sources" in sidecar and links:
            sidecar["Sources"] = [bids_uri(s, links) for s in sidecar["Sources"]]
        write_json(base / str(relative).replace(extension, ".json"), sidecar)
        written.append(str(relative))
    return written
