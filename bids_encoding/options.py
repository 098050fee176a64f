"""Every option of an analysis, in one place: one frozen dataclass per section.

A field's default here is the option's only default: the command-line parser reads it
from these classes (``cli/parser.py``, whose argparse destinations equal the field
names), config files are checked through the same parser, and a section checks its own
values in ``check`` (called on construction), so a wrong choice fails before anything
runs. Nipype nodes receive sections as plain dicts (:func:`pack`) and rebuild them
(:func:`unpack`). Sections shared by several analyses:

* :class:`FMRIOptions`: how BOLD is read (confounds, HRF, region images), for every fMRI analysis;
* :class:`DecodingOptions`: what is decoded and how, for fMRI decoding, the evaluation of
  embeddings and EEG/MEG decoding over time;
* :class:`RSAOptions`: the conditions, distance, comparison and external RDMs of
  representational similarity analysis;
* :class:`StatsOptions`: the seed of every random step and the number of permutations of
  every permutation test.

Adding an option to a stage is a field here and a line in ``cli/parser.py``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import UserError

HRF_MODELS = ("glover", "spm")
DESIGNS = ("hrf", "fir")
CONFOUNDS_MODES = ("regress", "band")
BACKENDS = ("numpy", "torch", "torch_cuda")
RESPONSES = ("lss", "peak")
CLASSIFIERS = ("logistic", "svm")
SAMPLES = ("trials", "trs")
GROUP_TESTS = ("permutation", "parametric", "tfce")
DISTANCES = ("crossnobis", "correlation")
COMPARISONS = ("spearman", "tau-a", "whitened")
ALTERNATIVES = ("greater", "two-sided", "less")


def parse_comparison(spec: str) -> tuple[str, str]:
    """``"wordrate:wordlength"`` -> ``("wordrate", "wordlength")``: two different alphanumeric feature-space labels."""
    a, sep, b = str(spec).partition(":")
    if not sep or not a.isalnum() or not b.isalnum() or a == b:
        raise UserError(f"--compare '{spec}' is not two different feature-space labels A:B",
                        fix="Write the labels as they appear in output names (desc-<label>), e.g. "
                            "--compare wordrate:wordlength")
    return a, b


def parse_contrast(spec: str) -> tuple[str, tuple[str, str]]:
    """``"trial_type=face,scrambled"`` -> ``("trial_type", ("face", "scrambled"))``."""
    fix = "Write the contrast as COLUMN=VALUE1,VALUE2, e.g. --decode trial_type=face,scrambled"
    column, sep, rest = str(spec).partition("=")
    column = column.strip()
    if not sep or not column:
        raise UserError(f"--decode '{spec}' names no events column", fix=fix)
    values = tuple(v.strip() for v in rest.split(","))
    if any(not v for v in values):
        raise UserError(f"--decode '{spec}' has an empty value", fix=fix)
    if len(values) < 2:
        raise UserError(f"--decode '{spec}' gives only one class ({values[0]}); decoding tells two apart", fix=fix)
    if len(values) > 2:
        raise UserError(f"--decode '{spec}' gives {len(values)} values; decoding compares exactly two", fix=fix)
    if values[0] == values[1]:
        raise UserError(f"--decode '{spec}' gives the same value twice", fix=fix)
    return column, values


INTERNAL = {"internal": True}
"""Field metadata of a setting with no command-line option (tests and notebooks set it; provenance omits it)."""


def _check_choice(value: Any, choices: tuple, what: str) -> None:
    if value not in choices:
        raise UserError(f"unknown {what} '{value}'", fix=f"Use one of: {', '.join(choices)}")


class Section:
    """Shared behaviour of the option sections: lists become tuples, then :meth:`check` runs."""

    def __post_init__(self) -> None:
        for f in fields(self):  # values from config files and Nipype dicts arrive as lists
            if isinstance(getattr(self, f.name), list):
                object.__setattr__(self, f.name, tuple(getattr(self, f.name)))
        self.check()

    def check(self) -> None:
        """Raise a :class:`UserError` for inconsistent values (subclasses)."""

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        return cls(**values)

    def options(self) -> dict[str, Any]:
        """The values of the section's command-line options (not its internal settings), by name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.metadata.get("internal")}


@dataclass(frozen=True)
class FMRIOptions(Section):
    """How the BOLD of every fMRI analysis is read."""

    confounds: tuple[str, ...] = ()  # columns of fMRIPrep's desc-confounds_timeseries.tsv
    hrf_model: str = "glover"  # of event designs (encoding --design hrf) and trial GLMs (LSS)
    high_pass: float = 0.01  # Hz: cosine drifts removed within each run from BOLD and designs (0: linear trend only)
    mask: str | None = None  # a brain mask image (default: the derivatives', else computed from the BOLD)
    atlas: str | None = None  # a label image in the data's space (region tables; embedding regions)
    roi: str | None = None  # a mask image in the data's space (decoding and embedding region)

    def check(self) -> None:
        _check_choice(self.hrf_model, HRF_MODELS, "HRF model")
        if not (0 <= float(self.high_pass) < float("inf")):
            raise UserError(f"--high-pass is a cut-off frequency in Hz (0 to turn drift removal off), not "
                            f"{self.high_pass}", fix="e.g. --high-pass 0.01 (1/100 s, as nilearn's first-level models)")


