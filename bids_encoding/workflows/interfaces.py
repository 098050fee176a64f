"""Nipype interfaces around the plain analysis functions.

Each interface only moves arguments in and file names out: a node's ``options`` are the
analysis's option sections as plain dicts (:func:`bids_encoding.options.pack`), rebuilt
here and passed by name. User errors raised inside a node reach the CLI through
:func:`bids_encoding.runner.reporting_user_errors`.
"""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from ..options import unpack
from ..runner import reporting_user_errors


class _ExtractFeaturesInputSpec(BaseInterfaceInputSpec):
    spec = traits.Str(mandatory=True, desc="extractor name and options, e.g. wordrate or gpt2:layers=6")
    plugin_version = traits.Str(mandatory=True, desc="so that a new plugin version invalidates cached features")
    events_file = File(exists=True, mandatory=True)
    stimuli_dir = traits.Str("", usedefault=True, desc="the dataset's stimuli/ folder, or empty")
    cache_dir = traits.Str("", usedefault=True, desc="the feature cache folder, or empty for none")


class _ExtractFeaturesOutputSpec(TraitedSpec):
    features_file = File(exists=True)


class ExtractFeatures(SimpleInterface):
    """Run a feature-extractor plugin on one run's events."""

    input_spec = _ExtractFeaturesInputSpec
    output_spec = _ExtractFeaturesOutputSpec

    @reporting_user_errors
    def _run_interface(self, runtime):
        from .. import features

        found, provenance = features.extract(self.inputs.spec, Path(self.inputs.events_file),
                                             Path(self.inputs.stimuli_dir) if self.inputs.stimuli_dir else None,
                                             cache_dir=Path(self.inputs.cache_dir) if self.inputs.cache_dir else None)
        self._results["features_file"] = str(features.save(found, provenance, Path(runtime.cwd) / "features.npz"))
        return runtime


class _FitEncodingInputSpec(BaseInterfaceInputSpec):
    bold_files = InputMultiObject(File(exists=True), mandatory=True)
    feature_files = traits.List(File(exists=True), mandatory=True, desc="one features file per run")
    trs = traits.List(traits.Float, mandatory=True)
    mask_files = traits.List(traits.Str, desc="brain mask per run, '' where none")
    confound_files = traits.List(traits.Str, desc="confounds TSV per run, '' where none")
    options = traits.Dict(desc="option sections, packed (bids_encoding.options.pack)")


class _FitJointEncodingInputSpec(_FitEncodingInputSpec):
    feature_files = traits.List(traits.List(File(exists=True)), mandatory=True,
                                desc="per extractor, one features file per run")


class _FitEncodingOutputSpec(TraitedSpec):
    outputs = traits.List(traits.Dict, desc="written maps: in_file, entities, metadata")


def _as_dicts(outputs) -> list[dict]:
    """An analysis's :class:`~bids_encoding.derivatives.Output` records as the plain dicts Nipype carries."""
    return [output.to_dict() for output in outputs]


def _optional_paths(values, n):
    return [Path(v) if v else None for v in (values or [""] * n)]


class FitEncoding(SimpleInterface):
    """Cross-validated ridge encoding of one task, one model per feature space of one extractor."""

    input_spec = _FitEncodingInputSpec
    output_spec = _FitEncodingOutputSpec
    joint = False
    function = "fit_encoding"

    @reporting_user_errors
    def _run_interface(self, runtime):
        from ..analyses import encoding

        n = len(self.inputs.bold_files)
        fit = getattr(encoding, self.function)
        self._results["outputs"] = _as_dicts(fit(
            [Path(b) for b in self.inputs.bold_files], list(self.inputs.feature_files), list(self.inputs.trs),
            Path(runtime.cwd), mask_files=_optional_paths(self.inputs.mask_files, n),
            confound_files=_optional_paths(self.inputs.confound_files, n),
            **unpack(self.inputs.options or {}),
        ))
        return runtime


class FitJointEncoding(FitEncoding):
    """One banded ridge model over the feature spaces of several extractors, with split R²."""

    input_spec = _FitJointEncodingInputSpec
    joint = True
    function = "fit_joint_encoding"


class FitComparison(FitJointEncoding):
    """Paired comparisons (--compare) of feature spaces from any of the extractors: delta R², p and q."""

    function = "compare_encoding"


