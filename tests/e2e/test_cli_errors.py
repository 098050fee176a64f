"""Every error a user can cause: one clear paragraph naming the file, exit status 2, no traceback,
no derivative written, nothing written into the input."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_encoding.cli import main
from bids_encoding.stimuli import stimuli_from_events

from ..conftest import run_cli, snapshot

DERIV = ("-d", "{bids}/derivatives/fmriprep")


def fails(capsys, bids: Path, out: Path, *options: str, level: str = "participant") -> str:
    before = snapshot(bids)
    argv = [str(bids), str(out), level, *[o.format(bids=bids) for o in options]]
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("bids-encoding: error: "), err  # one paragraph, after any progress lines
    assert sum(line.startswith("bids-encoding: error") for line in lines) == 1
    assert snapshot(bids) == before, "the input dataset was written to"
    assert not list(out.glob("sub-*")) and not (out / "dataset_description.json").exists()
    return lines[-1]


def test_not_a_bids_dataset(tmp_path, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    err = fails(capsys, folder, tmp_path / "out", "--features", "wordrate")
    assert "not a BIDS dataset" in err and str(folder) in err


def test_no_matching_subject_or_task(small_dataset, tmp_path, capsys):
    err = fails(capsys, small_dataset, tmp_path / "out", "--participant-label", "99", "--features", "wordrate",
                "--skip-bids-validation")
    assert "subject '99'" in err and "01" in err
    err = fails(capsys, small_dataset, tmp_path / "out", "--task", "nope", "--features", "wordrate", "--skip-bids-validation")
    assert "no BOLD runs" in err and "lpp" in err


def test_missing_events_file(broken_dataset, tmp_path, capsys):
    (broken_dataset / "sub-01/func/sub-01_task-lpp_run-2_events.tsv").unlink()
    err = fails(capsys, broken_dataset, tmp_path / "out", "--features", "wordrate", "--skip-bids-validation")
    assert "sub-01_task-lpp_run-2_bold.nii.gz" in err and "no events.tsv" in err


def test_events_without_onset(broken_dataset, tmp_path, capsys):
    events = broken_dataset / "sub-01/func/sub-01_task-lpp_run-1_events.tsv"
    events.write_text(events.read_text().replace("onset", "start", 1))
    err = fails(capsys, broken_dataset, tmp_path / "out", "--features", "wordrate", "--skip-bids-validation")
    assert str(events) in err and "no onset column" in err


def test_missing_stimulus_file(broken_dataset, tmp_path, capsys):
    (broken_dataset / "stimuli/faces/face03.png").unlink()
    err = fails(capsys, broken_dataset, tmp_path / "out", "--features", "trialtype", "--skip-bids-validation")
    assert "faces/face03.png" in err and "_events.tsv" in err


def test_tr_mismatch_between_sidecar_and_header(broken_dataset, tmp_path, capsys):
    sidecar = broken_dataset / "task-lpp_bold.json"
    data = json.loads(sidecar.read_text())
    data["RepetitionTime"] = 2.5
    sidecar.write_text(json.dumps(data))
    err = fails(capsys, broken_dataset, tmp_path / "out", "--features", "wordrate", "--skip-bids-validation")
    assert "2.5" in err and "_bold.nii.gz" in err and "RepetitionTime" in err


def test_nans_in_bold(broken_dataset, tmp_path, capsys):
    bold = broken_dataset / "derivatives/fmriprep/sub-01/func/sub-01_task-lpp_run-2_space-MNI152NLin2009cAsym_res-6_desc-preproc_bold.nii.gz"
    img = nib.load(bold)
    data = np.asarray(img.dataobj, dtype=np.float32)
    data[data.shape[0] // 2, data.shape[1] // 2, data.shape[2] // 2, 10] = np.nan
    header = img.header.copy()
    header.set_data_dtype(np.float32)
    nib.Nifti1Image(data, img.affine, header).to_filename(bold)
    err = fails(capsys, broken_dataset, tmp_path / "out", *DERIV, "--features", "wordrate", "--skip-bids-validation")
    assert bold.name in err and "NaN" in err


def test_unknown_plugin_lists_the_known_ones(small_dataset, tmp_path, capsys):
    err = fails(capsys, small_dataset, tmp_path / "out", "--features", "gpt9", "--skip-bids-validation")
    assert "'gpt9'" in err and "wordrate" in err and "trialtype" in err


def test_bad_plugin_option_lists_the_valid_ones(small_dataset, tmp_path, capsys):
    err = fails(capsys, small_dataset, tmp_path / "out", "--features", "wordlength:units=letters", "--skip-bids-validation")
    assert "'units'" in err and "unit" in err
    err = fails(capsys, small_dataset, tmp_path / "out", "--features", "wordlength:unit=syllabels", "--skip-bids-validation")
    assert "syllabels" in err


def test_features_that_fit_no_task(small_dataset, tmp_path, capsys):
    err = fails(capsys, small_dataset, tmp_path / "out", "--task", "faces", "--features", "wordrate", "--skip-bids-validation")
    assert "text stimuli" in err


def test_output_inside_the_input(small_dataset, capsys):
    err = fails(capsys, small_dataset, small_dataset / "results", "--features", "wordrate")
    assert "inside the input dataset" in err
    assert not (small_dataset / "results").exists()


def test_unreadable_config_file(small_dataset, tmp_path, capsys):
    config = tmp_path / "config.yml"
    config.write_text("features: [wordrate\n")
    err = fails(capsys, small_dataset, tmp_path / "out", "--config", str(config))
    assert str(config) in err


def test_bids_validator_errors_stop_the_run(broken_dataset, tmp_path, capsys):
    (broken_dataset / "sub-01/func/sub-01_task-lpp_run-1_bold.json").write_text("{not json")
    err = fails(capsys, broken_dataset, tmp_path / "out", "--features", "wordrate")
    assert "validator" in err and "--skip-bids-validation" in err


def test_group_level_without_participant_outputs(small_dataset, tmp_path, capsys):
    err = fails(capsys, small_dataset, tmp_path / "out", level="group")
    assert "participant level" in err


RAISING_PLUGIN = textwrap.dedent('''
    from bids_encoding.plugin_api import FeatureExtractor, hookimpl

    class Broken(FeatureExtractor):
        name = "broken"
        modality = "text"
        description = "always raises"

        def extract(self, stimuli):
            raise RuntimeError("model weights are corrupt")

    @hookimpl
    def register_feature_extractors(register):
        register(Broken)
''')


def install_fake_distribution(site: Path, module: str, source: str, dist: str = "broken-plugin", version: str = "0.3") -> None:
    """A real installed distribution (dist-info with an entry point) on a folder put on PYTHONPATH."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(source)
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[bids_encoding]\n{module} = {module}\n")