@dataclass(frozen=True)
class EncodingOptions(Section):
    """How designs are built and encoding models fitted."""

    design: str = "hrf"  # "hrf" or "fir"
    delays: tuple[int, ...] = (1, 2, 3, 4)  # FIR delays in TRs
    trim: tuple[int, int] = (0, 0)  # volumes dropped at the start and end of every run
    confounds_mode: str = "regress"  # "regress" out of the BOLD, or fitted as their own "band"
    backend: str = "numpy"
    feature_pca: int = 0  # principal components per feature space, fitted within each outer fold (0: none)
    mem_gb: float | None = None  # cap (GiB) on the fit's resident memory: voxel chunks sized from it
    alphas: tuple[float, ...] | None = field(default=None, metadata=INTERNAL)  # ridge penalties (None: the solver's grid)
    n_candidates: int = field(default=12, metadata=INTERNAL)  # banded models: random band-weight candidates
    chunk_size: int = field(default=10000, metadata=INTERNAL)  # voxels per chunk without --mem-gb
    compare: tuple[str, ...] = ()  # A:B paired comparisons of two feature spaces' held-out R²
    alternative: str = "greater"  # of the comparisons' test: A better than B ("greater"), "less", or "two-sided"
    save_weights: bool = False  # also write each feature space's model (refit on all runs) for `bids-encoding predict`

    def check(self) -> None:
        _check_choice(self.design, DESIGNS, "design")
        _check_choice(self.alternative, ALTERNATIVES, "alternative")
        for spec in self.compare:
            parse_comparison(spec)
        _check_choice(self.confounds_mode, CONFOUNDS_MODES, "confounds mode")
        _check_choice(self.backend, BACKENDS, "backend")
        if min(self.trim) < 0:
            raise UserError(f"--trim takes two non-negative numbers of volumes, not {list(self.trim)}", fix="e.g. --trim 5 5")
        if int(self.feature_pca) < 0:
            raise UserError(f"--feature-pca takes a number of components (0 for none), not {self.feature_pca}",
                            fix="e.g. --feature-pca 20")
        if self.mem_gb is not None and not self.mem_gb > 0:
            raise UserError(f"--mem-gb must be a positive number of GiB, not {self.mem_gb}", fix="e.g. --mem-gb 8")


@dataclass(frozen=True)
class DecodingOptions(Section):
    """What is decoded (a contrast of the events) and how trial responses are classified."""

    decode: str = ""  # COLUMN=VALUE1,VALUE2
    responses: str = "lss"  # "lss" or "peak"
    classifier: str = "logistic"  # "logistic" or "svm"
    searchlight: bool = True
    searchlight_radius: float = 8.0  # mm; on 6 mm voxels a sphere is a voxel and its 6 face neighbours
    screening: float = field(default=1.0, metadata=INTERNAL)  # percent of voxels kept by ANOVA screening (>= 100)
    n_jobs: int = field(default=1, metadata=INTERNAL)  # worker processes for the permutations and the searchlight

    def check(self) -> None:
        if self.decode:
            parse_contrast(self.decode)
        _check_choice(self.responses, RESPONSES, "trial responses")
        _check_choice(self.classifier, CLASSIFIERS, "classifier")
        if not 0 < self.screening <= 100:
            raise UserError(f"the screening percentage must be in (0, 100], not {self.screening}",
                            fix="Give e.g. 1 (percent of the voxels kept), or 100 to keep every voxel")
        if not self.searchlight_radius > 0:
            raise UserError(f"the searchlight radius must be positive, not {self.searchlight_radius} mm",
                            fix="Give a radius in mm, e.g. --searchlight-radius 8")

    @property
    def column(self) -> str:
        """The events column whose values label trials and samples (``trial_type`` without a contrast)."""
        return parse_contrast(self.decode)[0] if self.decode else "trial_type"


@dataclass(frozen=True)
class EmbeddingOptions(Section):
    """Which samples of which region, and which brain embedders."""

    embedder: tuple[str, ...] = ("pca",)
    samples: str = "trials"  # one sample per trial (LSS betas) or per volume ("trs")
    region: str | None = None  # an atlas label: a name from the atlas' TSV, or its index

    def check(self) -> None:
        _check_choice(self.samples, SAMPLES, "samples")
        if not self.embedder:
            raise UserError("no embedder was named", fix="Name one with --embedder, e.g. --embedder sae:latents=16")