class _TaskRunsInputSpec(BaseInterfaceInputSpec):
    """The runs of one task, as the decoding and embedding stages read them."""

    bold_files = InputMultiObject(File(exists=True), mandatory=True)
    events_files = traits.List(File(exists=True), mandatory=True)
    trs = traits.List(traits.Float, mandatory=True)
    mask_files = traits.List(traits.Str, desc="brain mask per run, '' where none")
    confound_files = traits.List(traits.Str, desc="confounds TSV per run, '' where none")
    options = traits.Dict(desc="option sections, packed (bids_encoding.options.pack)")


class _FitDecodingInputSpec(_TaskRunsInputSpec):
    feature_files = traits.List(traits.List(File(exists=True)), desc="per extractor, one features file per run")


def _task_runs(inputs) -> dict:
    """The run arguments of :func:`~bids_encoding.analyses.decoding.fit_decoding` and
    :func:`~bids_encoding.analyses.embedding.fit_embedding`."""
    n = len(inputs.bold_files)
    return {"bold_files": [Path(b) for b in inputs.bold_files], "events_files": [Path(e) for e in inputs.events_files],
            "trs": list(inputs.trs), "mask_files": _optional_paths(inputs.mask_files, n),
            "confound_files": _optional_paths(inputs.confound_files, n)}


class FitDecoding(SimpleInterface):
    """Cross-validated decoding of a contrast from trial-wise brain responses (and from model features)."""

    input_spec = _FitDecodingInputSpec
    output_spec = _FitEncodingOutputSpec

    @reporting_user_errors
    def _run_interface(self, runtime):
        from ..analyses.decoding import fit_decoding

        self._results["outputs"] = _as_dicts(fit_decoding(
            out_dir=Path(runtime.cwd), **_task_runs(self.inputs),
            feature_files=[[Path(f) for f in group] for group in (self.inputs.feature_files or [])] or None,
            **unpack(self.inputs.options or {}),
        ))
        return runtime


class FitRSA(SimpleInterface):
    """Regions' RDMs of trial responses compared with model RDMs (feature spaces and given files)."""

    input_spec = _FitDecodingInputSpec
    output_spec = _FitEncodingOutputSpec

    @reporting_user_errors
    def _run_interface(self, runtime):
        from ..analyses.rsa import fit_rsa

        self._results["outputs"] = _as_dicts(fit_rsa(
            out_dir=Path(runtime.cwd), **_task_runs(self.inputs),
            feature_files=[[Path(f) for f in group] for group in (self.inputs.feature_files or [])] or None,
            **unpack(self.inputs.options or {}),
        ))
        return runtime


class FitEmbedding(SimpleInterface):
    """Brain embedders fitted on a region's samples, with held-out reconstruction and decoding from the latents."""

    input_spec = _TaskRunsInputSpec
    output_spec = _FitEncodingOutputSpec

    @reporting_user_errors
    def _run_interface(self, runtime):
        from ..analyses.embedding import fit_embedding

        self._results["outputs"] = _as_dicts(fit_embedding(out_dir=Path(runtime.cwd), **_task_runs(self.inputs),
                                                 **unpack(self.inputs.options or {})))
        return runtime


class _MEEGRunsInputSpec(BaseInterfaceInputSpec):
    recording_files = InputMultiObject(File(exists=True), mandatory=True,
                                       desc="the recordings (their content is hashed: a changed file reruns the node)")
    events_files = traits.List(File(exists=True), mandatory=True)
    runs = traits.List(traits.Dict, mandatory=True, desc="each run's bids_encoding.bids_io.MEEGRun fields")
    options = traits.Dict(desc="option sections, packed (bids_encoding.options.pack)")


class _FitTRFInputSpec(_MEEGRunsInputSpec):
    feature_files = traits.List(File(exists=True), mandatory=True, desc="one features file per run")


def _meeg_runs(inputs) -> list:
    from ..bids_io.meeg import MEEGRun

    return [MEEGRun(**{**fields, "recording": Path(fields["recording"]), "events": Path(fields["events"])})
            for fields in inputs.runs]


class FitTimeDecoding(SimpleInterface):
    """Time-resolved decoding of a contrast from EEG or MEG epochs, with time-cluster permutation p-values."""

    input_spec = _MEEGRunsInputSpec
    output_spec = _FitEncodingOutputSpec

    @reporting_user_errors
    def _run_interface(self, runtime):
        from ..analyses.time_decoding import fit_time_decoding

        self._results["outputs"] = _as_dicts(fit_time_decoding(_meeg_runs(self.inputs), Path(runtime.cwd),
                                                     **unpack(self.inputs.options or {})))
        return runtime


