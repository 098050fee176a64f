"""events.tsv -> typed stimulus sequences, on real files."""

import pytest

from bids_encoding.errors import UserError
from bids_encoding.stimuli import Images, Trials, Words, stimuli_from_events


def events(tmp_path, text: str):
    path = tmp_path / "sub-01_task-x_run-1_events.tsv"
    path.write_text(text)
    return path


def test_words_from_a_word_or_text_column_skip_empty_rows(tmp_path):
    for column in ("word", "text"):
        found = stimuli_from_events(events(tmp_path, f"onset\tduration\t{column}\n0.5\t0.3\tOnce\n1.0\t0.2\tn/a\n"
                                                     f"1.5\t0.3\tupon\n2.0\t0.3\t \n"), None)
        words = found["text"]
        assert isinstance(words, Words) and words.text == ("Once", "upon") and words.onset.tolist() == [0.5, 1.5]


def test_images_resolve_under_stimuli_and_trials_come_from_trial_type(tmp_path):
    stimuli = tmp_path / "stimuli"
    (stimuli / "faces").mkdir(parents=True)
    (stimuli / "faces" / "a.png").write_bytes(b"png")
    found = stimuli_from_events(events(tmp_path, "onset\tduration\ttrial_type\tstim_file\n"
                                                 "1\t1\tface\tfaces/a.png\n5\t1\tscrambled\tfaces/a.png\n"
                                                 "9\t0\tbutton\tn/a\n"), stimuli)
    assert isinstance(found["image"], Images) and found["image"].path == ((stimuli / "faces" / "a.png").resolve(),) * 2
    assert isinstance(found["trials"], Trials) and found["trials"].trial_type == ("face", "scrambled", "button")
    assert "text" not in found


def test_unsorted_onsets_are_sorted(tmp_path):
    found = stimuli_from_events(events(tmp_path, "onset\tduration\tword\n3\t0.1\tc\n1\t0.1\ta\n2\t0.1\tb\n"), None)
    assert found["text"].text == ("a", "b", "c")


@pytest.mark.parametrize("text,expected", [
    ("onset\tword\n1\ta\n", "no duration column"),
    ("duration\tword\n1\ta\n", "no onset column"),
    ("onset\tduration\tword\nsoon\t1\ta\n", "line 2"),
    ("onset\tduration\tword\n1\t1\ta\nn/a\t1\tb\n", "line 3"),
    ("onset\tduration\tword\n-1\t1\ta\n", "negative"),
    ("", "cannot be read"),
])
def test_bad_events_are_explained_with_the_file(tmp_path, text, expected):
    path = events(tmp_path, text)
    with pytest.raises(UserError) as err:
        stimuli_from_events(path, None)
    assert expected in err.value.message and str(path) in err.value.message


def test_missing_stimulus_file_names_the_events_file(tmp_path):
    (tmp_path / "stimuli").mkdir()
    path = events(tmp_path, "onset\tduration\tstim_file\n1\t1\tfaces/missing.png\n")
    with pytest.raises(UserError) as err:
        stimuli_from_events(path, tmp_path / "stimuli")
    assert "faces/missing.png" in err.value.message and str(path) in err.value.message


def test_missing_events_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        stimuli_from_events(tmp_path / "nope_events.tsv", None)