def parse_rdm(spec: str) -> tuple[str, str]:
    """``"animacy=animacy.tsv"`` -> ``("animacy", "animacy.tsv")``: an external model RDM's name and file."""
    fix = "Write it as NAME=FILE.tsv, e.g. --rdm animacy=animacy_rdm.tsv (NAME: letters and digits)"
    name, sep, path = str(spec).partition("=")
    if not sep or not name.strip() or not name.strip().isalnum() or not path.strip():
        raise UserError(f"--rdm '{spec}' is not NAME=FILE with an alphanumeric name", fix=fix)
    if not Path(path.strip()).expanduser().is_file():
        raise UserError(f"the model RDM file of --rdm {name.strip()} does not exist", path=path.strip(), fix=fix)
    return name.strip(), str(Path(path.strip()).expanduser().resolve())


@dataclass(frozen=True)
class RSAOptions(Section):
    """Representational similarity analysis: which conditions, which brain distance, which comparison."""

    conditions: str = "stim_file"  # the events column whose values are the conditions (one per stimulus)
    distance: str = "crossnobis"  # crossvalidated across runs: "crossnobis" or "correlation"
    comparison: str = "spearman"  # of brain and model RDMs: "spearman", "tau-a" or "whitened"
    rdm: tuple[str, ...] = ()  # external model RDMs, NAME=FILE.tsv
    rsa_searchlight: bool = False  # also map each model's comparison in a sphere around every voxel
    rsa_searchlight_radius: float = 8.0  # mm; on 6 mm voxels a sphere is a voxel and its 6 face neighbours

    def check(self) -> None:
        _check_choice(self.distance, DISTANCES, "RDM distance")
        if not self.rsa_searchlight_radius > 0:
            raise UserError(f"the RSA searchlight radius must be positive, not {self.rsa_searchlight_radius} mm",
                            fix="Give a radius in mm, e.g. --rsa-searchlight-radius 8")
        _check_choice(self.comparison, COMPARISONS, "RDM comparison")
        if not str(self.conditions).strip():
            raise UserError("--conditions names no events column", fix="e.g. --conditions stim_file")
        names = [parse_rdm(spec)[0] for spec in self.rdm]
        if len(set(names)) < len(names):
            raise UserError(f"two --rdm models share a name ({', '.join(names)})", fix="Give each model its own NAME")

    @property
    def models(self) -> dict[str, str]:
        """The external model RDMs' files by name."""
        return dict(parse_rdm(spec) for spec in self.rdm)


@dataclass(frozen=True)
class MEEGOptions(Section):
    """EEG/MEG preprocessing, epochs and temporal response functions."""

    filter: tuple[float, float] = (0.1, 40.0)  # band-pass edges in Hz (0: that edge off)
    resample: float = 100.0  # Hz after filtering
    epochs: tuple[float, float] = (-0.2, 0.8)  # s around each trial's onset
    baseline: tuple[float, float] | None = None  # s; None: the epoch's start to 0
    reject_eeg: float = 150.0  # µV peak to peak; 0 turns it off
    reject_mag: float = 4000.0  # fT
    reject_grad: float = 4000.0  # fT/cm
    generalize: bool = False  # also train at every time and test at every other
    trf_lags: tuple[float, float] = (-0.1, 0.6)  # s
    n_jobs: int = field(default=1, metadata=INTERNAL)

    def check(self) -> None:
        (tmin, tmax), (lag_min, lag_max) = self.epochs, self.trf_lags
        if not tmin < tmax or not lag_min < lag_max:
            raise UserError(f"the time window {tmin:g} to {tmax:g} s (TRF lags {lag_min:g} to "
                            f"{lag_max:g} s) must start before it ends", fix="e.g. --epochs -0.2 0.8")
        if self.l_freq and self.h_freq and not self.l_freq < self.h_freq:
            raise UserError(f"the band-pass filter's low edge ({self.l_freq} Hz) must be below its high edge "
                            f"({self.h_freq} Hz)", fix="e.g. --filter 0.1 40")
        if self.h_freq and self.resample and not self.h_freq < self.resample / 2:
            raise UserError(f"the low-pass edge ({self.h_freq} Hz) must be below half the resampling rate "
                            f"({self.resample} Hz), or the resampled data alias",
                            fix=f"Lower --filter's high edge below {self.resample / 2:g} Hz, or raise --resample")

    @property
    def l_freq(self) -> float | None:
        return self.filter[0] or None

    @property
    def h_freq(self) -> float | None:
        return self.filter[1] or None

    @property
    def baseline_window(self) -> tuple[float | None, float]:
        return tuple(self.baseline) if self.baseline else (None, 0.0)

    def rejection(self, datatype: str) -> dict[str, float] | None:
        """mne's ``reject`` dict, in SI units."""
        limits = ({"eeg": self.reject_eeg * 1e-6} if datatype == "eeg"
                  else {"mag": self.reject_mag * 1e-15, "grad": self.reject_grad * 1e-13})
        limits = {k: v for k, v in limits.items() if v > 0}
        return limits or None


