"""Fuzzed user inputs (property-based, with hypothesis).

Whatever a user puts in an events.tsv, a sidecar JSON or a --config file, the program
either succeeds or stops with exit status 2 and one clear paragraph naming the file or
option; never a traceback, never a write into the input dataset.

Every strategy here mutates a real, valid input of the built-in example dataset: columns
dropped or renamed, strings in number columns, negative, unsorted, NaN or huge times,
unicode and emoji, empty files, a header only, duplicated rows, truncated or mistyped JSON.
The parsers are fuzzed directly with thousands of examples; the whole program (the real
CLI, the real Nipype run) with fewer, slower ones.
"""

from __future__ import annotations

import json
import math
import re
import time
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings, strategies as st

from bids_encoding.cli import main
from bids_encoding.cli.parser import parse_run_args
from bids_encoding.config import config_from_args
from bids_encoding.fmri.design import events_on_grid
from bids_encoding.errors import UserError
from bids_encoding.cli.parser import build_parser, option_dests
from bids_encoding.stimuli import stimuli_from_events

from ..conftest import snapshot

LPP_EVENTS = "sub-01/func/sub-01_task-lpp_run-1_events.tsv"
FACES_EVENTS = "sub-01/func/sub-01_task-faces_run-1_events.tsv"
LPP_SIDECAR = "task-lpp_bold.json"
LPP_EVENTS_SIDECAR = "task-lpp_events.json"

# Shared by the fast tests: a fixture reused across examples holds no per-example state here
# (each example overwrites the one file it reads), so the health check's worry does not apply.
FAST = dict(derandomize=True, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# --------------------------------------------------------------------------- strategies: values

#: Values people (and their scripts) put in cells: missing markers, non-numbers, extremes, units slips.
TRICKY_VALUES = [
    "n/a", "N/A", "NaN", "nan", "inf", "-inf", "-1", "-0.001", "0", "-0", "1e308", "-1e308", "1e12", "1e400",
    "5e-324", "9" * 40, "", " ", "abc", "1,5", "0x1F", "1_000", "١٢", "１２", "😀", "日本語", "naïve", "\u200b",
    '"', '"unclosed', '""', "'", "None", "True", "\\", "#", "sp", "<unk>", "{sl}", "a\tb", "a\nb", "\r",
]
cell_values = st.one_of(
    st.sampled_from(TRICKY_VALUES),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-10**30, max_value=10**30).map(str),
    st.text(max_size=12),
)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-10**20, max_value=10**20),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=10),
                         st.sampled_from([0, -2.0, 1e308, 2.0, "2", "2.0 s", "abc", "", "n/a"]))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                                  st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                           max_leaves=6)


# --------------------------------------------------------------------------- strategies: events.tsv


def _table(text: str) -> tuple[list[str], list[list[str]]]:
    lines = text.rstrip("\n").split("\n")
    return lines[0].split("\t"), [line.split("\t") for line in lines[1:]]


def _column(header: list[str], name: str) -> int | None:
    return header.index(name) if name in header else None


@st.composite
def mutated_table(draw, text: str) -> bytes:
    """A valid events.tsv with one to three mutations applied, as the bytes of a file."""
    header, rows = _table(text)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from([
            "drop_column", "rename_column", "set_cells", "set_column", "negate_onsets", "milliseconds",
            "shuffle_rows", "duplicate_rows", "header_only", "ragged_row", "add_column", "swap_columns",
        ]))
        width = len(header)
        col = draw(st.integers(0, max(width - 1, 0)))
        if kind == "drop_column" and width:
            header = header[:col] + header[col + 1:]
            rows = [r[:col] + r[col + 1:] for r in rows]
        elif kind == "rename_column" and width:
            header = [*header[:col], draw(st.one_of(st.sampled_from(["Onset", "start", "words", ""]), st.text(max_size=8))),
                      *header[col + 1:]]
        elif kind == "set_cells" and rows and width:
            for _ in range(draw(st.integers(1, 4))):
                row = draw(st.integers(0, len(rows) - 1))
                rows[row] = [*rows[row]]
                if col < len(rows[row]):
                    rows[row][col] = draw(cell_values)
        elif kind == "set_column" and width:
            value = draw(cell_values)
            rows = [[value if i == col else v for i, v in enumerate(r)] for r in rows]
        elif kind in ("negate_onsets", "milliseconds") and _column(header, "onset") is not None:
            at = _column(header, "onset")
            change = (lambda v: "-" + v) if kind == "negate_onsets" else (lambda v: f"{float(v) * 1000:g}")
            rows = [[change(v) if i == at and _is_number(v) else v for i, v in enumerate(r)] for r in rows]
        elif kind == "shuffle_rows":
            rows = draw(st.permutations(rows))
        elif kind == "duplicate_rows" and rows:
            rows = rows + rows[: draw(st.integers(1, len(rows)))]
        elif kind == "header_only":
            rows = []
        elif kind == "ragged_row" and rows:
            row = draw(st.integers(0, len(rows) - 1))
            rows[row] = rows[row][:-1] if draw(st.booleans()) else [*rows[row], draw(cell_values)]
        elif kind == "add_column":
            header = [*header, draw(st.sampled_from(["trial_type", "word", "stim_file", "sentence", "extra"]))]
            value = draw(cell_values)
            rows = [[*r, value] for r in rows]
        elif kind == "swap_columns" and width > 1:
            order = draw(st.permutations(range(width)))
            header = [header[i] for i in order]
            rows = [[r[i] for i in order if i < len(r)] for r in rows]
    body = "\n".join("\t".join(line) for line in [header, *rows])
    return draw(encoded(body))


