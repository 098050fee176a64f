"""Surface BOLD: fsaverage6 (2 x 40,962 vertices) x 3,000 TRs read, cleaned and fitted, against the same volume.

Run: .venv/bin/python bench/surface.py [--vertices 40962 --samples 3000 --runs 5 --features 300] [--mem-gb 4]
Quick: ``--vertices 10242 --samples 600`` (fsaverage5, about 1.5 min on 2 cores). The full size takes about
10 min on 2 cores with ``--fit-formats gifti`` (one fit: the loaded arrays are checked equal), 15 with both
fits. The fit's chunks are at most ``--chunk-size`` voxels, so a cap binds only when small
(``--mem-gb 1.5`` at the full size, where the data alone holds 1 GB).

A planted signal (as ``wholebrain.py``: features X, BOLD = noise + X W in 10 % of the locations, on a
baseline of 1000) is written run by run twice, with the same values: as fMRIPrep's per-hemisphere GIFTI
(``sub-01_task-bench_run-1_hemi-L_space-fsaverage6_bold.func.gii`` and hemi-R; one float32 data array
per volume, NIFTI_INTENT_TIME_SERIES, base64 + gzip, as FreeSurfer's mri_vol2surf writes them) and as a
4D ``desc-preproc_bold.nii.gz`` with its ``desc-brain_mask`` holding exactly the same number of voxels
(column j of the volume is vertex j). Then, for each format, in a fresh process of this script each so
that each phase's peak RSS is its own:

* ``read``: ``load_task`` as the app calls it (the mask: computed from the runs on surfaces, fMRIPrep's
  mask on volumes; cosine high-pass, z-scored); its wall time is split by timing the package's own
  functions (GIFTI parsing, the brain mask, the per-run lengths, reading, cleaning);
* ``fit``: ``encode_runs`` (leave-one-run-out, inner alpha choice over 10 alphas) with ``--mem-gb`` on
  the loaded data (saved by ``read``; loaded whole before the clock starts), peak RSS against the cap.

The two loaded arrays are compared (they must be equal: same values, same order). Printed: a table
(format, phase, wall s, peak RSS GB, RSS added GB), the split of the GIFTI read, what one GIFTI file's
parse costs against decoding its bytes alone, the ratio lines and one JSON line.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import final_line, matmul_gflops, timed  # noqa: E402

FORMATS = ("gifti", "nifti")
BASELINE = 1000.0  # BOLD intensities are positive, as fMRIPrep writes them
ALPHAS = np.logspace(-1, 5, 10)


# --------------------------------------------------------------------------- the data


def space_of(vertices: int) -> str:
    """The fsaverage space of that many vertices per hemisphere (fsnative for any other count)."""
    from bids_encoding.surface_io import TEMPLATE_VERTICES

    return next((space for space, n in TEMPLATE_VERTICES.items() if n == vertices), "fsnative")


def volume_grid(n: int) -> tuple[int, int, int]:
    """A 64 x 64 x k box just large enough for ``n`` voxels (the mask holds exactly ``n`` of them)."""
    return 64, 64, -(-n // 4096)


def simulate_run(X_run: np.ndarray, W: np.ndarray, n: int, seed: int) -> np.ndarray:
    """One run's BOLD (volumes x locations, float32): noise, the planted signal in the first ``W.shape[1]``."""
    Y = np.random.default_rng(seed).standard_normal((len(X_run), n), dtype=np.float32)
    Y[:, :W.shape[1]] += X_run @ W
    Y += BASELINE
    return Y


def write_gifti(Y: np.ndarray, path: Path, structure: str, tr: float) -> None:
    import nibabel as nib

    img = nib.GiftiImage(meta=nib.gifti.GiftiMetaData({"AnatomicalStructurePrimary": structure}))
    for volume in Y:
        img.add_gifti_data_array(nib.gifti.GiftiDataArray(
            np.ascontiguousarray(volume), intent="NIFTI_INTENT_TIME_SERIES", datatype="NIFTI_TYPE_FLOAT32",
            encoding="GIFTI_ENCODING_B64GZ", meta={"TimeStep": f"{tr * 1000:g}"}))
    nib.save(img, str(path))


