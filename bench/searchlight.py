"""Searchlight on the example at full mask: ours vs nilearn's SearchLight, wall time and peak RSS.

Run: .venv/bin/python bench/searchlight.py [--radius 8 --classifier logistic]
Writes the example dataset (one subject) to a temporary folder, estimates the LSS trial responses
of task faces (80 trials x 8,735 voxels of the 6 mm mask), then scores every voxel of the mask:

* ours: ``bids_encoding.models.searchlight.searchlight`` (batched exact solver, n_jobs=1);
* nilearn: ``nilearn.decoding.SearchLight`` on the trials as a 4D image, with the same sphere
  radius, the same scikit-learn pipeline (StandardScaler + classifier), ``cv=LeaveOneGroupOut()``
  with the runs as ``groups`` and ``scoring="balanced_accuracy"``; everything else its defaults
  (n_jobs=1, process mask = mask).

Both run in this process, one after the other, with BLAS limited to one thread (ours limits
itself; nilearn gets the same limit, since its many tiny fits only lose from threads on a busy
machine). Peak RSS: the process's high-water mark (VmHWM) is reset before each run by writing 5 to
/proc/self/clear_refs and read after it, so each figure is that run's own peak, the data and the
libraries it shares with the other included; where the reset is not allowed, getrusage's peak is
printed instead (then nilearn's figure includes ours). Prints both times, the ratio, how far the
maps agree and where their peaks fall; the last line is one JSON object (ours_s, nilearn_s,
ours_peak_rss_gb, nilearn_peak_rss_gb, ...).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import final_line, peak_rss_gb, timed  # noqa: E402

from bids_encoding.fmri.trials import trial_responses  # noqa: E402
from bids_encoding.fmri.masks import brain_mask  # noqa: E402
from bids_encoding.example import load_truth, write_example_dataset  # noqa: E402
from bids_encoding.models.classifiers import make_classifier
from bids_encoding.models.searchlight import searchlight  # noqa: E402


def _status_gb(field: str) -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024 ** 2
    return float("nan")


def reset_peak() -> bool:
    """Reset this process's peak RSS (Linux >= 4.0); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def measured(function, *args, **kwargs):
    """Result, wall seconds and peak RSS (GB) of one call."""
    resettable = reset_peak()
    result, seconds = timed(function, *args, **kwargs)
    return result, seconds, _status_gb("VmHWM") if resettable else peak_rss_gb()


def nilearn_searchlight(X, mask, labels, runs, radius: float, classifier: str) -> np.ndarray:
    from nilearn import masking
    from nilearn.decoding import SearchLight
    from sklearn.model_selection import LeaveOneGroupOut

    images = masking.unmask(X, mask)  # the trials as a 4D image, as a nilearn user holds them
    model = SearchLight(mask_img=mask, radius=radius, estimator=make_classifier(classifier), cv=LeaveOneGroupOut(),
                        scoring="balanced_accuracy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(images, labels, groups=runs)
    return model.scores_[np.asarray(mask.dataobj) > 0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--radius", type=float, default=8.0)
    parser.add_argument("--classifier", choices=("logistic", "svm"), default="logistic")
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    with tempfile.TemporaryDirectory() as folder:
        root = write_example_dataset(Path(folder) / "bids", n_subjects=1)
        func = root / "derivatives" / "fmriprep" / "sub-01" / "func"
        name = "sub-01_task-faces_run-{}_space-MNI152NLin2009cAsym_res-6_desc-{}.nii.gz"
        bold = [func / name.format(r, "preproc_bold") for r in (1, 2)]
        mask = brain_mask(bold, [func / name.format(r, "brain_mask") for r in (1, 2)]).img
        trials = trial_responses(bold, [root / "sub-01" / "func" / f"sub-01_task-faces_run-{r}_events.tsv" for r in (1, 2)],
                                 [2.0, 2.0], "trial_type", ("face", "scrambled"), mask, "lss")
        truth = load_truth(root, "01", "faces")["face"][np.asarray(mask.dataobj) > 0]
    X, labels, runs = trials.X, trials.labels, trials.runs
    baseline = _status_gb("VmRSS")
    print(f"trials x voxels {X.shape} ({X.dtype}), radius {args.radius} mm, {args.classifier}, "
          f"leave-one-run-out over {len(np.unique(runs))} runs; RSS before the searchlights {baseline:.3f} GB", flush=True)

    ours, ours_s, ours_rss = measured(searchlight, X, mask, labels, runs, radius=args.radius, classifier=args.classifier)
    print(f"bids-encoding searchlight: {ours_s:8.2f} s  peak RSS {ours_rss:.3f} GB", flush=True)
    with threadpool_limits(limits=1):
        theirs, nilearn_s, nilearn_rss = measured(nilearn_searchlight, X, mask, labels, runs, args.radius,
                                                  args.classifier)
    print(f"nilearn SearchLight:       {nilearn_s:8.2f} s  peak RSS {nilearn_rss:.3f} GB  "
          f"ratio {nilearn_s / ours_s:.1f}x", flush=True)

    difference = np.abs(ours - theirs)
    same = float((difference < 1e-6).mean())
    print(f"maps: {same:.1%} of voxels identical, largest difference {difference.max():.4f} (1/80 = one held-out "
          f"trial on a decision boundary); peaks in the planted sphere: ours {bool(truth[np.argmax(ours)])}, "
          f"nilearn {bool(truth[np.argmax(theirs)])}")
    final_line(ours_s=ours_s, nilearn_s=nilearn_s, ours_peak_rss_gb=ours_rss, nilearn_peak_rss_gb=nilearn_rss,
               baseline_rss_gb=baseline, speedup=nilearn_s / ours_s, voxels=int(X.shape[1]), trials=int(X.shape[0]),
               radius_mm=args.radius, classifier=args.classifier, identical_fraction=same,
               max_abs_difference=float(difference.max()))


if __name__ == "__main__":
    main()
