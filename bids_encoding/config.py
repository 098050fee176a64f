"""RunConfig: every choice of one invocation, validated once, then read-only.

The CLI parses argv and an optional ``--config`` file (``cli/parser.py``) into an
argparse namespace; :func:`config_from_args` checks it and freezes it, each analysis's
options as its section of :mod:`.options`. The plan, the workflows and the sidecars
read it; nothing below it sees argv.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import UserError
from .options import (DecodingOptions, EmbeddingOptions, EncodingOptions, FMRIOptions, GroupOptions, MEEGOptions,
                      RSAOptions, Section, StatsOptions, check_rsa_region, check_save_weights)


@dataclass(frozen=True)
class RunConfig:
    """One invocation: what to analyse, how to run it, and each analysis's options (:mod:`.options`)."""

    bids_dir: Path
    output_dir: Path
    analysis_level: str
    work_dir: Path
    participant_label: tuple[str, ...] = ()
    task: tuple[str, ...] = ()
    session: tuple[str, ...] = ()
    run: tuple[str, ...] = ()
    space: str | None = None  # of the preprocessed BOLD; None: the only one there is
    den: str | None = None  # the density of a surface space (fsLR den-91k); None: the only one there is
    bids_filters: dict[str, dict[str, Any]] = field(default_factory=dict)
    derivatives: tuple[Path, ...] = ()
    datatype: str | None = None
    features: tuple[str, ...] = ()
    analysis: str = "encoding"
    fmri: FMRIOptions = FMRIOptions()
    encoding: EncodingOptions = EncodingOptions()
    decoding: DecodingOptions = DecodingOptions()
    embedding: EmbeddingOptions = EmbeddingOptions()
    rsa: RSAOptions = RSAOptions()
    meeg: MEEGOptions = MEEGOptions()
    group: GroupOptions = GroupOptions()
    stats: StatsOptions = StatsOptions()
    feature_cache: Path | None = None
    n_cpus: int = 1
    nipype_plugin: str = "Linear"
    nipype_plugin_args: dict[str, Any] = field(default_factory=dict)
    skip_bids_validation: bool = False
    verbose: int = 0

    @property
    def seed(self) -> int:
        return self.stats.seed

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values, for provenance in sidecars: every option by its name, sections flattened."""
        values = {}
        for f in fields(self):
            value = getattr(self, f.name)
            values.update(value.options() if isinstance(value, Section) else {f.name: value})
        return json.loads(json.dumps(values, default=str))


def _as_tuple(value: Any) -> tuple:
    if value is None:
        return ()
    if isinstance(value, (str, int, float, Path)):
        return (str(value),)
    return tuple(str(v) for v in value)


def _filters(path: Path | None) -> dict[str, dict[str, Any]]:
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"the BIDS filter file is not valid JSON ({exc})", path=path,
                        fix='Write it as {"bold": {"entity": "value"}}') from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise UserError("the BIDS filter file must map query names to entity filters", path=path,
                        fix='Write it as {"bold": {"acquisition": "mb4"}}')
    return data


def _plugin_args(raw: Any) -> dict[str, Any]:
    if raw in (None, ""):
        return {}
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UserError(f"--nipype-plugin-args is not valid JSON ({exc})",
                        fix="Give a JSON object, e.g. '{\"sbatch_args\": \"-p short\"}'") from None
    if not isinstance(value, dict):
        raise UserError("--nipype-plugin-args must be a JSON object", fix="e.g. '{\"n_procs\": 4}'")
    return value


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False


def writes_into_input(path: Path, bids_dir: Path) -> bool:
    """True for a folder inside the input dataset, except under its own derivatives/ (the conventional place)."""
    return path == bids_dir or (_inside(path, bids_dir) and not _inside(path, bids_dir / "derivatives"))


def feature_cache_dir(given: Path | None) -> Path | None:
    """The feature cache: the option, else $BIDS_ENCODING_CACHE, else the user's cache folder (None when unwritable)."""
    if given:
        return Path(given).resolve()
    if os.environ.get("BIDS_ENCODING_CACHE"):
        return Path(os.environ["BIDS_ENCODING_CACHE"]).expanduser().resolve()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = base / "bids-encoding" / "features"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder.resolve() if os.access(folder, os.W_OK) else None