class FitTRF(SimpleInterface):
    """Temporal response functions from one extractor's features to every EEG or MEG channel."""

    input_spec = _FitTRFInputSpec
    output_spec = _FitEncodingOutputSpec

    @reporting_user_errors
    def _run_interface(self, runtime):
        from ..analyses.trf import fit_trf

        self._results["outputs"] = _as_dicts(fit_trf(_meeg_runs(self.inputs), [Path(f) for f in self.inputs.feature_files],
                                           Path(runtime.cwd), **unpack(self.inputs.options or {})))
        return runtime


class _DerivativesSinkInputSpec(BaseInterfaceInputSpec):
    base_directory = traits.Str(mandatory=True, desc="the staging folder of this invocation")
    entities = traits.Dict(mandatory=True, desc="entities shared by every output (subject, task, space)")
    outputs = traits.List(traits.Dict, mandatory=True)
    provenance = traits.Dict(desc="added to every sidecar under 'bids-encoding'")
    dataset_links = traits.Dict(desc="dataset names for BIDS URIs in Sources")


class _DerivativesSinkOutputSpec(TraitedSpec):
    out_files = traits.List(traits.Str)


class DerivativesSink(SimpleInterface):
    """Write outputs under their BIDS derivative names, each with its JSON sidecar."""

    input_spec = _DerivativesSinkInputSpec
    output_spec = _DerivativesSinkOutputSpec

    def _run_interface(self, runtime):
        from ..derivatives import write_outputs

        self._results["out_files"] = write_outputs(Path(self.inputs.base_directory), dict(self.inputs.entities),
                                                   list(self.inputs.outputs), dict(self.inputs.provenance or {}),
                                                   dict(self.inputs.dataset_links or {}))
        return runtime


class _SubjectReportInputSpec(BaseInterfaceInputSpec):
    base_directory = traits.Str(mandatory=True)
    subject = traits.Str(mandatory=True)
    out_files = traits.List(traits.Str, mandatory=True, desc="derivative paths relative to base_directory")


class _ReportOutputSpec(TraitedSpec):
    report = traits.Str()


class SubjectReport(SimpleInterface):
    """The subject's HTML report, written into the staging folder: it shows this run's derivatives and those
    earlier runs left in the output folder (the staging folder's parent's parent)."""

    input_spec = _SubjectReportInputSpec
    output_spec = _ReportOutputSpec

    @reporting_user_errors
    def _run_interface(self, runtime):
        from ..report import write_subject_report

        self._results["report"] = str(write_subject_report(Path(self.inputs.base_directory), self.inputs.subject,
                                                           list(self.inputs.out_files)))
        return runtime


class _GroupStatsInputSpec(BaseInterfaceInputSpec):
    group = traits.Dict(mandatory=True, desc="bids_encoding.bids_io.outputs.GroupInput as a dict")
    options = traits.Dict(desc="option sections, packed (bids_encoding.options.pack)")


class _GroupStatsOutputSpec(TraitedSpec):
    outputs = traits.List(traits.Dict)


class GroupStats(SimpleInterface):
    """The group test of one participant output name (maps, decoding over time, or tables)."""

    input_spec = _GroupStatsInputSpec
    output_spec = _GroupStatsOutputSpec

    @reporting_user_errors
    def _run_interface(self, runtime):
        from ..analyses.group_stats import group_test
        from ..bids_io.outputs import GroupInput

        values = dict(self.inputs.group)
        group = GroupInput(**{**values, "files": {s: Path(p) for s, p in values["files"].items()}})
        self._results["outputs"] = _as_dicts(group_test(group, Path(runtime.cwd), **unpack(self.inputs.options or {})))
        return runtime


class _GroupReportInputSpec(BaseInterfaceInputSpec):
    base_directory = traits.Str(mandatory=True)
    out_files = traits.List(traits.Str, mandatory=True)
    n_subjects = traits.Int(mandatory=True)


class GroupReport(SimpleInterface):
    """The group's HTML report over this run's and the output folder's group derivatives."""

    input_spec = _GroupReportInputSpec
    output_spec = _ReportOutputSpec

    @reporting_user_errors
    def _run_interface(self, runtime):
        from ..report import write_group_report

        self._results["report"] = str(write_group_report(Path(self.inputs.base_directory), list(self.inputs.out_files),
                                                         self.inputs.n_subjects))
        return runtime
