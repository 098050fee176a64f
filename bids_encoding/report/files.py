"""Which derivatives a report shows, and where its figures go.

A run writes into a staging folder (``OUTPUT_DIR/.bids-encoding/staging-xxxx``) that is moved into
OUTPUT_DIR when it succeeds. A report covers everything the output folder will then hold: the
files this run staged plus those earlier runs committed (a staged file replaces its committed
namesake). So running ``--analysis decoding`` after encoding keeps the encoding section.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..derivatives import STATE_DIR, parse_entities
from ..errors import UserError
from ..locations import Layout, read_map

FIGURES = "figures"


def committed_dir(stage: Path) -> Path:
    """The output folder a staging folder is committed into (the folder itself when it is not a staging folder)."""
    stage = Path(stage)
    return stage.parent.parent if stage.parent.name == STATE_DIR else stage


def sidecar_name(relative: str) -> str:
    """``x_stat-r_statmap.nii.gz`` -> ``x_stat-r_statmap.json``."""
    path = Path(relative)
    return str(path.with_name(path.name.split(".")[0] + ".json"))


def _unreadable(path: Path, exc: Exception) -> UserError:
    return UserError(f"the report cannot read this derivative ({type(exc).__name__}: {exc})", path=path,
                     fix="Restore the file by re-running the analysis that wrote it, or delete it (and its sidecar)")


def _derivatives(root: Path, folder: str) -> dict[str, Path]:
    """The files under ``root/folder`` (figures and hidden files left out), by their path relative to ``root``."""
    found = {}
    for path in sorted((root / folder).rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_file() and f"/{FIGURES}/" not in f"/{relative}" and not path.name.startswith("."):
            found[relative] = path
    return found


@dataclass
class ReportFiles:
    """The derivatives under one folder (``sub-01``, ``group``) of the staged and committed outputs.

    ``files`` maps each path relative to the output folder to where the file is now.
    """

    stage: Path
    output_dir: Path
    folder: str
    files: dict[str, Path]
    staged: set[str]
    _sidecars: dict[str, dict] = field(default_factory=dict, repr=False)

    @classmethod
    def gather(cls, stage: Path, folder: str, staged: list[str] = ()) -> "ReportFiles":
        """The files under ``folder`` of the staging folder (with ``staged``, the paths this run's sinks returned,
        relative to ``stage``) and of the output folder."""
        stage, output_dir = Path(stage), committed_dir(stage)
        committed = _derivatives(output_dir, folder)
        staged_here = _derivatives(stage, folder)
        staged_here.update({Path(r).as_posix(): stage / r for r in staged
                            if Path(r).as_posix().startswith(f"{folder}/")})
        return cls(stage, output_dir, folder, dict(sorted({**committed, **staged_here}.items())), set(staged_here))

    def select(self, suffix: str, extension: str, **entities: str) -> list[str]:
        """The relative paths with this suffix and extension whose entities include ``entities``."""
        found = []
        for relative in self.files:
            ents = parse_entities(relative)
            if (relative.endswith(extension) and ents["suffix"] == suffix
                    and all(ents.get(k) == v for k, v in entities.items())):
                found.append(relative)
        return found

    def maps(self, suffix: str = "statmap", **entities: str) -> list[str]:
        """The maps with this suffix and entities, whatever their layout: NIfTI volumes, CIFTI files, and the hemi-L
        file of each per-hemisphere GIFTI pair (which stands for both)."""
        found = []
        for relative in self.select(suffix, "", **entities):
            if relative.endswith((".nii.gz", ".dscalar.nii")) or (
                    relative.endswith(".shape.gii") and parse_entities(relative).get("hemi") == "L"):
                found.append(relative)
        return found

    def values(self, relative: str) -> tuple[Layout, np.ndarray]:
        """A map's layout and its values over all the layout's locations (both hemispheres for a hemi-L file)."""
        path = self.files[relative]
        try:
            return read_map(path)
        except (OSError, ValueError) as exc:
            raise _unreadable(path, exc) from None

    def path(self, relative: str) -> Path:
        return self.files[relative]

    def sidecar(self, relative: str) -> dict:
        """The JSON sidecar of a derivative ({} when it has none)."""
        name = sidecar_name(relative)
        if name not in self._sidecars:
            path = self.files.get(name)
            try:
                self._sidecars[name] = json.loads(path.read_text(encoding="utf-8")) if path else {}
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise _unreadable(path, exc) from None
        return self._sidecars[name]

    def sidecars(self) -> dict[str, dict]:
        """Every sidecar, by the relative path of its JSON file."""
        return {relative: self.sidecar(relative) for relative in self.files if relative.endswith(".json")}

    def figure(self, name: str, sources: list[str], draw: Callable[[Path], None]) -> str:
        """The relative path of figure ``name`` of ``sources``, drawn into the staging folder by ``draw(path)``.

        A figure already committed, newer than its sources, none of them staged by this run, is reused:
        re-running one analysis does not redraw every other one's figures.
        """
        relative = f"{self.folder}/{FIGURES}/{name}"
        committed = self.output_dir / relative
        reusable = (committed.exists() and self.stage != self.output_dir and not set(sources) & self.staged
                    and all(committed.stat().st_mtime >= self.files[s].stat().st_mtime for s in sources))
        if not reusable:
            draw(self.stage / relative)
        return relative