def section_from_args(section: type[Section], args: argparse.Namespace) -> Section:
    """A section from the parsed options whose destinations are its field names (None keeps the field's default)."""
    values = {}
    for f in fields(section):
        value = getattr(args, f.name, None)
        if value is not None:
            values[f.name] = str(value) if isinstance(value, Path) else value
    return section(**values)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Validate the parsed options and freeze them."""
    bids_dir = Path(args.bids_dir).resolve()
    output_dir = Path(args.output_dir).resolve()
    if writes_into_input(output_dir, bids_dir):
        raise UserError(
            f"the output folder {output_dir} lies inside the input dataset",
            path=bids_dir,
            fix="bids-encoding never writes into its input: choose an OUTPUT_DIR outside it (or under its derivatives/ folder)",
        )
    sections = {name: section_from_args(cls, args) for name, cls in (
        ("fmri", FMRIOptions), ("encoding", EncodingOptions), ("decoding", DecodingOptions),
        ("embedding", EmbeddingOptions), ("rsa", RSAOptions), ("meeg", MEEGOptions), ("group", GroupOptions),
        ("stats", StatsOptions))}
    n_cpus = int(args.n_cpus or 1)
    if n_cpus < 1:
        raise UserError(f"--n-cpus must be at least 1, not {n_cpus}", fix="Give a positive number of processes")
    plugin = args.nipype_plugin or ("MultiProc" if n_cpus > 1 else "Linear")
    plugin_args = _plugin_args(args.nipype_plugin_args)
    mem_gb = sections["encoding"].mem_gb
    if plugin == "MultiProc":
        plugin_args.setdefault("n_procs", n_cpus)
        if mem_gb is not None:  # a fit node takes every CPU, so it runs alone and may use the whole cap
            plugin_args.setdefault("memory_gb", mem_gb)
    if args.analysis == "decoding" and not args.decode:
        raise UserError("--analysis decoding needs a contrast to decode", fix="Add e.g. --decode trial_type=face,scrambled")
    if args.analysis in ("embedding", "rsa") and args.datatype in ("eeg", "meg"):
        raise UserError(f"--analysis {args.analysis} works on fMRI only, not on --datatype {args.datatype}",
                        fix="Use --analysis encoding (temporal response functions) or decoding (over time)")
    if args.analysis == "encoding" and args.analysis_level == "participant":
        check_save_weights(sections["encoding"], sections["fmri"])
    if args.analysis == "rsa" and args.analysis_level == "participant":
        check_rsa_region(sections["fmri"], sections["rsa"])
        if not args.features and not sections["rsa"].rdm:
            raise UserError("--analysis rsa compares the brain's RDMs with models, and none was given",
                            fix="Give feature extractors with --features, or model RDMs with --rdm NAME=FILE.tsv")
    work_dir = Path(args.work_dir).resolve() if args.work_dir else output_dir / ".bids-encoding" / "work"
    if writes_into_input(work_dir, bids_dir):
        raise UserError(f"the work folder {work_dir} lies inside the input dataset", path=bids_dir,
                        fix="Choose a --work-dir outside the input dataset")
    feature_cache = None if args.no_feature_cache else feature_cache_dir(args.feature_cache)
    if feature_cache and writes_into_input(feature_cache, bids_dir):
        raise UserError(f"the feature cache {feature_cache} lies inside the input dataset", path=bids_dir,
                        fix="Choose a --feature-cache outside the input dataset")
    return RunConfig(
        bids_dir=bids_dir,
        output_dir=output_dir,
        analysis_level=args.analysis_level,
        work_dir=work_dir,
        participant_label=_as_tuple(args.participant_label),
        task=_as_tuple(args.task),
        session=_as_tuple(args.session),
        run=_as_tuple(args.run),
        space=str(args.space) if args.space else None,
        den=str(args.den).removeprefix("den-") if args.den else None,
        bids_filters=_filters(args.bids_filter_file),
        derivatives=tuple(Path(d).resolve() for d in (args.derivatives or ())),
        datatype=args.datatype,
        features=_as_tuple(args.features),
        analysis=args.analysis,
        **sections,
        feature_cache=feature_cache,
        n_cpus=n_cpus,
        nipype_plugin=plugin,
        nipype_plugin_args=plugin_args,
        skip_bids_validation=bool(args.skip_bids_validation),
        verbose=int(args.verbose or 0),
    )