def _is_number(value: str) -> bool:
    try:
        return math.isfinite(float(value))
    except ValueError:
        return False


@st.composite
def encoded(draw, text: str) -> bytes:
    """Text as a file: UTF-8 (with or without BOM or final newline), CRLF, Latin-1, truncated, or empty."""
    form = draw(st.sampled_from(["utf8", "utf8", "utf8", "bom", "crlf", "latin1", "truncated", "empty", "garbage"]))
    if form == "bom":
        return "\ufeff".encode() + text.encode("utf-8", "surrogatepass") + b"\n"
    if form == "crlf":
        return text.replace("\n", "\r\n").encode("utf-8", "surrogatepass")
    if form == "latin1":
        return text.encode("latin-1", "replace")
    if form == "truncated":
        data = text.encode("utf-8", "surrogatepass")
        return data[: draw(st.integers(0, len(data)))]
    if form == "empty":
        return b""
    if form == "garbage":
        return draw(st.binary(max_size=64))
    return text.encode("utf-8", "surrogatepass") + (b"\n" if draw(st.booleans()) else b"")


# --------------------------------------------------------------------------- strategies: JSON sidecars and config


@st.composite
def mutated_json(draw, text: str) -> bytes:
    """A valid JSON sidecar with a key dropped, a value of the wrong type, or the whole file mangled."""
    data = json.loads(text)
    kind = draw(st.sampled_from(["set_value", "set_value", "drop_key", "list", "scalar", "truncated", "nan", "text"]))
    key = draw(st.sampled_from(sorted(data)))
    if kind == "set_value":
        data[key] = draw(json_values)
    elif kind == "drop_key":
        del data[key]
    elif kind == "list":
        data = [data]
    elif kind == "scalar":
        data = draw(json_scalars)
    elif kind == "nan":
        data[key] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))  # json.dumps writes NaN / Infinity
    elif kind == "truncated":
        cut = json.dumps(data, indent=2)
        return cut[: draw(st.integers(0, len(cut) - 1))].encode()
    elif kind == "text":
        return draw(st.text(max_size=40)).encode("utf-8", "surrogatepass")
    return draw(st.sampled_from([lambda d: json.dumps(d), lambda d: json.dumps(d, ensure_ascii=False)]))(data).encode(
        "utf-8", "surrogatepass")


CONFIG_KEYS = sorted(option_dests())
#: Values of the types that options take, and of the wrong ones.
OPTION_VALUES = st.one_of(
    st.sampled_from(["wordrate", "trialtype", "nope", "wordrate:x=1", "lpp", "faces", "01", "sub-01", "encoding",
                     "decoding", "embedding", "fir", "spm", "regress", "band", "numpy", "MultiProc", "Linear", "Nope",
                     "trial_type=face,scrambled", "word=a", "pca:latents=4", "", "😀", 0, 1, 2, -1, 2.5, 10**20, 1e308,
                     math.nan, True, False, [], [1, 2], [0, 1], [-1, 5], [0.1, 40.0], [40.0, 0.1], ["wordrate", "wordlength"],
                     {"n_procs": 2}, {"n_procs": "x"}, {"a": [1]}]),
    json_values,
)


