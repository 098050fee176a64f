"""RunConfig: every choice of one invocation, validated once, then read-only.

The CLI builds it from argv and an optional ``--config`` file; workflows and
sidecars read it. Keys of a config file are the long option names, with dashes
or underscores (``participant-label`` or ``participant_label``).
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError
from .parser import option_dests


@dataclass(frozen=True)
class RunConfig:
    bids_dir: Path
    output_dir: Path
    analysis_level: str
    work_dir: Path
    participant_label: tuple[str, ...] = ()
    task: tuple[str, ...] = ()
    session: tuple[str, ...] = ()
    run: tuple[str, ...] = ()
    space: str = "MNI152NLin2009cAsym"
    bids_filters: dict[str, dict[str, Any]] = field(default_factory=dict)
    derivatives: tuple[Path, ...] = ()
    features: tuple[str, ...] = ()
    analysis: str = "encoding"
    design: str = "hrf"
    hrf_model: str = "glover"
    delays: tuple[int, ...] = (1, 2, 3, 4)
    trim: tuple[int, int] = (0, 0)
    confounds: tuple[str, ...] = ()
    confounds_mode: str = "regress"
    backend: str = "numpy"
    atlas: Path | None = None
    feature_pca: int = 0
    decode: str = ""
    responses: str = "lss"
    classifier: str = "logistic"
    n_permutations: int = 1000
    searchlight_radius: float = 8.0
    no_searchlight: bool = False
    roi: Path | None = None
    embedder: tuple[str, ...] = ()
    samples: str = "trials"
    region: str | None = None
    datatype: str | None = None
    filter: tuple[float, float] = (0.1, 40.0)
    resample: float = 100.0
    epochs: tuple[float, float] = (-0.2, 0.8)
    baseline: tuple[float, float] | None = None
    reject_eeg: float = 150.0
    reject_mag: float = 4000.0
    reject_grad: float = 4000.0
    generalize: bool = False
    trf_lags: tuple[float, float] = (-0.1, 0.6)
    group_test: str = "permutation"
    alpha: float = 0.05
    seed: int = 0
    feature_cache: Path | None = None
    n_cpus: int = 1
    mem_gb: float | None = None
    nipype_plugin: str = "Linear"
    nipype_plugin_args: dict[str, Any] = field(default_factory=dict)
    skip_bids_validation: bool = False
    verbose: int = 0

    def encoding_options(self) -> dict[str, Any]:
        """The options of the encoding stage (see bids_encoding.encoding.EncodingOptions)."""
        return {"design": self.design, "hrf_model": self.hrf_model, "delays": list(self.delays),
                "trim": list(self.trim), "confounds": list(self.confounds), "confounds_mode": self.confounds_mode,
                "backend": self.backend, "atlas": str(self.atlas) if self.atlas else None, "pca": self.feature_pca, "seed": self.seed,
                "mem_gb": self.mem_gb}

    def decoding_options(self) -> dict[str, Any]:
        """The options of the decoding stage (see bids_encoding.decoding.DecodingOptions)."""
        return {"contrast": self.decode, "responses": self.responses, "classifier": self.classifier,
                "n_permutations": self.n_permutations, "searchlight": not self.no_searchlight,
                "radius": self.searchlight_radius, "seed": self.seed, "confounds": list(self.confounds),
                "roi": str(self.roi) if self.roi else None, "hrf_model": self.hrf_model}

    def embedding_options(self) -> dict[str, Any]:
        """The options of the embedding stage (see bids_encoding.embedding.EmbeddingOptions)."""
        return {"embedders": list(self.embedder or ("pca",)), "samples": self.samples, "contrast": self.decode,
                "roi": str(self.roi) if self.roi else None, "atlas": str(self.atlas) if self.atlas else None,
                "region": self.region, "confounds": list(self.confounds), "hrf_model": self.hrf_model,
                "classifier": self.classifier, "n_permutations": self.n_permutations, "seed": self.seed}

    def meeg_options(self) -> dict[str, Any]:
        """The options of the EEG/MEG stages (see bids_encoding.meeg.MEEGOptions)."""
        return {"contrast": self.decode, "l_freq": self.filter[0] or None, "h_freq": self.filter[1] or None,
                "resample": self.resample, "tmin": self.epochs[0], "tmax": self.epochs[1],
                "baseline": list(self.baseline) if self.baseline else [None, 0.0], "reject_eeg": self.reject_eeg,
                "reject_mag": self.reject_mag, "reject_grad": self.reject_grad, "classifier": self.classifier,
                "n_permutations": self.n_permutations, "generalize": self.generalize, "trf_tmin": self.trf_lags[0],
                "trf_tmax": self.trf_lags[1], "seed": self.seed}

    def group_options(self) -> dict[str, Any]:
        """The options of the group level (see bids_encoding.group.GroupOptions)."""
        return {"test": self.group_test, "n_permutations": self.n_permutations, "alpha": self.alpha, "seed": self.seed}

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values, for provenance in sidecars."""
        return json.loads(json.dumps(asdict(self), default=str))


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a YAML or JSON config file into option destinations, rejecting unknown keys."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        data = json.loads(text) if Path(path).suffix == ".json" else yaml.safe_load(text)
    except FileNotFoundError:
        raise UserError("the config file does not exist", path=path, fix="Check the path given to --config") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(
            f"the config file cannot be read ({reason})",
            path=path,
            fix="Write it as YAML or JSON mapping option names to values, e.g. 'features: [wordrate]'",
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(
            "the config file does not hold a mapping of option names to values",
            path=path,
            fix="Write one 'option: value' per line, e.g. 'features: [wordrate]'",
        )
    known = option_dests()
    out = {}
    for key, value in data.items():
        dest = str(key).lstrip("-").replace("-", "_")
        if dest not in known or dest == "config":
            raise UserError(
                f"the config file has an unknown key '{key}'",
                path=path,
                fix=f"Use the names of command-line options: {', '.join(sorted(k for k in known if k != 'config'))}",
            )
        out[dest] = value
    return out


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


def _writes_into_input(path: Path, bids_dir: Path) -> bool:
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


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Validate the parsed options and freeze them."""
    bids_dir = Path(args.bids_dir).resolve()
    output_dir = Path(args.output_dir).resolve()
    if _writes_into_input(output_dir, bids_dir):
        raise UserError(
            f"the output folder {output_dir} lies inside the input dataset",
            path=bids_dir,
            fix="bids-encoding never writes into its input: choose an OUTPUT_DIR outside it (or under its derivatives/ folder)",
        )
    if min(args.trim) < 0:
        raise UserError(f"--trim takes two non-negative numbers of volumes, not {args.trim}", fix="e.g. --trim 5 5")
    n_cpus = int(args.n_cpus or 1)
    if n_cpus < 1:
        raise UserError(f"--n-cpus must be at least 1, not {n_cpus}", fix="Give a positive number of processes")
    plugin = args.nipype_plugin or ("MultiProc" if n_cpus > 1 else "Linear")
    plugin_args = _plugin_args(args.nipype_plugin_args)
    mem_gb = float(args.mem_gb) if args.mem_gb is not None else None
    if mem_gb is not None and not mem_gb > 0:
        raise UserError(f"--mem-gb must be a positive number of GiB, not {args.mem_gb}", fix="e.g. --mem-gb 8")
    if plugin == "MultiProc":
        plugin_args.setdefault("n_procs", n_cpus)
        if mem_gb is not None:  # a fit node takes every CPU, so it runs alone and may use the whole cap
            plugin_args.setdefault("memory_gb", mem_gb)
    if int(args.feature_pca) < 0:
        raise UserError(f"--feature-pca takes a number of components (0 for none), not {args.feature_pca}",
                        fix="e.g. --feature-pca 20")
    if args.analysis == "decoding":
        from .decoding import parse_contrast

        if not args.decode:
            raise UserError("--analysis decoding needs a contrast to decode", fix="Add e.g. --decode trial_type=face,scrambled")
        parse_contrast(args.decode)
    if args.analysis == "embedding" and args.datatype in ("eeg", "meg"):
        raise UserError(f"--analysis embedding works on fMRI only, not on --datatype {args.datatype}",
                        fix="Use --analysis encoding (temporal response functions) or decoding (over time)")
    if int(args.n_permutations) < 0 or float(args.searchlight_radius) <= 0:
        raise UserError("--n-permutations must be >= 0 and --searchlight-radius > 0",
                        fix="e.g. --n-permutations 1000 --searchlight-radius 8")
    if not 0 < float(args.alpha) < 1:
        raise UserError(f"--alpha is a significance level between 0 and 1, not {args.alpha}", fix="e.g. --alpha 0.05")
    work_dir = Path(args.work_dir).resolve() if args.work_dir else output_dir / ".bids-encoding" / "work"
    if _writes_into_input(work_dir, bids_dir):
        raise UserError(f"the work folder {work_dir} lies inside the input dataset", path=bids_dir,
                        fix="Choose a --work-dir outside the input dataset")
    feature_cache = None if args.no_feature_cache else feature_cache_dir(args.feature_cache)
    if feature_cache and _writes_into_input(feature_cache, bids_dir):
        raise UserError(f"the feature cache {feature_cache} lies inside the input dataset", path=bids_dir,
                        fix="Choose a --feature-cache outside the input dataset")
    config = RunConfig(
        bids_dir=bids_dir,
        output_dir=output_dir,
        analysis_level=args.analysis_level,
        work_dir=work_dir,
        participant_label=_as_tuple(args.participant_label),
        task=_as_tuple(args.task),
        session=_as_tuple(args.session),
        run=_as_tuple(args.run),
        space=str(args.space),
        bids_filters=_filters(args.bids_filter_file),
        derivatives=tuple(Path(d).resolve() for d in (args.derivatives or ())),
        features=_as_tuple(args.features),
        analysis=args.analysis,
        design=args.design,
        hrf_model=args.hrf_model,
        delays=tuple(int(d) for d in args.delays),
        trim=(int(args.trim[0]), int(args.trim[1])),
        confounds=_as_tuple(args.confounds),
        confounds_mode=args.confounds_mode,
        backend=args.backend,
        atlas=Path(args.atlas).resolve() if args.atlas else None,
        feature_pca=int(args.feature_pca),
        decode=str(args.decode or ""),
        responses=args.responses,
        classifier=args.classifier,
        n_permutations=int(args.n_permutations),
        searchlight_radius=float(args.searchlight_radius),
        no_searchlight=bool(args.no_searchlight),
        roi=Path(args.roi).resolve() if args.roi else None,
        embedder=_as_tuple(args.embedder),
        samples=args.samples,
        region=str(args.region) if args.region is not None else None,
        datatype=args.datatype,
        filter=(float(args.filter[0]), float(args.filter[1])),
        resample=float(args.resample),
        epochs=(float(args.epochs[0]), float(args.epochs[1])),
        baseline=(float(args.baseline[0]), float(args.baseline[1])) if args.baseline else None,
        reject_eeg=float(args.reject_eeg),
        reject_mag=float(args.reject_mag),
        reject_grad=float(args.reject_grad),
        generalize=bool(args.generalize),
        trf_lags=(float(args.trf_lags[0]), float(args.trf_lags[1])),
        group_test=args.group_test,
        alpha=float(args.alpha),
        seed=int(args.seed),
        feature_cache=feature_cache,
        n_cpus=n_cpus,
        mem_gb=mem_gb,
        nipype_plugin=plugin,
        nipype_plugin_args=plugin_args,
        skip_bids_validation=bool(args.skip_bids_validation),
        verbose=int(args.verbose or 0),
    )
    check_stage_options(config)
    return config


def check_stage_options(config: RunConfig) -> None:
    """Build the options of the stage that will run, so that inconsistent choices fail before anything runs."""
    if config.analysis == "embedding":
        from .embedding import EmbeddingOptions

        EmbeddingOptions.from_dict(config.embedding_options())
    if config.datatype in ("eeg", "meg"):
        from .meeg import MEEGOptions

        MEEGOptions.from_dict(config.meeg_options())


def _config_value(action: argparse.Action, value: Any, config_file: Path) -> Any:
    """Convert one config-file value the way argparse would convert it on the command line:
    its type, its choices and its number of values; ``null`` leaves the option's default."""

    def invalid(why: str, fix: str = "Correct that value") -> UserError:
        return UserError(f"the value of '{action.dest}' in the config file {why}", path=config_file, fix=fix)

    if value is None:
        return action.default
    if action.nargs == 0:  # a flag: store_true, or a count (-v)
        counts = isinstance(action, argparse._CountAction)
        if isinstance(value, bool) or (counts and isinstance(value, int) and value >= 0):
            return int(value) if counts else value
        raise invalid(f"is {value!r}, not {'a count' if counts else 'true or false'}", fix="Write true or false")
    if isinstance(value, dict):  # a mapping stands for its JSON text, as --nipype-plugin-args takes it
        value = json.dumps(value)
    values = value if isinstance(value, list) else [value]
    if any(isinstance(v, (list, dict)) for v in values):
        raise invalid("nests lists or mappings", fix="Give a single value or a flat list of values")
    try:
        values = [(action.type or str)(str(v)) for v in values]
    except (argparse.ArgumentTypeError, ValueError) as exc:
        raise invalid(f"is not valid ({exc})") from None
    if action.choices is not None and any(v not in action.choices for v in values):
        raise invalid(f"must be one of {', '.join(map(str, action.choices))}")
    if action.nargs in ("+", "*"):
        if not values and action.nargs == "+":
            raise invalid("is an empty list", fix="Give at least one value, or leave the key out")
        return values
    if isinstance(action.nargs, int):
        if len(values) != action.nargs:
            raise invalid(f"has {len(values)} values, not {action.nargs}", fix=f"Give a list of {action.nargs} values")
        return values
    if len(values) != 1:
        raise invalid("is a list, but the option takes one value", fix="Give a single value")
    return values[0]


def _given_on_command_line(argv: list[str]) -> set[str]:
    """Destinations the user set on the command line (parsed again with every default suppressed)."""
    from .parser import build_parser

    quiet = build_parser()
    for action in quiet._actions:
        action.default = argparse.SUPPRESS
    return set(vars(quiet.parse_args(argv)))


def parse_run_args(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse argv; a ``--config`` file fills every option not given on the command line."""
    args = parser.parse_args(argv)
    if args.config is not None:
        actions = option_dests(parser)
        given = _given_on_command_line(argv)
        for dest, value in read_config_file(args.config).items():
            if dest not in given:
                setattr(args, dest, _config_value(actions[dest], value, args.config))
    return args


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")