def test_a_plugin_that_raises_is_named_and_leaves_no_outputs(small_dataset, tmp_path):
    site = tmp_path / "site"
    install_fake_distribution(site, "broken_plugin", RAISING_PLUGIN)
    out = tmp_path / "out"
    before = snapshot(small_dataset)
    result = run_cli(small_dataset, out, "participant", "--features", "wordrate", "broken", "--skip-bids-validation",
                     env={"PYTHONPATH": str(site)})
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "'broken'" in result.stderr and "broken-plugin 0.3" in result.stderr and "model weights are corrupt" in result.stderr
    assert "_events.tsv" in result.stderr
    assert not list(out.glob("sub-*")), "a derivative of the working plugin was left behind"
    assert snapshot(small_dataset) == before


def test_misnamed_hook_in_an_installed_plugin_fails_at_load(small_dataset, tmp_path):
    site = tmp_path / "site"
    install_fake_distribution(site, "typo_plugin", "from bids_encoding.plugin_api import hookimpl\n\n"
                              "@hookimpl\ndef register_feature_extractor(register):\n    pass\n", dist="typo-plugin")
    result = run_cli("plugins", env={"PYTHONPATH": str(site)})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "typo_plugin" in result.stderr and "register_feature_extractors" in result.stderr


def test_verbose_shows_the_traceback(tmp_path):
    (tmp_path / "data").mkdir()
    result = run_cli(tmp_path / "data", tmp_path / "out", "participant", "-v")
    assert result.returncode == 2 and "Traceback" in result.stderr and "not a BIDS dataset" in result.stderr


def test_media_that_cannot_be_used_stop_the_run_before_anything_runs(broken_dataset, tmp_path, capsys):
    """A truncated sound track (shorter than its event) and a movie that is not a movie, each named with the fix."""
    track = broken_dataset / "stimuli" / "story" / "lpp_run-2.wav"
    data = track.read_bytes()
    track.write_bytes(data[: len(data) // 3])
    err = fails(capsys, broken_dataset, tmp_path / "out", *DERIV, "--task", "lpp", "--features", "envelope",
                "--skip-bids-validation")
    assert "lpp_run-2.wav" in err and "sub-01_task-lpp_run-2_events.tsv" in err and "plays it for 400 s" in err
    movie = broken_dataset / "stimuli" / "movie" / "movie_run-1.mp4"
    movie.write_bytes(b"not a movie" * 100)
    err = fails(capsys, broken_dataset, tmp_path / "out2", *DERIV, "--task", "movie", "--features", "cnn:fps=2",
                "--skip-bids-validation")
    assert "movie_run-1.mp4" in err and "cannot be read" in err and "Replace it" in err
    # the story's words need none of it: only the media an extractor reads are checked
    found = stimuli_from_events(broken_dataset / "sub-01/func/sub-01_task-lpp_run-2_events.tsv", track.parent.parent)
    assert len(found["text"]) > 100 and found["audio"].path == (track,)