@st.composite
def config_text(draw, base: dict) -> tuple[str, bytes]:
    """(suffix, content) of a --config file: a valid one (``base``) with keys changed, added or dropped,
    spelled as flags or as destinations, or the file truncated, mistyped or arbitrary."""
    data = dict(base)
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.one_of(st.sampled_from(CONFIG_KEYS), st.sampled_from(sorted(base))))
        if draw(st.integers(0, 9)) == 0:
            data.pop(key, None)
            continue
        spelled = draw(st.sampled_from([key, key, key.replace("_", "-"), "--" + key.replace("_", "-"), key.title()]))
        data.pop(key, None)
        data[spelled] = draw(OPTION_VALUES)
    if draw(st.integers(0, 19)) == 0:
        data[draw(st.text(max_size=8))] = draw(json_values)
    suffix = draw(st.sampled_from([".yml", ".yaml", ".json", ".txt"]))
    form = draw(st.sampled_from(["whole"] * 8 + ["truncated", "not a mapping", "arbitrary"]))
    if form == "not a mapping":
        data = draw(st.one_of(json_scalars, st.lists(json_scalars, max_size=3), st.just([data])))
    text = json.dumps(data) if suffix == ".json" else yaml.safe_dump(data, allow_unicode=True)
    if form == "truncated":
        text = text[: draw(st.integers(0, len(text)))]
    elif form == "arbitrary":
        text = draw(st.text(max_size=60))
    return suffix, text.encode("utf-8", "surrogatepass")


# --------------------------------------------------------------------------- the parsers, fuzzed directly


def valid_config(bids: Path) -> dict:
    """The options of the cheap participant run below, as a config file holds them."""
    return {"participant_label": ["01"], "task": ["lpp"], "features": ["wordrate"], "skip_bids_validation": True,
            "derivatives": [str(bids / "derivatives" / "fmriprep")]}


def _check_sequences(found: dict) -> None:
    """What every stimulus sequence promises downstream: finite, non-negative, sorted times, one per item."""
    for sequence in found.values():
        assert np.isfinite(sequence.onset).all() and np.isfinite(sequence.duration).all()
        assert (sequence.onset >= 0).all() and (sequence.duration >= 0).all()
        assert (np.diff(sequence.onset) >= 0).all(), "onsets are sorted"
        items = getattr(sequence, {"text": "text", "image": "path", "audio": "path", "video": "path",
                                   "trials": "trial_type"}[sequence.modality])
        assert len(items) == len(sequence.onset) == len(sequence.duration)


@pytest.mark.slow
@settings(max_examples=300, **FAST)
@given(times=st.lists(st.tuples(st.floats(0, 1e308), st.floats(0, 1e308)), min_size=1, max_size=6), n_samples=st.integers(1, 50))
def test_events_on_grid_takes_any_finite_times(times, n_samples):
    """Boxcars of events anywhere (long after the run, absurdly long) match a plain loop over the grid."""
    onset, duration = np.array(times, float).reshape(-1, 2).T
    expected = np.zeros((n_samples, 1))
    for t, d in zip(onset.tolist(), duration.tolist()):
        if t / 0.5 < n_samples:  # python floats: 1e308 / 0.5 is inf
            first, end = math.floor(t / 0.5), (t + d) / 0.5
            expected[first:max(first + 1, n_samples if end >= n_samples else math.ceil(end))] += 1
    assert np.array_equal(events_on_grid(onset, duration, np.ones(len(onset)), n_samples, 0.5), expected)


@pytest.mark.slow
@pytest.mark.parametrize("events", [LPP_EVENTS, FACES_EVENTS])
def test_fuzzed_events_are_read_or_explained(small_dataset, tmp_path, events):
    original = (small_dataset / events).read_text()
    target = tmp_path / Path(events).name
    counted = []

    @settings(max_examples=500, **FAST)
    @given(content=mutated_table(original))
    def check(content):
        counted.append(1)
        target.write_bytes(content)
        try:
            found = stimuli_from_events(target, small_dataset / "stimuli")
        except UserError as exc:
            assert str(target) in exc.message
        else:
            _check_sequences(found)

    check()
    print(f"{len(counted)} fuzzed events files ({events})")


