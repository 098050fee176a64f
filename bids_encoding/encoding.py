"""The encoding stage of one task: BOLD and event features in, held-out score maps out.

Loads each run's BOLD inside a brain mask, builds each run's design from the
stored features (HRF convolution, per-run z-scoring), fits cross-validated
ridge per feature space, and writes R², r and alpha maps as NIfTI files with
the metadata their sidecars need. Plain function; the workflow wraps it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nilearn import masking, signal

from . import features as feature_store
from .derivatives import save_nifti
from .design import hrf_design, zscore
from .errors import UserError
from .models.encoding import DEFAULT_ALPHAS, cross_validated_encoding

STATS = {"rSquare": "held-out coefficient of determination (R²), averaged over outer folds",
         "r": "held-out Pearson correlation between predicted and measured BOLD, averaged over outer folds",
         "alpha": "ridge penalty chosen by inner cross-validation (geometric mean over outer folds)"}


def brain_mask(bold_files: list[Path], mask_files: list[Path | None]) -> nib.Nifti1Image:
    """The given masks' intersection, or an EPI mask computed from the runs when none is given."""
    given = [str(m) for m in mask_files if m]
    if given:
        return masking.intersect_masks(given, threshold=1.0, connected=False) if len(given) > 1 else nib.load(given[0])
    return masking.compute_multi_epi_mask([str(b) for b in bold_files])


def load_bold(bold_file: Path, mask: nib.Nifti1Image, tr: float) -> np.ndarray:
    """Masked BOLD (time x voxels), detrended and z-scored within the run; NaNs are an error."""
    data = masking.apply_mask(str(bold_file), mask, dtype=np.float32, ensure_finite=False)
    if not np.all(np.isfinite(data)):
        n_bad = int((~np.isfinite(data)).any(axis=0).sum())
        raise UserError(
            f"the BOLD data holds NaN or infinite values in {n_bad} voxel(s) inside the brain mask",
            path=bold_file,
            fix="Re-run preprocessing, or give a brain mask (--derivatives with a desc-brain_mask) that excludes those voxels",
        )
    return signal.clean(data, detrend=True, standardize="zscore_sample", filter=False, t_r=tr).astype(np.float32)


def fit_encoding(bold_files: list[Path], feature_files: list[Path], trs: list[float], out_dir: Path,
                 mask_files: list[Path | None] | None = None, hrf_model: str = "glover",
                 alphas: np.ndarray = DEFAULT_ALPHAS) -> list[dict[str, Any]]:
    """Fit one model per feature space of the feature files; return the written maps with metadata."""
    out_dir = Path(out_dir)
    mask = brain_mask(bold_files, mask_files or [None] * len(bold_files))
    Y_runs = [load_bold(b, mask, tr) for b, tr in zip(bold_files, trs)]
    loaded = [feature_store.load(f) for f in feature_files]
    provenance = loaded[0][1]
    extractor = provenance["Plugin"]["Name"]
    outputs = []
    for label in loaded[0][0].spaces:
        X_runs = [
            zscore(hrf_design(fs.onset, fs.duration, fs.spaces[label], len(y), tr, hrf_model=hrf_model))
            for (fs, _), y, tr in zip(loaded, Y_runs, trs)
        ]
        scores = cross_validated_encoding(X_runs, Y_runs, alphas=alphas)
        desc = extractor + label
        model = {
            "Estimator": "sklearn.linear_model.RidgeCV(alpha_per_target=True)",
            "Alphas": [float(a) for a in alphas],
            "CrossValidation": scores.cv,
            "NFolds": scores.n_folds,
            "Design": f"{hrf_model} HRF convolution of event features, oversampling 16; per-run z-scoring",
            "BOLDPreprocessing": "masked, linearly detrended and z-scored within each run",
            "NFeatures": int(X_runs[0].shape[1]),
            "NSamples": int(sum(len(y) for y in Y_runs)),
        }
        for stat, values in (("rSquare", scores.r2), ("r", scores.r), ("alpha", scores.alpha)):
            path = out_dir / f"desc-{desc}_stat-{stat}.nii.gz"
            save_nifti(masking.unmask(values.astype(np.float32), mask), path)
            outputs.append({
                "in_file": str(path),
                "entities": {"desc": desc, "stat": stat},
                "metadata": {"Description": STATS[stat], "FeatureSpace": desc, "Model": model, "Features": provenance,
                             "Sources": [str(b) for b in bold_files]},
            })
    mask_path = out_dir / "desc-brain_mask.nii.gz"
    save_nifti(nib.Nifti1Image(np.asarray(mask.dataobj).astype(np.uint8), mask.affine), mask_path)
    outputs.append({"in_file": str(mask_path), "entities": {"desc": "brain"}, "suffix": "mask",
                    "metadata": {"Description": "voxels the models were fitted in", "Type": "Brain",
                                 "Sources": [str(m) for m in mask_files or [] if m] or [str(b) for b in bold_files]}})
    return outputs
