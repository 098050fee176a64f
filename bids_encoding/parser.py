"""The command-line parser, following the BIDS-Apps contract.

``bids-encoding BIDS_DIR OUTPUT_DIR {participant,group} [options]`` runs the
app; three helper commands share the program name: ``plugins`` lists what is
installed, ``example DIR`` writes the built-in example dataset and ``demo OUTDIR``
writes it and runs the whole app on it. Nothing below this module parses argv.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import __version__

ANALYSES = ("encoding", "decoding", "embedding")
LEVELS = ("participant", "group")
COMMANDS = ("plugins", "example", "demo")


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


def build_parser() -> argparse.ArgumentParser:
    """The BIDS-App parser (positional BIDS_DIR OUTPUT_DIR LEVEL, then options)."""
    parser = argparse.ArgumentParser(
        prog="bids-encoding",
        description=(
            "Model-based encoding and decoding of brain data on any BIDS dataset. "
            "Other commands: 'bids-encoding plugins', 'bids-encoding example DIR', "
            "'bids-encoding demo OUTDIR'."
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
    select.add_argument("--space", metavar="SPACE", default="MNI152NLin2009cAsym",
                        help="template space of the preprocessed data taken from --derivatives")
    select.add_argument("--bids-filter-file", type=_existing_file, metavar="FILE",
                        help="JSON with extra pybids filters, e.g. {\"bold\": {\"acquisition\": \"mb4\"}}")
    select.add_argument("-d", "--derivatives", nargs="+", type=_existing_dir, metavar="DIR",
                        help="preprocessed derivatives (e.g. fMRIPrep): desc-preproc BOLD in --space, masks, confounds")

    model = parser.add_argument_group("what to compute")
    model.add_argument("--features", action="extend", nargs="+", metavar="NAME[:key=value,...]",
                       help="feature extractors (repeatable), e.g. wordrate gpt2:layers=6,9; see 'bids-encoding plugins'")
    model.add_argument("--analysis", choices=ANALYSES, default="encoding", help="the kind of model to fit")
    model.add_argument("--design", choices=("hrf", "fir"), default="hrf",
                       help="event features to the TR grid: hrf = convolution with --hrf-model; "
                            "fir = Lanczos downsampling then --delays (voxelwise-modelling practice)")
    model.add_argument("--hrf-model", choices=("glover", "spm"), default="glover",
                       help="haemodynamic response used by --design hrf")
    model.add_argument("--delays", nargs="+", type=int, default=[1, 2, 3, 4], metavar="TRS",
                       help="FIR delays in TRs used by --design fir")
    model.add_argument("--trim", nargs=2, type=int, default=[0, 0], metavar=("START", "END"),
                       help="volumes dropped at the start and end of every run before fitting")
    model.add_argument("--confounds", nargs="+", metavar="COLUMN",
                       help="columns of the derivatives' desc-confounds_timeseries.tsv, e.g. trans_x rot_z csf")
    model.add_argument("--confounds-mode", choices=("regress", "band"), default="regress",
                       help="regress confounds out of the BOLD within each run, or fit them as their own band")
    model.add_argument("--atlas", type=_existing_file, metavar="FILE",
                       help="label image in the data's space (a BIDS _dseg.tsv beside it names the labels): "
                            "a per-region summary TSV for every model")
    model.add_argument("--backend", choices=("numpy", "torch", "torch_cuda"), default="numpy",
                       help="array backend of the ridge solver (torch needs PyTorch; torch_cuda a GPU)")
    model.add_argument("--feature-pca", type=int, default=0, metavar="N",
                       help="reduce each feature space to N principal components, fitted within each outer "
                            "fold on the training runs' features only (0: no reduction)")
    decode = parser.add_argument_group("decoding (--analysis decoding)")
    decode.add_argument("--decode", metavar="COLUMN=VALUE1,VALUE2",
                        help="the contrast to decode, from the events, e.g. trial_type=face,scrambled")
    decode.add_argument("--responses", choices=("lss", "peak"), default="lss",
                        help="trial-wise responses: least-squares-separate betas (nilearn FirstLevelModel) "
                             "or the mean of the volumes 4-6 s after each onset")
    decode.add_argument("--classifier", choices=("logistic", "svm"), default="logistic",
                        help="scaled logistic regression or linear SVM, leave-one-run-out")
    decode.add_argument("--n-permutations", type=int, default=1000, metavar="N",
                        help="label permutations (within runs) for the p-value; 0 for none")
    decode.add_argument("--searchlight-radius", type=float, default=8.0, metavar="MM",
                        help="radius of the searchlight spheres in mm")
    decode.add_argument("--no-searchlight", action="store_true", help="whole-pattern decoding only")
    decode.add_argument("--roi", type=_existing_file, metavar="FILE",
                        help="a mask image in the data's space: decode (and centre searchlights) within it, or embed it")
    embed = parser.add_argument_group("embedding (--analysis embedding)")
    embed.add_argument("--embedder", action="extend", nargs="+", metavar="NAME[:key=value,...]",
                       help="brain embedders (repeatable), e.g. sae:latents=16,k=2 pca:latents=16 (default: pca)")
    embed.add_argument("--samples", choices=("trials", "trs"), default="trials",
                       help="what the embedder learns from: one pattern per trial (LSS betas) or per volume")
    embed.add_argument("--region", metavar="LABEL",
                       help="an --atlas label (name from its TSV, or index): the region embedded (or give --roi; "
                            "default: the brain mask)")
    meeg = parser.add_argument_group("EEG and MEG (--datatype eeg or meg)")
    meeg.add_argument("--datatype", choices=("func", "eeg", "meg"),
                      help="which recordings to model (default: func when the subject has BOLD, else eeg, else meg)")
    meeg.add_argument("--filter", nargs=2, type=float, default=[0.1, 40.0], metavar=("LOW", "HIGH"),
                      help="band-pass filter edges in Hz (FIR, zero-phase)")
    meeg.add_argument("--resample", type=float, default=100.0, metavar="HZ", help="sampling rate after filtering")
    meeg.add_argument("--epochs", nargs=2, type=float, default=[-0.2, 0.8], metavar=("TMIN", "TMAX"),
                      help="epoch window around each trial's onset, in s (decoding)")
    meeg.add_argument("--baseline", nargs=2, type=float, metavar=("START", "END"),
                      help="baseline window in s (default: the epoch's start to 0)")
    meeg.add_argument("--reject-eeg", type=float, default=150.0, metavar="UV",
                      help="drop epochs whose EEG peak-to-peak amplitude exceeds this (µV; 0: keep all)")
    meeg.add_argument("--reject-mag", type=float, default=4000.0, metavar="FT", help="the same for magnetometers (fT)")
    meeg.add_argument("--reject-grad", type=float, default=4000.0, metavar="FT_CM",
                      help="the same for gradiometers (fT/cm)")
    meeg.add_argument("--generalize", action="store_true",
                      help="also train at every time and test at every other (temporal generalization)")
    meeg.add_argument("--trf-lags", nargs=2, type=float, default=[-0.1, 0.6], metavar=("TMIN", "TMAX"),
                      help="lags of the temporal response functions in s (encoding)")
    group = parser.add_argument_group("group level")
    group.add_argument("--group-test", choices=("permutation", "parametric"), default="permutation",
                       help="one-sample test across subjects: sign-flip permutations with max-t family-wise error "
                            "correction (nilearn, mne; --n-permutations of them), or t-tests with false discovery "
                            "rate correction")
    group.add_argument("--alpha", type=float, default=0.05, metavar="P",
                       help="significance level of the corrected group tests (figures, cluster threshold)")
    model.add_argument("--seed", type=int, default=0, help="seed for every random step (recorded in sidecars)")

    run = parser.add_argument_group("how to run")
    run.add_argument("-w", "--work-dir", type=_absolute, metavar="DIR",
                     help="Nipype working directory; a rerun with the same one reuses finished steps "
                          "(default: OUTPUT_DIR/.bids-encoding/work)")
    run.add_argument("--n-cpus", "--nprocs", type=int, default=1, metavar="N", help="processes for MultiProc")
    run.add_argument("--mem-gb", "--mem_gb", type=float, metavar="GB",
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
    """Parsers of the helper commands ``plugins``, ``example`` and ``demo``."""
    parser = argparse.ArgumentParser(prog=f"bids-encoding {command}")
    if command == "plugins":
        parser.description = "List every installed feature extractor and brain embedder."
        parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    elif command == "example":
        parser.description = "Write the built-in example dataset (simulated fMRI with a planted signal)."
        parser.add_argument("dir", type=_absolute, help="where to write it (must be empty or absent)")
        parser.add_argument("--n-subjects", type=int, default=2)
        parser.add_argument("--seed", type=int, default=0)
    elif command == "demo":
        parser.description = "Write the example dataset and run the participant and group levels on it."
        parser.add_argument("dir", type=_absolute, help="folder for the example dataset, derivatives and work dir")
        parser.add_argument("--features", nargs="+", default=None, help="feature extractors to run")
        parser.add_argument("--n-cpus", type=int, default=2)
    parser.add_argument("-v", "--verbose", action="count", default=0)
    return parser
