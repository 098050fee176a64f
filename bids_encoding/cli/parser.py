"""The command-line parser, following the BIDS-Apps contract.

``bids-encoding BIDS_DIR OUTPUT_DIR {participant,group} [options]`` runs the
app; four helper commands share the program name: ``plugins`` lists what is
installed, ``example DIR`` writes the built-in example dataset, ``demo OUTDIR``
writes it and runs the whole app on it, and ``predict WEIGHTS.json EVENTS.tsv OUT``
applies a fitted encoding model to new stimuli. Nothing below this package parses argv.

Each option's destination is the name of its field in :mod:`bids_encoding.options`, and
its default is read from there (``default(Section, field)``): the parser holds no default
of an analysis option.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from .. import __version__
from ..errors import UserError
from ..options import (ALTERNATIVES, BACKENDS, CLASSIFIERS, COMPARISONS, CONFOUNDS_MODES, DESIGNS, DISTANCES, GROUP_TESTS, HRF_MODELS,
                       RESPONSES, SAMPLES, DecodingOptions, EmbeddingOptions, EncodingOptions, FMRIOptions,
                       GroupOptions, MEEGOptions, RSAOptions, StatsOptions, default)

ANALYSES = ("encoding", "decoding", "embedding", "rsa")
LEVELS = ("participant", "group")
COMMANDS = ("plugins", "example", "demo", "predict")
SURFACE_SPACES = ("fsaverage5", "fsLR")  # the surfaces the example dataset can hold


def _strip_sub(label: str) -> str:
    return label[4:] if label.startswith("sub-") else label


def _existing_dir(value: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{value} is not an existing directory")
    return path.resolve()


def _existing_file(value: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{value} is not an existing file")
    return path.resolve()


def _absolute(value: str) -> Path:
    return Path(value).expanduser().resolve()


def _model_rdm(value: str) -> str:
    """``NAME=FILE`` with FILE made absolute (nodes run in their own folders)."""
    name, sep, path = value.partition("=")
    return f"{name}={_absolute(path)}" if sep and path.strip() else value


def build_parser() -> argparse.ArgumentParser:
    """The BIDS-App parser (positional BIDS_DIR OUTPUT_DIR LEVEL, then options)."""
    parser = argparse.ArgumentParser(
        prog="bids-encoding",
        description=(
            "Model-based encoding and decoding of brain data on any BIDS dataset. "
            "Other commands: 'bids-encoding plugins', 'bids-encoding example DIR', "
            "'bids-encoding demo OUTDIR', 'bids-encoding predict WEIGHTS.json EVENTS.tsv OUT'."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("bids_dir", type=_existing_dir, help="the root of the BIDS dataset (read only)")
    parser.add_argument("output_dir", type=_absolute, help="where derivatives and reports are written")
    parser.add_argument("analysis_level", choices=LEVELS, help="participant: one model per subject; group: across subjects")
    parser.add_argument("--version", action="version", version=f"bids-encoding {__version__}")

    select = parser.add_argument_group("what to analyse")
    select.add_argument("--participant-label", "--participant_label", nargs="+", type=_strip_sub, metavar="LABEL",
                        help="subjects to analyse, with or without 'sub-' (default: all)")
    select.add_argument("--task", nargs="+", metavar="TASK", help="tasks to analyse (default: all)")
    select.add_argument("--session", nargs="+", metavar="SES", help="sessions to analyse (default: all)")
    select.add_argument("--run", nargs="+", metavar="RUN", help="runs to analyse (default: all)")
    select.add_argument("--space", metavar="SPACE",
                        help="space of the preprocessed BOLD taken from --derivatives: a volume space (e.g. "
                             "MNI152NLin2009cAsym, T1w) or a surface space (fsaverage5, fsaverage6, fsaverage, fsnative: "
                             "fMRIPrep's hemi-L/hemi-R .func.gii; fsLR: its CIFTI .dtseries.nii) (default: the one "
                             "space the derivatives hold; an error lists them when several)")
    select.add_argument("--den", metavar="DENSITY",
                        help="density of a surface space when the derivatives hold several, e.g. 91k for fsLR "
                             "(default: the one there is)")
    select.add_argument("--mask", type=_existing_file, metavar="FILE",
                        help="brain mask image of the fMRI analyses, resampled to the BOLD's grid (default: the "
                             "derivatives' desc-brain masks, else an EPI mask computed from the BOLD)")
    select.add_argument("--bids-filter-file", type=_existing_file, metavar="FILE",
                        help="JSON with extra pybids filters, e.g. {\"bold\": {\"acquisition\": \"mb4\"}}")
    select.add_argument("-d", "--derivatives", nargs="+", type=_existing_dir, metavar="DIR",
                        help="preprocessed derivatives (e.g. fMRIPrep): desc-preproc BOLD in --space, masks, confounds")

    model = parser.add_argument_group("what to compute")
    model.add_argument("--features", action="extend", nargs="+", metavar="NAME[:key=value,...]",
                       help="feature extractors (repeatable), e.g. wordrate gpt2:layers=6,9; see 'bids-encoding plugins'")
    model.add_argument("--analysis", choices=ANALYSES, default=ANALYSES[0], help="the kind of model to fit")
    model.add_argument("--design", choices=DESIGNS, default=default(EncodingOptions, "design"),
                       help="event features to the TR grid: hrf = convolution with --hrf-model; "
                            "fir = Lanczos downsampling then --delays (voxelwise-modelling practice)")
    model.add_argument("--hrf-model", choices=HRF_MODELS, default=default(FMRIOptions, "hrf_model"),
                       help="haemodynamic response used by --design hrf")
    model.add_argument("--delays", nargs="+", type=int, default=default(EncodingOptions, "delays"), metavar="TRS",
                       help="FIR delays in TRs used by --design fir")
    model.add_argument("--trim", nargs=2, type=int, default=default(EncodingOptions, "trim"), metavar=("START", "END"),
                       help="volumes dropped at the start and end of every run before fitting")
    model.add_argument("--high-pass", type=float, default=default(FMRIOptions, "high_pass"), metavar="HZ",
                       help="remove slow drifts within each run, from the BOLD and the designs alike: a cosine basis "
                            "up to this frequency (nilearn's first-level default); 0 removes only the linear trend")
    model.add_argument("--confounds", nargs="+", default=default(FMRIOptions, "confounds"), metavar="COLUMN",
                       help="columns of the derivatives' desc-confounds_timeseries.tsv, e.g. trans_x rot_z csf")
    model.add_argument("--confounds-mode", choices=CONFOUNDS_MODES, default=default(EncodingOptions, "confounds_mode"),
                       help="regress confounds out of the BOLD within each run, or fit them as their own band")
    model.add_argument("--atlas", type=_existing_file, metavar="FILE",
                       help="label image in the data's space (a BIDS _dseg.tsv beside it names the labels): "
                            "a per-region summary TSV for every model")
    model.add_argument("--backend", choices=BACKENDS, default=default(EncodingOptions, "backend"),
                       help="array backend of the ridge solver (torch needs PyTorch; torch_cuda a GPU)")
    model.add_argument("--feature-pca", type=int, default=default(EncodingOptions, "feature_pca"), metavar="N",
                       help="reduce each feature space to N principal components, fitted within each outer "
                            "fold on the training runs' features only (0: no reduction)")
    model.add_argument("--compare", action="extend", nargs="+", default=default(EncodingOptions, "compare"), metavar="A:B",
                       help="paired comparison of two feature spaces (labels as in output names, repeatable): "
                            "held-out R² of A minus B on the same folds, with a p-value per voxel")
    model.add_argument("--alternative", choices=ALTERNATIVES, default=default(EncodingOptions, "alternative"),
                       help="of the --compare test: greater = A predicts better than B (default), less, two-sided; "
                            "recorded in the sidecars, the group level tests the comparison the same way")
    model.add_argument("--save-weights", action="store_true", default=default(EncodingOptions, "save_weights"),
                       help="fMRI encoding: also write each feature space's model, refitted on all runs with each "
                            "voxel's penalty, as desc-<space>_weights.safetensors with a JSON sidecar that "
                            "'bids-encoding predict' applies to new stimuli (large: features x voxels float32)")
    decode = parser.add_argument_group("decoding (--analysis decoding)")
    decode.add_argument("--decode", default=default(DecodingOptions, "decode"), metavar="COLUMN=VALUE1,VALUE2",
                        help="the contrast to decode, from the events, e.g. trial_type=face,scrambled")
    decode.add_argument("--responses", choices=RESPONSES, default=default(DecodingOptions, "responses"),
                        help="trial-wise responses: least-squares-separate betas (nilearn FirstLevelModel) "
                             "or the mean of the volumes 4-6 s after each onset")
    decode.add_argument("--classifier", choices=CLASSIFIERS, default=default(DecodingOptions, "classifier"),
                        help="scaled logistic regression or linear SVM, leave-one-run-out")
    decode.add_argument("--n-permutations", type=int, default=default(StatsOptions, "n_permutations"), metavar="N",
                        help="permutations for the p-values (decoding: labels within runs; RSA: the conditions); 0 for "
                             "none")
    decode.add_argument("--searchlight-radius", type=float, default=default(DecodingOptions, "searchlight_radius"),
                        metavar="MM",
                        help="radius of the searchlight spheres in mm")
    decode.add_argument("--no-searchlight", dest="searchlight", action="store_false",
                        default=default(DecodingOptions, "searchlight"), help="whole-pattern decoding only")
    decode.add_argument("--roi", type=_existing_file, metavar="FILE",
                        help="a mask image in the data's space: decode (and centre searchlights) within it, or embed it")
    embed = parser.add_argument_group("embedding (--analysis embedding)")
    embed.add_argument("--embedder", action="extend", nargs="+", metavar="NAME[:key=value,...]",
                       help="brain embedders (repeatable), e.g. sae:latents=16,k=2 pca:latents=16 (default: pca)")
    embed.add_argument("--samples", choices=SAMPLES, default=default(EmbeddingOptions, "samples"),
                       help="what the embedder learns from: one pattern per trial (LSS betas) or per volume")
    embed.add_argument("--region", metavar="LABEL",
                       help="an --atlas label (name from its TSV, or index): the region embedded (or give --roi; "
                            "default: the brain mask)")
    rsa = parser.add_argument_group("representational similarity (--analysis rsa, with --atlas, --roi or "
                                    "--rsa-searchlight)")
    rsa.add_argument("--conditions", default=default(RSAOptions, "conditions"), metavar="COLUMN",
                     help="the events column whose values are the conditions of the RDMs (one per stimulus by default)")
    rsa.add_argument("--distance", choices=DISTANCES, default=default(RSAOptions, "distance"),
                     help="brain RDMs, crossvalidated across runs: crossnobis (squared Euclidean, the difference in "
                          "one run times that in another) or correlation distance across runs")
    rsa.add_argument("--comparison", choices=COMPARISONS, default=default(RSAOptions, "comparison"),
                     help="how brain and model RDMs are compared (their upper triangles)")
    rsa.add_argument("--rdm", action="extend", nargs="+", type=_model_rdm, default=default(RSAOptions, "rdm"),
                     metavar="NAME=FILE",
                     help="external model RDMs (repeatable): a square TSV whose header names the conditions, e.g. "
                          "animacy=animacy_rdm.tsv; --features give model RDMs too")
    rsa.add_argument("--rsa-searchlight", action="store_true", default=default(RSAOptions, "rsa_searchlight"),
                     help="also map each model's comparison with the RDM of a sphere around every voxel (of --roi "
                          "when given); needs no --atlas or --roi")
    rsa.add_argument("--rsa-searchlight-radius", type=float, default=default(RSAOptions, "rsa_searchlight_radius"),
                     metavar="MM", help="radius of the RSA searchlight's spheres in mm")
    meeg = parser.add_argument_group("EEG and MEG (--datatype eeg or meg)")
    meeg.add_argument("--datatype", choices=("func", "eeg", "meg"),
                      help="which recordings to model (default: func when the subject has BOLD, else eeg, else meg)")
    meeg.add_argument("--filter", nargs=2, type=float, default=default(MEEGOptions, "filter"), metavar=("LOW", "HIGH"),
                      help="band-pass filter edges in Hz (FIR, zero-phase)")
    meeg.add_argument("--resample", type=float, default=default(MEEGOptions, "resample"), metavar="HZ",
                      help="sampling rate after filtering")
    meeg.add_argument("--epochs", nargs=2, type=float, default=default(MEEGOptions, "epochs"), metavar=("TMIN", "TMAX"),
                      help="epoch window around each trial's onset, in s (decoding)")
    meeg.add_argument("--baseline", nargs=2, type=float, default=default(MEEGOptions, "baseline"), metavar=("START", "END"),
                      help="baseline window in s (default: the epoch's start to 0)")
    meeg.add_argument("--reject-eeg", type=float, default=default(MEEGOptions, "reject_eeg"), metavar="UV",
                      help="drop epochs whose EEG peak-to-peak amplitude exceeds this (µV; 0: keep all)")
    meeg.add_argument("--reject-mag", type=float, default=default(MEEGOptions, "reject_mag"), metavar="FT",
                      help="the same for magnetometers (fT)")
    meeg.add_argument("--reject-grad", type=float, default=default(MEEGOptions, "reject_grad"), metavar="FT_CM",
                      help="the same for gradiometers (fT/cm)")
    meeg.add_argument("--generalize", action="store_true", default=default(MEEGOptions, "generalize"),
                      help="also train at every time and test at every other (temporal generalization)")
    meeg.add_argument("--trf-lags", nargs=2, type=float, default=default(MEEGOptions, "trf_lags"), metavar=("TMIN", "TMAX"),
                      help="lags of the temporal response functions in s (encoding)")
    group = parser.add_argument_group("group level")
    group.add_argument("--group-test", choices=GROUP_TESTS, default=default(GroupOptions, "group_test"),
                       help="one-sample test across subjects: sign-flip permutations with max-t family-wise error "
                            "correction (nilearn, mne; --n-permutations of them), t-tests with false discovery "
                            "rate correction, or (maps) threshold-free cluster enhancement with family-wise error "
                            "correction by the maximum TFCE over sign flips (tables keep the max-t test)")
    group.add_argument("--alpha", type=float, default=default(GroupOptions, "alpha"), metavar="P",
                       help="significance level of the corrected group tests (figures, cluster threshold)")
    model.add_argument("--seed", type=int, default=default(StatsOptions, "seed"),
                       help="seed for every random step (recorded in sidecars)")

    run = parser.add_argument_group("how to run")
    run.add_argument("-w", "--work-dir", type=_absolute, metavar="DIR",
                     help="Nipype working directory; a rerun with the same one reuses finished steps "
                          "(default: OUTPUT_DIR/.bids-encoding/work)")
    run.add_argument("--n-cpus", "--nprocs", type=int, default=1, metavar="N", help="processes for MultiProc")
    run.add_argument("--mem-gb", "--mem_gb", type=float, default=default(EncodingOptions, "mem_gb"), metavar="GB",
                     help="memory cap in GiB: encoding fits process voxels in chunks sized to stay within it "
                          "(data included), and MultiProc schedules within it (default: no cap; chunks of "
                          "10,000 voxels)")
    run.add_argument("--nipype-plugin", metavar="NAME",
                     help="Nipype execution plugin: Linear, MultiProc, SLURM, ... (default: Linear for 1 CPU, else MultiProc)")
    run.add_argument("--nipype-plugin-args", metavar="JSON",
                     help="arguments of the Nipype plugin as JSON, e.g. '{\"sbatch_args\": \"-p short\"}'")
    run.add_argument("--feature-cache", type=_absolute, metavar="DIR",
                     help="where extracted features are kept and reused across runs and output folders "
                          "(default: $BIDS_ENCODING_CACHE, else ~/.cache/bids-encoding/features)")
    run.add_argument("--no-feature-cache", action="store_true", help="always extract features anew")
    run.add_argument("--config", type=Path, metavar="FILE",
                     help="YAML or JSON file with the same keys as these options (flags given here win)")
    run.add_argument("--skip-bids-validation", action="store_true", help="do not run bids-validator-deno on the input")
    run.add_argument("-v", "--verbose", action="count", default=0, help="more log output; -v also shows tracebacks")
    return parser


def option_dests(parser: argparse.ArgumentParser | None = None) -> dict[str, argparse.Action]:
    """The parser's options by destination name (for config files and the Boutiques descriptor)."""
    parser = parser or build_parser()
    return {a.dest: a for a in parser._actions if a.option_strings and a.dest not in ("help", "version")}


