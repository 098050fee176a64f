import json

import pytest

from bids_encoding.cli.parser import parse_run_args
from bids_encoding.config import config_from_args
from bids_encoding.errors import UserError
from bids_encoding.cli.parser import build_parser


@pytest.fixture
def dirs(tmp_path):
    bids = tmp_path / "bids"
    bids.mkdir()
    return bids, tmp_path / "out"


def configure(argv):
    return config_from_args(parse_run_args(build_parser(), [str(a) for a in argv]))


def test_bids_app_positionals_and_labels_with_or_without_sub(dirs):
    bids, out = dirs
    config = configure([bids, out, "participant", "--participant-label", "sub-01", "02", "--features", "wordrate",
                        "--features", "gpt2:layers=6,9"])
    assert config.participant_label == ("01", "02")
    assert config.features == ("wordrate", "gpt2:layers=6,9")
    assert config.nipype_plugin == "Linear"
    assert config.work_dir == out / ".bids-encoding" / "work"


def test_more_cpus_default_to_multiproc(dirs):
    bids, out = dirs
    config = configure([bids, out, "participant", "--n-cpus", "2"])
    assert config.nipype_plugin == "MultiProc" and config.nipype_plugin_args == {"n_procs": 2}
    config = configure([bids, out, "participant", "--nipype-plugin", "SLURM", "--nipype-plugin-args", '{"sbatch_args": "-p x"}'])
    assert config.nipype_plugin == "SLURM" and config.nipype_plugin_args == {"sbatch_args": "-p x"}


@pytest.mark.parametrize("suffix,text", [
    (".yml", "participant-label: ['01']\nfeatures: [wordrate, wordlength]\nn_cpus: 3\nskip-bids-validation: true\ntask: lpp\n"),
    (".json", json.dumps({"participant_label": ["01"], "features": ["wordrate", "wordlength"], "n-cpus": 3,
                          "skip_bids_validation": True, "task": "lpp"})),
])
def test_config_file_gives_the_same_keys_as_flags(dirs, tmp_path, suffix, text):
    bids, out = dirs
    cfg = tmp_path / f"config{suffix}"
    cfg.write_text(text)
    config = configure([bids, out, "participant", "--config", cfg])
    assert config.participant_label == ("01",)
    assert config.features == ("wordrate", "wordlength")
    assert config.n_cpus == 3 and config.skip_bids_validation and config.task == ("lpp",)


def test_flags_win_over_the_config_file(dirs, tmp_path):
    bids, out = dirs
    cfg = tmp_path / "c.yml"
    cfg.write_text("features: [wordrate]\nn_cpus: 3\n")
    config = configure([bids, out, "participant", "--config", cfg, "--features", "trialtype", "--n-cpus", "1"])
    assert config.features == ("trialtype",) and config.n_cpus == 1


@pytest.mark.parametrize("text,expected", [
    ("featurez: [a]\n", "unknown key 'featurez'"),
    ("features: [a\n", "cannot be read"),
    ("- just\n- a list\n", "mapping"),
])
def test_bad_config_files_are_explained(dirs, tmp_path, text, expected):
    bids, out = dirs
    cfg = tmp_path / "c.yml"
    cfg.write_text(text)
    with pytest.raises(UserError) as err:
        configure([bids, out, "participant", "--config", cfg])
    assert expected in err.value.message and str(cfg) in err.value.message


def test_missing_config_file_is_explained(dirs, tmp_path):
    bids, out = dirs
    with pytest.raises(UserError, match="does not exist"):
        configure([bids, out, "participant", "--config", tmp_path / "nope.yml"])


def test_output_inside_the_input_is_refused(dirs):
    bids, _ = dirs
    with pytest.raises(UserError, match="inside the input dataset"):
        configure([bids, bids / "results", "participant"])
    # but the dataset's own derivatives/ folder is the conventional place
    assert configure([bids, bids / "derivatives" / "enc", "participant"]).output_dir.name == "enc"


def test_bad_plugin_args_are_explained(dirs):
    bids, out = dirs
    with pytest.raises(UserError, match="not valid JSON"):
        configure([bids, out, "participant", "--nipype-plugin-args", "{nope"])


def test_an_unknown_group_test_is_refused_naming_tfce_among_the_choices(dirs, tmp_path, capsys):
    bids, out = dirs
    with pytest.raises(SystemExit) as exited:
        configure([bids, out, "group", "--group-test", "tfc"])
    assert exited.value.code == 2
    message = capsys.readouterr().err
    assert "invalid choice: 'tfc'" in message and "'tfce'" in message
    cfg = tmp_path / "c.yml"
    cfg.write_text("group_test: tfc\n")
    with pytest.raises(UserError) as err:
        configure([bids, out, "group", "--config", cfg])
    assert "tfce" in err.value.message
    assert configure([bids, out, "group", "--group-test", "tfce"]).group.group_test == "tfce"


def test_comparisons_repeat_and_bad_ones_are_explained(dirs):
    bids, out = dirs
    config = configure([bids, out, "participant", "--compare", "wordrate:wordlength", "--compare", "glove:wordrate",
                        "--alternative", "two-sided"])
    assert config.encoding.compare == ("wordrate:wordlength", "glove:wordrate")
    assert config.encoding.alternative == "two-sided"
    for bad in ("wordrate", "wordrate:wordrate", "word-rate:glove"):
        with pytest.raises(UserError, match="not two different feature-space labels"):
            configure([bids, out, "participant", "--compare", bad])


def test_save_weights_is_off_by_default_and_refused_with_confounds_as_a_band(dirs):
    bids, out = dirs
    assert configure([bids, out, "participant"]).encoding.save_weights is False
    assert configure([bids, out, "participant", "--save-weights", "--confounds", "csf"]).encoding.save_weights is True
    with pytest.raises(UserError) as err:
        configure([bids, out, "participant", "--save-weights", "--confounds", "csf", "--confounds-mode", "band"])
    assert "--confounds-mode regress" in err.value.message
    cfg = out.parent / "weights.yml"
    cfg.write_text("save_weights: true\n")
    assert configure([bids, out, "participant", "--config", cfg]).encoding.save_weights is True


def test_an_rsa_searchlight_needs_no_region_but_rsa_without_one_is_explained(dirs, tmp_path):
    bids, out = dirs
    model = tmp_path / "model.tsv"
    model.write_text("a\tb\tc\n0\t1\t1\n1\t0\t1\n1\t1\t0\n")
    config = configure([bids, out, "participant", "--analysis", "rsa", "--rdm", f"m={model}", "--rsa-searchlight",
                        "--rsa-searchlight-radius", "12"])
    assert config.rsa.rsa_searchlight and config.rsa.rsa_searchlight_radius == 12
    assert config.decoding.searchlight_radius == 8  # the decoding searchlight keeps its own radius
    with pytest.raises(UserError, match="nor --rsa-searchlight"):
        configure([bids, out, "participant", "--analysis", "rsa", "--rdm", f"m={model}"])
    with pytest.raises(UserError, match="RSA searchlight radius must be positive"):
        configure([bids, out, "participant", "--analysis", "rsa", "--rdm", f"m={model}", "--rsa-searchlight",
                   "--rsa-searchlight-radius", "0"])