@dataclass(frozen=True)
class GroupOptions(Section):
    """The group level's test and significance level."""

    group_test: str = "permutation"
    alpha: float = 0.05

    def check(self) -> None:
        _check_choice(self.group_test, GROUP_TESTS, "group test")
        if not 0 < float(self.alpha) < 1:
            raise UserError(f"--alpha is a significance level between 0 and 1, not {self.alpha}", fix="e.g. --alpha 0.05")

    @property
    def sign_flips(self) -> bool:
        """Whether the corrected p comes from sign flips of the subjects' effects (max-t or max-TFCE), so that few
        subjects put a floor under it."""
        return self.group_test in ("permutation", "tfce")


@dataclass(frozen=True)
class StatsOptions(Section):
    """The seed of every random step and the size of every permutation test."""

    seed: int = 0
    n_permutations: int = 1000

    def check(self) -> None:
        if int(self.n_permutations) != self.n_permutations or self.n_permutations < 0:
            raise UserError(f"the number of permutations must be a whole number >= 0, not {self.n_permutations}",
                            fix="Give e.g. --n-permutations 1000, or 0 to skip the permutation tests")


def check_region(embedding: EmbeddingOptions, fmri: FMRIOptions) -> None:
    """The embedded region is named one way: an atlas label needs the atlas, and not a mask image too."""
    if embedding.region and not fmri.atlas:
        raise UserError(f"--region {embedding.region} names an atlas label, but no --atlas was given",
                        fix="Give the label image with --atlas, or a mask image with --roi")
    if embedding.region and fmri.roi:
        raise UserError("--roi and --region both choose the region", fix="Give one of them")


def check_save_weights(encoding: EncodingOptions, fmri: FMRIOptions, surface: bool = False) -> None:
    """Saved weights are those of plain ridge models: confounds fitted as their own band make each model banded.
    They are saved for volumes (``bids-encoding predict`` writes NIfTI predictions), not yet for surfaces."""
    if encoding.save_weights and surface:
        raise UserError("--save-weights saves models of voxels, whose predictions `bids-encoding predict` writes as "
                        "NIfTI volumes, and this data is on the cortical surface",
                        fix="Leave out --save-weights for surface data, or fit volume data (--space of a volume "
                            "template) to save its weights")
    if encoding.save_weights and fmri.confounds and encoding.confounds_mode == "band":
        raise UserError("--save-weights saves plain ridge models (one penalty per voxel), and --confounds-mode band "
                        "makes every model a banded one (features and confounds, each with its own penalty)",
                        fix="Regress the confounds out instead (--confounds-mode regress, the default), or leave out "
                            "--save-weights")



def check_rsa_region(fmri: FMRIOptions, options: RSAOptions | None = None) -> None:
    """RSA compares the geometries of regions (an atlas, each label a region, or one region image), of searchlight
    spheres, or both: it needs one of them. A searchlight alone needs no region."""
    if not fmri.atlas and not fmri.roi and not (options and options.rsa_searchlight):
        raise UserError("--analysis rsa needs regions whose RDMs to compute, and neither --atlas nor --roi (nor "
                        "--rsa-searchlight) was given",
                        fix="Give a label image with --atlas (one RDM per label) or a mask image with --roi, and/or "
                            "--rsa-searchlight for a map per model (a sphere around every voxel)")


SECTIONS: dict[str, type[Section]] = {cls.__name__: cls for cls in (
    FMRIOptions, EncodingOptions, DecodingOptions, EmbeddingOptions, RSAOptions, MEEGOptions, GroupOptions,
    StatsOptions)}


def default(section: type[Section], name: str) -> Any:
    """An option's default, for the parser."""
    found = {f.name: f for f in fields(section)}[name]
    value = found.default if found.default_factory is field().default_factory else found.default_factory()
    return list(value) if isinstance(value, tuple) else value


def pack(**sections: Section) -> dict[str, dict[str, Any]]:
    """Sections as plain dicts for a Nipype node, keyed by the stage function's parameter names."""
    return {name: {"section": type(s).__name__, "values": asdict(s)} for name, s in sections.items()}


def unpack(packed: dict[str, dict[str, Any]]) -> dict[str, Section]:
    """The sections :func:`pack` made, rebuilt (and checked)."""
    return {name: SECTIONS[item["section"]].from_dict(item["values"]) for name, item in packed.items()}