@pytest.mark.slow
def test_fuzzed_config_files_are_read_or_explained(small_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths in a fuzzed config land here
    counted = []

    @settings(max_examples=500, **FAST)
    @given(config=config_text(valid_config(small_dataset)))
    def check(config):
        counted.append(1)
        suffix, content = config
        path = tmp_path / f"config{suffix}"
        path.write_bytes(content)
        argv = [str(small_dataset), str(tmp_path / "out"), "participant", "--config", str(path)]
        try:
            config_from_args(parse_run_args(build_parser(), argv))
        except UserError as exc:
            assert str(path) in exc.message or "--" in exc.message, exc.message

    check()
    print(f"{len(counted)} fuzzed config files")


# --------------------------------------------------------------------------- the whole program, fuzzed


def _run(argv: list[str], capsys) -> tuple[int, str]:
    """The real CLI in this process (an exception other than SystemExit fails the test with its traceback)."""
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        status = exc.code
    return status, capsys.readouterr().err


@st.composite
def fuzzed_dataset_input(draw, bids: Path) -> tuple[str, bytes, list[str]]:
    """(file to replace, its new content, the options of a cheap run that reads it)."""
    lpp = ["--task", "lpp", "--features", "wordrate"]
    faces = ["--task", "faces", "--features", "trialtype"]
    derivatives = ["-d", str(bids / "derivatives" / "fmriprep")]
    preproc = next((bids / "derivatives/fmriprep/sub-01/func").glob("*task-lpp_run-1_*desc-preproc_bold.json"))
    target, options = draw(st.sampled_from([
        (LPP_EVENTS, lpp + derivatives), (LPP_EVENTS, lpp + derivatives), (FACES_EVENTS, faces + derivatives),
        (str(preproc.relative_to(bids)), lpp + derivatives), (LPP_SIDECAR, lpp), (LPP_EVENTS_SIDECAR, lpp + derivatives),
    ]))
    original = (bids / target).read_text()
    content = draw(mutated_table(original) if target.endswith(".tsv") else mutated_json(original))
    validate = [] if draw(st.integers(0, 4)) else ["--skip-bids-validation"]
    return target, content, options + validate


#: What real BOLD files were seen to hold (issue 16): constant or NaN voxels, scaled integers, one volume, a region
#: image of x by 1 by 1 voxels, a truncated download, a 3D image, the wrong data type.
BOLD_MUTATIONS = ("constant_voxels", "nan_voxels", "int16_scaled", "single_volume", "x_by_1_by_1", "truncated",
                  "three_d", "all_zero", "uint8", "float64")


def mutated_bold(original: bytes, kind: str, seed: int, fraction: float) -> bytes:
    """The bytes of a BOLD image (NIfTI, gzipped) with one of :data:`BOLD_MUTATIONS` applied."""
    import gzip
    import io

    import nibabel as nib

    img = nib.Nifti1Image.from_bytes(gzip.decompress(original))
    data = np.asarray(img.dataobj, dtype=np.float64)
    rng = np.random.default_rng(seed)
    chosen = rng.random(data.shape[:3]) < fraction  # voxels anywhere: inside or outside the brain
    header = img.header.copy()
    if kind == "truncated":
        return original[: max(1, int(len(original) * fraction))]
    if kind == "constant_voxels":
        data[chosen] = data[chosen][:, :1]
    elif kind == "nan_voxels":
        data[chosen] = np.nan
        header.set_data_dtype(np.float32)
    elif kind == "int16_scaled":
        header.set_data_dtype(np.int16)  # nibabel picks scl_slope/scl_inter to fit the values
    elif kind == "single_volume":
        data = data[..., :1]
    elif kind == "x_by_1_by_1":
        data = data[data.std(axis=-1) > 0][:, None, None, :]
    elif kind == "three_d":
        data = data[..., 0]
    elif kind == "all_zero":
        data[:] = 0
    else:
        header.set_data_dtype(np.dtype(kind))
    mutated = nib.Nifti1Image(data, img.affine, header)
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz:
        gz.write(mutated.to_bytes())
    return buffer.getvalue()


@pytest.mark.slow
def test_fuzzed_bold_images_never_crash_the_program(small_dataset, tmp_path, capsys, monkeypatch):
    """BOLD files as real datasets hold them, raw and preprocessed: exit 0, or exit 2 with one paragraph naming a
    file, nothing written into the dataset, no half-written derivative."""
    monkeypatch.chdir(tmp_path)
    bids = Path(shutil.copytree(small_dataset, tmp_path / "bids"))
    out, work, cache = tmp_path / "out", tmp_path / "work", tmp_path / "cache"
    targets = {"raw": next((bids / "sub-01/func").glob("*task-lpp_run-1_bold.nii.gz")),
               "preproc": next((bids / "derivatives/fmriprep/sub-01/func").glob("*task-lpp_run-1_*desc-preproc_bold.nii.gz"))}
    originals = {name: path.read_bytes() for name, path in targets.items()}
    counted: dict[str, list[int]] = {}

    @example(case=("preproc", "constant_voxels", 0, 0.2))
    @example(case=("preproc", "nan_voxels", 0, 0.05))
    @example(case=("raw", "int16_scaled", 0, 0.5))
    @example(case=("preproc", "single_volume", 0, 0.5))
    @example(case=("raw", "x_by_1_by_1", 0, 0.5))
    @example(case=("raw", "nan_voxels", 1, 0.01))
    @settings(max_examples=4, **FAST)
    @given(case=st.tuples(st.sampled_from(sorted(targets)), st.sampled_from(BOLD_MUTATIONS), st.integers(0, 2**16),
                          st.floats(0.001, 0.999)))
    def bold_files(case):
        which, kind, seed, fraction = case
        target = targets[which]
        target.write_bytes(mutated_bold(originals[which], kind, seed, fraction))
        options = ["--task", "lpp", "--features", "wordrate", "--skip-bids-validation"]
        options += ["-d", str(bids / "derivatives/fmriprep")] if which == "preproc" else []
        try:
            before = snapshot(bids)
            status, err = _run([str(bids), str(out), "participant", "--participant-label", "01", "-w", str(work),
                                "--feature-cache", str(cache), *options], capsys)
            assert status in (0, 2), err
            assert "Traceback" not in err and snapshot(bids) == before
            if status == 2:
                message = err.strip().splitlines()[-1]
                assert message.startswith("bids-encoding: error: ") and "does not recognise" not in message, message
                assert str(bids) in message, message  # it names the file at fault (or the dataset)
                assert not (out / "dataset_description.json").exists(), "a failed run left derivatives"
            counted.setdefault(kind, []).append(status)
        finally:
            target.write_bytes(originals[which])
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(work, ignore_errors=True)

    bold_files()
    print("fuzzed BOLD images, exit status by mutation:", counted)


@pytest.mark.slow
def test_fuzzed_inputs_never_crash_the_program(small_dataset, tmp_path, capsys, monkeypatch):
    """Mutated events, sidecars and config files: exit 0, or exit 2 with one paragraph naming the file."""
    monkeypatch.chdir(tmp_path)
    bids = Path(shutil.copytree(small_dataset, tmp_path / "bids"))
    out, work, cache = tmp_path / "out", tmp_path / "work", tmp_path / "cache"
    counted = {0: 0, 2: 0}

    def check(argv: list[str], mutated: Path) -> None:
        before = snapshot(bids)
        status, err = _run([str(bids), str(out), "participant", "--participant-label", "01", "-w", str(work),
                            "--feature-cache", str(cache), *argv], capsys)
        assert status in (0, 2), err
        assert "Traceback" not in err
        assert snapshot(bids) == before, "the input dataset was written to"
        if status == 2:
            message = err.strip().splitlines()[-1]
            assert message.startswith("bids-encoding: error: "), err
            assert "does not recognise" not in message, message  # a crash, not a user error
            # it names the file, the option, or quotes the value at fault
            assert str(bids) in message or str(mutated) in message or re.search(r"--\w|'[^']+'", message), message
            assert not (out / "dataset_description.json").exists(), "a failed run left derivatives"
        counted[status] += 1
        shutil.rmtree(out, ignore_errors=True)

    lpp = ["--task", "lpp", "--features", "wordrate", "--skip-bids-validation", "-d", str(bids / "derivatives/fmriprep")]
    preproc = next((bids / "derivatives/fmriprep/sub-01/func").glob("*task-lpp_run-1_*desc-preproc_bold.json"))
    events = (bids / LPP_EVENTS).read_text().splitlines()

    # found by this fuzzer once (each was a crash or a 'likely a bug' message), kept as regressions
    @example(case=(LPP_EVENTS, "\n".join([*events[:3], "1e308\t0.3\tfar", *events[3:]]).encode(), lpp))
    @example(case=(str(preproc.relative_to(bids)), preproc.read_bytes().replace(b"2.0", b'"abc"', 1), lpp))
    @settings(max_examples=10, **FAST)
    @given(case=fuzzed_dataset_input(bids))
    def dataset_files(case):
        target, content, options = case
        original = (bids / target).read_bytes()
        (bids / target).write_bytes(content)
        try:
            check(options, bids / target)
        finally:
            (bids / target).write_bytes(original)

    @example(config=(".yml", yaml.safe_dump({**valid_config(bids), "trim": [100, 100]}).encode()))
    @example(config=(".json", json.dumps({**valid_config(bids), "nipype_plugin": "Nope"}).encode()))
    @settings(max_examples=4, **FAST)
    @given(config=config_text(valid_config(bids)))
    def config_files(config):
        suffix, content = config
        path = tmp_path / f"config{suffix}"
        path.write_bytes(content)
        check(["--config", str(path)], path)

    started = time.monotonic()
    dataset_files()
    config_files()
    print(f"{sum(counted.values())} fuzzed runs of the program in {time.monotonic() - started:.0f} s: "
          f"{counted[0]} succeeded, {counted[2]} explained")