def build_command_parser(command: str) -> argparse.ArgumentParser:
    """Parsers of the helper commands ``plugins``, ``example``, ``demo`` and ``predict``."""
    parser = argparse.ArgumentParser(prog=f"bids-encoding {command}")
    if command == "plugins":
        parser.description = "List every installed feature extractor and brain embedder."
        parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    elif command == "example":
        parser.description = "Write the built-in example dataset (simulated fMRI with a planted signal)."
        parser.add_argument("dir", type=_absolute, help="where to write it (must be empty or absent)")
        parser.add_argument("--n-subjects", type=int, default=2)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--surfaces", nargs="+", choices=SURFACE_SPACES, default=(), metavar="SPACE",
                            help="also write surface derivatives as fMRIPrep does: fsaverage5 (hemi-L/hemi-R "
                                 ".func.gii) and/or fsLR (den-91k CIFTI .dtseries.nii), with the truth per vertex")
    elif command == "demo":
        parser.description = "Write the example dataset and run the participant and group levels on it."
        parser.add_argument("dir", type=_absolute, help="folder for the example dataset, derivatives and work dir")
        parser.add_argument("--features", nargs="+", default=None, help="feature extractors to run")
        parser.add_argument("--n-cpus", type=int, default=2)
        parser.add_argument("--space", choices=SURFACE_SPACES, default=None,
                            help="analyse the example's cortical surface in this space instead of its volumes "
                                 "(fsaverage5: GIFTI per hemisphere; fsLR: CIFTI grayordinates)")
    elif command == "predict":
        parser.description = ("Apply a fitted encoding model (written with --save-weights) to the stimuli of an "
                              "events file: the predicted BOLD response, in z units of a run, as a 4D NIfTI image on "
                              "the model's voxel grid with a JSON sidecar.")
        parser.add_argument("weights", type=_absolute, metavar="WEIGHTS.json",
                            help="the sidecar of a desc-<space>_weights.safetensors file")
        parser.add_argument("events", type=_absolute, metavar="EVENTS.tsv", help="a BIDS events file of the stimuli")
        parser.add_argument("out", type=_absolute, metavar="OUT", help="folder the prediction is written into")
        parser.add_argument("--stimuli-dir", type=_absolute, metavar="DIR",
                            help="the folder that stim_file values are relative to (default: stimuli/ of the BIDS "
                                 "dataset holding EVENTS.tsv, found by its dataset_description.json)")
        parser.add_argument("--n-volumes", type=int, metavar="N",
                            help="volumes to predict (default: the end of the last event, rounded up to whole TRs). "
                                 "The design is z-scored over these volumes, as over a run when the model was "
                                 "fitted: give a training run's length to reproduce its fitted prediction")
        parser.add_argument("--feature-cache", type=_absolute, metavar="DIR",
                            help="where extracted features are reused (default: as the app's)")
        parser.add_argument("--no-feature-cache", action="store_true", help="always extract features anew")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    return parser


# ---------------------------------------------------------------- config files

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