def write_nifti(Y: np.ndarray, path: Path, grid: tuple[int, int, int], tr: float) -> None:
    import nibabel as nib

    volume = np.zeros((int(np.prod(grid)), len(Y)), dtype=np.float32)
    volume[:Y.shape[1]] = Y.T  # the mask's first voxels in C order: nilearn's apply_mask gives them back in order
    img = nib.Nifti1Image(volume.reshape(grid + (len(Y),)), np.diag([3.0, 3.0, 3.0, 1.0]))
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = tr
    nib.save(img, str(path))


def write_dataset(folder: Path, args: argparse.Namespace) -> dict:
    """Both formats of every run in an fMRIPrep-like folder; the manifest the phases read, and write times."""
    import nibabel as nib

    func = folder / "sub-01" / "func"
    func.mkdir(parents=True)
    n = 2 * args.vertices
    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.samples, args.features), dtype=np.float32)
    W = rng.standard_normal((args.features, n // 10), dtype=np.float32) / np.sqrt(args.features)
    np.save(folder / "X.npy", X)
    grid = volume_grid(n)
    mask = np.zeros(int(np.prod(grid)), dtype=np.uint8)
    mask[:n] = 1
    mask_file = func / "sub-01_task-bench_space-MNI152NLin2009cAsym_desc-brain_mask.nii.gz"
    nib.save(nib.Nifti1Image(mask.reshape(grid), np.diag([3.0, 3.0, 3.0, 1.0])), str(mask_file))
    space, length = space_of(args.vertices), args.samples // args.runs
    files: dict[str, list[str]] = {f: [] for f in FORMATS}
    seconds = dict.fromkeys(FORMATS, 0.0)
    for run in range(args.runs):
        Y = simulate_run(X[run * length:(run + 1) * length], W, n, seed=1 + run)
        stem = f"sub-01_task-bench_run-{run + 1}"
        for hemi, columns, structure in (("L", slice(0, args.vertices), "CortexLeft"),
                                         ("R", slice(args.vertices, n), "CortexRight")):
            path = func / f"{stem}_hemi-{hemi}_space-{space}_bold.func.gii"
            seconds["gifti"] += timed(write_gifti, Y[:, columns], path, structure, args.tr)[1]
        files["gifti"].append(str(func / f"{stem}_hemi-L_space-{space}_bold.func.gii"))
        path = func / f"{stem}_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"
        seconds["nifti"] += timed(write_nifti, Y, path, grid, args.tr)[1]
        files["nifti"].append(str(path))
        del Y
    manifest = {"files": files, "mask": {"gifti": None, "nifti": str(mask_file)}, "tr": args.tr,
                "run_lengths": [length] * args.runs, "planted": n // 10, "grid": list(grid)}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    size = {"gifti": sum(p.stat().st_size for p in func.glob("*.func.gii")),
            "nifti": sum(p.stat().st_size for p in func.glob("*desc-preproc_bold.nii.gz"))}
    return {"write_s": seconds, "disk_gb": {f: size[f] / 1e9 for f in FORMATS}}


# --------------------------------------------------------------------------- the phases (each in its own process)


def status_gb(field: str) -> float:
    """A memory figure of this process from /proc (VmRSS: now; VmHWM: its peak), in GiB."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(f"{field}:")) / 1024 ** 2


def rss_gb() -> float:
    return status_gb("VmRSS")


def phase_peak_gb() -> float:
    """This phase's peak RSS. Not ``peak_rss_gb``: a process started by ``subprocess`` (vfork, then exec) starts
    its ru_maxrss at its parent's peak, which here is the writer's and the mmapped comparison's."""
    return status_gb("VmHWM")


class Stopwatches:
    """Total time and number of calls of package functions, by wrapping them where they are looked up."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, owner, name: str, label: str) -> None:
        function = getattr(owner, name)

        def timed_call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - start
                self.calls[label] = self.calls.get(label, 0) + 1

        setattr(owner, name, timed_call)


def read_phase(folder: Path, fmt: str, high_pass: float) -> dict:
    """``load_task`` as the app calls it, split by the package's functions; the loaded data saved for ``fit``."""
    from nilearn import signal

    from bids_encoding import locations
    from bids_encoding.fmri import bold

    manifest = json.loads((folder / "manifest.json").read_text())
    files = [Path(f) for f in manifest["files"][fmt]]
    watches = Stopwatches()
    watches.wrap(locations, "read_gifti", "GIFTI parse (nibabel load, arrays stacked)")
    watches.wrap(bold, "brain_mask", "brain mask")
    watches.wrap(bold, "series_length", "run lengths (series_length per run)")
    watches.wrap(locations.Locations, "read", "reading the runs (Locations.read)")
    watches.wrap(signal, "clean", "cleaning (nilearn signal.clean)")
    mask = manifest["mask"][fmt]
    base = rss_gb()
    start = time.perf_counter()
    data = bold.load_task(files, [manifest["tr"]] * len(files), [Path(mask) if mask else None] * len(files),
                          [None] * len(files), high_pass=high_pass)
    wall = time.perf_counter() - start
    peak = phase_peak_gb()
    np.save(folder / f"Y_{fmt}.npy", data.Y)
    return {"wall_s": wall, "peak_rss_gb": peak, "added_gb": peak - base, "locations": data.brain.size,
            "mask": data.brain.method, "split_s": watches.seconds, "calls": watches.calls}


def fit_phase(folder: Path, fmt: str, mem_gb: float, chunk_size: int) -> dict:
    """``encode_runs`` with the memory cap on the loaded data; peak RSS of this process (data included)."""
    from bids_encoding.models.voxelwise import encode_runs

    manifest = json.loads((folder / "manifest.json").read_text())
    X, Y = np.load(folder / "X.npy"), np.load(folder / f"Y_{fmt}.npy")
    base = rss_gb()
    start = time.perf_counter()
    scores = encode_runs(X, Y, manifest["run_lengths"], alphas=ALPHAS, chunk_size=chunk_size, mem_gb=mem_gb)
    wall = time.perf_counter() - start
    planted = manifest["planted"]
    peak = phase_peak_gb()
    return {"wall_s": wall, "peak_rss_gb": peak, "added_gb": peak - base, "held_gb": base,
            "planted_median_r2": float(np.median(scores.r2[:planted])),
            "other_median_r2": float(np.median(scores.r2[planted:]))}


def run_phase(phase: str, fmt: str, folder: Path, args: argparse.Namespace) -> dict:
    """One phase in a fresh process of this script; its last stdout line is its JSON result."""
    command = [sys.executable, str(Path(__file__).resolve()), "--phase", phase, "--format", fmt, "--folder",
               str(folder), "--mem-gb", str(args.mem_gb), "--chunk-size", str(args.chunk_size), "--high-pass",
               str(args.high_pass)]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- checks and anatomy


def compare_loaded(folder: Path) -> float:
    """Largest difference between the two formats' loaded arrays (0: same values in the same order)."""
    a, b = (np.load(folder / f"Y_{f}.npy", mmap_mode="r") for f in FORMATS)
    if a.shape != b.shape:
        raise SystemExit(f"the formats loaded different shapes: GIFTI {a.shape}, NIfTI {b.shape}")
    step = 100
    return max(float(np.abs(a[i:i + step] - b[i:i + step]).max()) for i in range(0, len(a), step))


def gifti_anatomy(path: Path) -> dict:
    """One GIFTI file: nibabel's load against decoding its data (base64, zlib) alone, and stacking the arrays."""
    import nibabel as nib

    img, load_s = timed(nib.load, str(path))
    _, stack_s = timed(lambda: np.stack([np.asarray(d.data) for d in img.darrays]))
    text = path.read_bytes()
    payloads = re.findall(rb"<Data>\s*([^<]*?)\s*</Data>", text)
    _, decode_s = timed(lambda: [np.frombuffer(zlib.decompress(base64.b64decode(p)), np.float32) for p in payloads])
    return {"file_mb": len(text) / 1e6, "darrays": len(payloads), "nibabel_load_s": load_s, "stack_s": stack_s,
            "decode_only_s": decode_s}


# --------------------------------------------------------------------------- the benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vertices", type=int, default=40962, help="per hemisphere (fsaverage6: 40962)")
    parser.add_argument("--samples", type=int, default=3000, help="TRs in all, split evenly over the runs")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--features", type=int, default=300)
    parser.add_argument("--tr", type=float, default=2.0)
    parser.add_argument("--high-pass", type=float, default=0.01, help="Hz, as --high-pass of the app (its default)")
    parser.add_argument("--mem-gb", type=float, default=4.0, help="memory cap of the fit (GiB), as --mem-gb of the app")
    parser.add_argument("--chunk-size", type=int, default=10_000)
    parser.add_argument("--fit-formats", nargs="*", choices=FORMATS, default=list(FORMATS),
                        help="formats whose loaded data is fitted (the loaded arrays are checked equal, so one fit "
                             "measures both when time is short)")
    parser.add_argument("--tmp", default=None, help="folder for the written files (default: the system's temp)")
    parser.add_argument("--phase", choices=("read", "fit"), help=argparse.SUPPRESS)
    parser.add_argument("--format", choices=FORMATS, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        folder = Path(args.folder)
        result = (read_phase(folder, args.format, args.high_pass) if args.phase == "read"
                  else fit_phase(folder, args.format, args.mem_gb, args.chunk_size))
        print(json.dumps(result))
        return
    if args.samples % args.runs:
        parser.error(f"--samples {args.samples} does not split into {args.runs} runs of equal length")
    reference = matmul_gflops()
    n = 2 * args.vertices
    print(f"{args.runs} runs x {args.samples // args.runs} TRs, {n} locations ({args.vertices} vertices per "
          f"hemisphere, space {space_of(args.vertices)}; volume grid {volume_grid(n)}), {args.features} features, "
          f"cap {args.mem_gb:g} GB", flush=True)
    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="surface-bench-") as tmp:
        folder = Path(tmp)
        written = write_dataset(folder, args)
        print(f"written: GIFTI {written['write_s']['gifti']:.1f} s ({written['disk_gb']['gifti']:.2f} GB), "
              f"NIfTI {written['write_s']['nifti']:.1f} s ({written['disk_gb']['nifti']:.2f} GB)", flush=True)
        results = {}
        for phase in ("read", "fit"):
            for fmt in FORMATS if phase == "read" else args.fit_formats:
                results[fmt, phase] = run_phase(phase, fmt, folder, args)
                print(f"{fmt} {phase}: {results[fmt, phase]['wall_s']:.1f} s", flush=True)
            if phase == "read":
                difference = compare_loaded(folder)
        anatomy = gifti_anatomy(Path(json.loads((folder / "manifest.json").read_text())["files"]["gifti"][0]))

    report(args, reference, written, results, difference, anatomy)


def report(args: argparse.Namespace, reference: float, written: dict, results: dict, difference: float,
           anatomy: dict) -> None:
    """The table, the split of the reads, the ratio lines and the final JSON line."""
    fitted = [fmt for fmt in FORMATS if (fmt, "fit") in results]
    print(f"\n{'format':<7} {'phase':<11} {'wall s':>8} {'peak RSS GB':>12} {'RSS added GB':>13}")
    for fmt in FORMATS:
        print(f"{fmt:<7} {'write':<11} {written['write_s'][fmt]:>8.1f} {'':>12} {'':>13}")
        for phase, name in (("read", "read+clean"), ("fit", "fit")):
            if (fmt, phase) in results:
                result = results[fmt, phase]
                print(f"{fmt:<7} {name:<11} {result['wall_s']:>8.1f} {result['peak_rss_gb']:>12.2f} "
                      f"{result['added_gb']:>13.2f}")
    gifti_read, nifti_read = results["gifti", "read"], results["nifti", "read"]
    print(f"\nloaded: {gifti_read['locations']} locations from GIFTI ({gifti_read['mask']}), "
          f"{nifti_read['locations']} from NIfTI ({nifti_read['mask']}); largest difference between them "
          f"{difference:g}")
    for fmt in FORMATS:
        read = results[fmt, "read"]
        parts = "; ".join(f"{label} {seconds:.1f} s ({read['calls'][label]} calls)"
                          for label, seconds in read["split_s"].items())
        print(f"{fmt} read {read['wall_s']:.1f} s, of which (nested): {parts}")
    label = "GIFTI parse (nibabel load, arrays stacked)"
    parse, parses = gifti_read["split_s"].get(label, 0.0), gifti_read["calls"].get(label, 0)
    needed = 2 * args.runs  # each hemisphere of each run once
    reparsing = parse * (parses - needed) / max(parses, 1)
    print(f"GIFTI parsing is {parse / gifti_read['wall_s']:.0%} of the GIFTI read: {parses} parses for "
          f"{args.runs} runs where {needed} read each file once, so about {reparsing:.1f} s is "
          f"re-parsing. One file ({anatomy['file_mb']:.0f} MB, {anatomy['darrays']} arrays): nibabel load "
          f"{anatomy['nibabel_load_s']:.2f} s, of which base64 + zlib decoding alone takes "
          f"{anatomy['decode_only_s']:.2f} s; stacking {anatomy['stack_s']:.2f} s")
    read_ratio = gifti_read["wall_s"] / nifti_read["wall_s"]
    fit_ratio = (results["gifti", "fit"]["wall_s"] / results["nifti", "fit"]["wall_s"]) if len(fitted) == 2 else None
    write_ratio = written["write_s"]["gifti"] / written["write_s"]["nifti"]
    print(f"\nsurface/volume read time = {read_ratio:.2f}")
    print("surface/volume fit time = " + (f"{fit_ratio:.2f}" if fit_ratio else
                                           f"not measured (only {', '.join(fitted) or 'no format'} fitted)"))
    print(f"surface/volume write time = {write_ratio:.2f}")
    print("peak RSS vs cap: " + (", ".join(
        f"{fmt} fit {results[fmt, 'fit']['peak_rss_gb']:.2f} GB of {args.mem_gb:g} GB "
        f"({results[fmt, 'fit']['peak_rss_gb'] / args.mem_gb:.0%}, "
        f"{'holds' if results[fmt, 'fit']['peak_rss_gb'] <= args.mem_gb else 'EXCEEDED'}; data held before the fit "
        f"{results[fmt, 'fit']['held_gb']:.2f} GB)" for fmt in fitted) or "no fit"))
    if fitted:
        print("median held-out R²: " + ", ".join(
            f"planted {results[fmt, 'fit']['planted_median_r2']:.3f} and others "
            f"{results[fmt, 'fit']['other_median_r2']:.4f} ({fmt})" for fmt in fitted))
    print(f"numpy float32 matmul here: {reference:.0f} GFLOP/s")
    figures = {f"{fmt}_{phase}_{what}": results[fmt, phase][what] for fmt, phase in results
               for what in ("wall_s", "peak_rss_gb")}
    final_line(locations=2 * args.vertices, samples=args.samples, runs=args.runs, features=args.features,
               mem_gb=args.mem_gb, gifti_write_s=written["write_s"]["gifti"], nifti_write_s=written["write_s"]["nifti"],
               **figures, read_ratio=read_ratio, fit_ratio=fit_ratio, write_ratio=write_ratio,
               gifti_parse_share=parse / gifti_read["wall_s"], gifti_parses=parses, loaded_difference=difference,
               planted_median_r2=results[fitted[0], "fit"]["planted_median_r2"] if fitted else None,
               matmul_gflops=reference,
               cap_holds=all(results[f, "fit"]["peak_rss_gb"] <= args.mem_gb for f in fitted) if fitted else None)

if __name__ == "__main__":
    main()
