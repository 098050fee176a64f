"""This app's own participant-level derivatives, read back as the inputs of the group level.

Each participant output name becomes one :class:`GroupInput` (one kind, every
subject's file); the checks say which subjects lack an output or differ in space.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..derivatives import parse_entities
from ..errors import UserError

MIN_SUBJECTS = 3
"""Fewer subjects leave a one-sample t-test 1 degree of freedom (or none), and a sign-flip test 4 sign patterns."""

# what the participant level writes, and which files the group level reads (glob under OUTPUT_DIR)
MAP_STATS = {"rSquare": "mean held-out R² across subjects", "score": "mean searchlight accuracy across subjects",
             "deltaRSquare": "mean across subjects of the paired difference in held-out R² (model A minus model B)",
             "rsa": "mean across subjects of the searchlight RSA score (the sphere's RDM compared with the model's)"}


@dataclass(frozen=True)
class TableKind:
    """How to test one kind of participant table: which columns name a row, which are measured (each one the
    table has, at least one), against what."""

    keys: tuple[str, ...]
    measures: tuple[str, ...]
    chance_column: str | None = None  # a per-row chance level; 0 without one


TABLE_KINDS = {
    ("func", "decoding"): TableKind(keys=("source",), measures=("balanced_accuracy", "roc_auc"), chance_column="chance"),
    # an encoding model's regions, or a paired comparison's (--compare with --atlas)
    ("func", "regions"): TableKind(keys=("index", "name"), measures=("mean_r2", "mean_delta_r2")),
    ("func", "scores"): TableKind(keys=("region", "model"), measures=("score",)),  # RSA, against 0
    ("eeg", "encoding"): TableKind(keys=("channel",), measures=("r",)),
    ("meg", "encoding"): TableKind(keys=("channel",), measures=("r",)),
}


@dataclass(frozen=True)
class GroupInput:
    """One participant output kind and name, with every subject's file: the unit one group test reads."""

    kind: str  # "map", "time", "table" or "layers"
    datatype: str
    suffix: str
    entities: dict[str, str]  # the file's entities without the subject
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return "_".join(f"{k}-{v}" for k, v in self.entities.items())

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "files": {s: str(p) for s, p in self.files.items()}}


def _kind(path: Path, datatype: str, ents: dict[str, str]) -> str | None:
    """Which group test a participant file feeds, or None for files the group level does not read."""
    suffix = ents["suffix"]
    if suffix == "statmap" and ents.get("stat") in MAP_STATS and (
            path.name.endswith((".nii.gz", ".dscalar.nii")) or (path.name.endswith(".shape.gii") and ents.get("hemi") == "L")):
        return "map"  # a surface map is its hemi-L file, which names both hemispheres
    if not path.name.endswith(".tsv"):
        return None
    if suffix == "decoding" and datatype in ("eeg", "meg"):
        return "time"
    if suffix == "layers" and datatype == "func":
        return "layers"  # a layer sweep's region x layer table
    return "table" if (datatype, suffix) in TABLE_KINDS else None


def collect_participant_outputs(output_dir: Path, subjects: tuple[str, ...] = (),
                                tasks: tuple[str, ...] = ()) -> list[GroupInput]:
    """Every participant output the group level tests, grouped by name across subjects."""
    grouped: dict[tuple, GroupInput] = {}
    for path in sorted(Path(output_dir).glob("sub-*/**/sub-*")):
        datatype = path.parent.name
        ents = parse_entities(path)
        kind = _kind(path, datatype, ents)
        if kind is None or (subjects and ents["subject"] not in subjects) or (tasks and ents.get("task") not in tasks):
            continue
        entities = {k: v for k, v in ents.items() if k not in ("subject", "suffix", "hemi")}
        key = (kind, datatype, ents["suffix"], tuple(entities.items()))
        group = grouped.setdefault(key, GroupInput(kind, datatype, ents["suffix"], entities))
        if ents["subject"] in group.files:
            raise UserError(f"sub-{ents['subject']} has two '{group.name}' outputs (one per session?), and the group "
                            "level takes one per subject", path=path,
                            fix="Select one session with --session")
        group.files[ents["subject"]] = path
    return list(grouped.values())


def check_group_inputs(inputs: list[GroupInput], output_dir: Path, expected: tuple[str, ...] = ()) -> None:
    """Every subject has every output, all in one space, and there are at least :data:`MIN_SUBJECTS` subjects."""
    if not inputs:
        raise UserError("no participant-level outputs found", path=output_dir,
                        fix="Run the participant level into this OUTPUT_DIR first")
    everyone = sorted(set(expected) or {s for group in inputs for s in group.files})
    by_name_without_space: dict[tuple, list[GroupInput]] = defaultdict(list)
    for group in inputs:
        without_space = tuple((k, v) for k, v in group.entities.items() if k != "space")
        by_name_without_space[(group.kind, group.datatype, group.suffix, without_space)].append(group)
    for groups in by_name_without_space.values():
        if len(groups) > 1:
            spaces = "; ".join(f"{g.entities.get('space')}: {', '.join('sub-' + s for s in sorted(g.files))}"
                               for g in groups)
            raise UserError(f"the subjects' '{groups[0].name}' outputs are in different spaces ({spaces}), so they "
                            "cannot be compared", path=output_dir,
                            fix="Run every subject's participant level with the same --space, or select subjects "
                                "of one space with --participant-label")
    for group in inputs:
        missing = [s for s in everyone if s not in group.files]
        if missing:
            raise UserError(f"{', '.join('sub-' + m for m in missing)} have no '{group.name}' output, which "
                            f"{', '.join('sub-' + s for s in sorted(group.files))} have", path=output_dir,
                            fix="Run the participant level for them with the same options, or leave them out with "
                                "--participant-label")
    if len(everyone) < MIN_SUBJECTS:
        found = ", ".join(f"sub-{s}" for s in everyone)
        raise UserError(f"the group level needs at least {MIN_SUBJECTS} subjects, and found only {len(everyone)} "
                        f"({found}): with fewer, a t-test across subjects has too few degrees of freedom to mean "
                        "anything", path=output_dir,
                        fix=f"Run the participant level for more subjects into this OUTPUT_DIR first (at least "
                            f"{MIN_SUBJECTS}; a sign-flip permutation test needs 6 for a corrected p below 0.05)")

