"""Words from transcripts (Praat TextGrid, TSV/CSV) that events point to, on real files."""

import numpy as np
import pytest

from bids_encoding.errors import UserError
from bids_encoding.stimuli import Words, read_textgrid, read_transcript_tsv, stimuli_from_events

# One transcript in Praat's two text formats: a word tier with silences ("", whitespace, sp, {LG}),
# a sentence tier and a point tier. "" inside a Praat string is one quote.
LONG = '''File type = "ooTextFile"
Object class = "TextGrid"

xmin = 0 
xmax = 3.2 
tiers? <exists> 
size = 3 
item []: 
    item [1]:
        class = "IntervalTier" 
        name = "Words" 
        xmin = 0 
        xmax = 3.2 
        intervals: size = 10 
        intervals [1]:
            xmin = 0 
            xmax = 0.5 
            text = "" 
        intervals [2]:
            xmin = 0.5 
            xmax = 0.8 
            text = "The" 
        intervals [3]:
            xmin = 0.8 
            xmax = 1.2 
            text = "cat" 
        intervals [4]:
            xmin = 1.2 
            xmax = 1.6 
            text = "sat" 
        intervals [5]:
            xmin = 1.6 
            xmax = 1.9 
            text = "sp" 
        intervals [6]:
            xmin = 1.9 
            xmax = 2.1 
            text = "Ça" 
        intervals [7]:
            xmin = 2.1 
            xmax = 2.3 
            text = "   " 
        intervals [8]:
            xmin = 2.3 
            xmax = 2.5 
            text = "va" 
        intervals [9]:
            xmin = 2.5 
            xmax = 3 
            text = """bien?""" 
        intervals [10]:
            xmin = 3 
            xmax = 3.2 
            text = "{LG}" 
    item [2]:
        class = "IntervalTier" 
        name = "sentences" 
        xmin = 0 
        xmax = 3.2 
        intervals: size = 4 
        intervals [1]:
            xmin = 0 
            xmax = 0.5 
            text = "" 
        intervals [2]:
            xmin = 0.5 
            xmax = 1.6 
            text = "The cat sat" 
        intervals [3]:
            xmin = 1.6 
            xmax = 1.9 
            text = "" 
        intervals [4]:
            xmin = 1.9 
            xmax = 3.2 
            text = "Ça va ""bien?""" 
    item [3]:
        class = "TextTier" 
        name = "events" 
        xmin = 0 
        xmax = 3.2 
        points: size = 1 
        points [1]:
            number = 1 
            mark = "bell" 
'''

SHORT = '''File type = "ooTextFile"
Object class = "TextGrid"

0
3.2
<exists>
3
"IntervalTier"
"Words"
0
3.2
10
0
0.5
""
0.5
0.8
"The"
0.8
1.2
"cat"
1.2
1.6
"sat"
1.6
1.9
"sp"
1.9
2.1
"Ça"
2.1
2.3
"   "
2.3
2.5
"va"
2.5
3
"""bien?"""
3
3.2
"{LG}"
"IntervalTier"
"sentences"
0
3.2
4
0
0.5
""
0.5
1.6
"The cat sat"
1.6
1.9
""
1.9
3.2
"Ça va ""bien?"""
"TextTier"
"events"
0
3.2
1
1
"bell"
'''

TEXT = ("The", "cat", "sat", "Ça", "va", '"bien?"')
ONSET = [0.5, 0.8, 1.2, 1.9, 2.3, 2.5]
DURATION = [0.3, 0.4, 0.4, 0.2, 0.2, 0.5]


def dataset(tmp_path, events: str, files: dict[str, str | bytes]):
    """A BIDS-like folder: stimuli/ with ``files`` and one events.tsv; returns (events file, stimuli dir)."""
    stimuli = tmp_path / "stimuli"
    stimuli.mkdir(exist_ok=True)
    for name, content in files.items():
        path = stimuli / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    events_file = tmp_path / "sub-01_task-x_events.tsv"
    events_file.write_text(events, encoding="utf-8")
    return events_file, stimuli


def words_of(tmp_path, events: str, files: dict) -> Words:
    return stimuli_from_events(*dataset(tmp_path, events, files))["text"]


@pytest.mark.parametrize("content", [LONG, SHORT, LONG.encode("utf-16"), SHORT.encode("utf-16-be")],
                         ids=["long", "short", "long-utf16-bom", "short-utf16be"])
def test_textgrid_formats_give_the_same_words_shifted_by_the_event_onset(tmp_path, content):
    words = words_of(tmp_path, "onset\tduration\tstim_file\n10\t3.2\tstory.TextGrid\n", {"story.TextGrid": content})
    assert words.text == TEXT  # silences dropped, casing, punctuation and quotes kept
    np.testing.assert_allclose(words.onset, np.add(ONSET, 10))
    np.testing.assert_allclose(words.duration, DURATION)
    assert words.sentence == (0, 0, 0, 1, 1, 1)  # from the sentence tier, not the (absent) full stops


def test_long_and_short_textgrids_read_equal(tmp_path):
    (tmp_path / "long.TextGrid").write_text(LONG, encoding="utf-8")
    (tmp_path / "short.TextGrid").write_text(SHORT, encoding="utf-8")
    long, short = read_textgrid(tmp_path / "long.TextGrid"), read_textgrid(tmp_path / "short.TextGrid")
    assert long == short and long.onset.tolist() == ONSET


def test_textgrid_with_one_interval_tier_and_no_sentence_tier_uses_punctuation(tmp_path):
    grid = SHORT.replace('"Words"', '"ortho"').replace('"sentences"', '"phones"', 1)
    grid = grid.replace('"IntervalTier"\n"phones"', '"TextTier"\n"phones"').split('"TextTier"\n"phones"')[0]
    grid = grid.replace("<exists>\n3", "<exists>\n1").replace('"sat"', '"sat."')
    words = words_of(tmp_path, "onset\tduration\tstim_file\n0\t3.2\ta.TextGrid\n", {"a.TextGrid": grid})
    assert words.text == ("The", "cat", "sat.", "Ça", "va", '"bien?"') and words.sentence == (0, 0, 0, 1, 1, 1)


def test_tsv_transcript_durations_from_offset_and_sentences_from_a_column(tmp_path):
    transcript = ("Onset\tOffset\tWord\tsentence_id\n"
                  "0.0\t0.2\tIt\t7\n0.2\t0.5\twas\t7\n0.5\t0.9\tn/a\tn/a\n0.9\t1.0\t<sil>\t7\n"
                  "1.0\t1.4\tdark\tn/a\n1.4\t1.6\t<unk>\t8\n1.8\t2.0\tYes.\t9\n")
    words = words_of(tmp_path, "onset\tduration\tstim_file\n2\t2\tpart1.tsv\n", {"part1.tsv": transcript})
    assert words.text == ("It", "was", "dark", "<unk>", "Yes.")  # <unk> is a spoken word, kept
    np.testing.assert_allclose(words.onset, [2.0, 2.2, 3.0, 3.4, 3.8])
    np.testing.assert_allclose(words.duration, [0.2, 0.3, 0.4, 0.2, 0.2])
    assert words.sentence == (0, 0, 0, 1, 2)  # n/a continues the sentence before


def test_csv_transcript_with_quoted_commas_and_no_durations(tmp_path):
    (tmp_path / "t.csv").write_text('onset,token\n0.1,"Well,"\n0.5,I\n0.7,know.\n1.0,Go\n', encoding="utf-8")
    words = read_transcript_tsv(tmp_path / "t.csv")
    assert words.text == ("Well,", "I", "know.", "Go") and words.duration.tolist() == [0.0] * 4
    assert words.sentence == (0, 0, 0, 1)


@pytest.mark.parametrize("sibling", ["story.TextGrid", "story_words.tsv"])
def test_audio_stim_file_uses_the_transcript_beside_it(tmp_path, sibling):
    # In a TSV, a value wrapped in double quotes is quoted (BIDS, CSV): a quote inside is written "".
    rows = "".join(f"{o}\t{w}\n" for o, w in zip(ONSET, TEXT[:-1])) + '2.5\t"""bien?"""\n'
    content = LONG if sibling.endswith("TextGrid") else "onset\tword\n" + rows
    words = words_of(tmp_path, "onset\tduration\tstim_file\n4\t60\taudio/story.wav\n",
                     {"audio/story.wav": b"RIFF", f"audio/{sibling}": content})
    assert words.text == TEXT and np.allclose(words.onset, np.add(ONSET, 4))


def test_audio_without_a_transcript_gives_no_words(tmp_path):
    found = stimuli_from_events(*dataset(tmp_path, "onset\tduration\tstim_file\n0\t60\tstory.wav\n", {"story.wav": b"RIFF"}))
    assert "text" not in found


def test_several_transcripts_concatenate_in_onset_order_without_merging_sentences(tmp_path):
    files = {"p1.tsv": "onset\tword\n0\tOne\n0.5\ttwo\n", "p2.tsv": "onset\tword\n0\tthree\n0.5\tfour\n"}
    words = words_of(tmp_path, "onset\tduration\tstim_file\n40\t1\tp2.tsv\n5\t1\tp1.tsv\n", files)
    assert words.text == ("One", "two", "three", "four") and words.onset.tolist() == [5, 5.5, 40, 40.5]
    assert words.sentence == (0, 0, 1, 1)


def test_the_word_column_wins_over_transcripts(tmp_path):
    # The transcript is never read, so even a missing one is no error.
    events = "onset\tduration\tword\tstim_file\n0\t0.3\tHi\tn/a\n1\t10\tn/a\tmissing.TextGrid\n"
    words = words_of(tmp_path, events, {})
    assert words.text == ("Hi",) and words.onset.tolist() == [0]


def test_word_column_drops_silences_keeps_punctuation_and_numbers_sentences(tmp_path):
    events = ("onset\tduration\tword\n0\t0\t\"Hello,\n1\t0\tsp\n2\t0\tshe\n3\t0\tsaid.\"\n4\t0\t<SIL>\n"
              "5\t0\t“Go!”\n6\t0\tNow…\n7\t0\tok\n8\t0\t1\n")
    words = words_of(tmp_path, events, {})
    assert words.text == ('"Hello,', "she", 'said."', "“Go!”", "Now…", "ok", "1")
    assert words.sentence == (0, 0, 0, 1, 2, 3, 3)


def test_word_column_sentences_from_a_sentence_column(tmp_path):
    words = words_of(tmp_path, "onset\tduration\tword\tsentence\n0\t0\ta.\t1\n1\t0\tb\t1\n2\t0\tc\t2\n", {})
    assert words.sentence == (0, 0, 1)


def test_sentence_is_compared_like_other_fields():
    a = Words(onset=np.arange(2.0), duration=np.zeros(2), text=("a", "b"), sentence=(0, 0))
    assert a == Words(onset=np.arange(2.0), duration=np.zeros(2), text=("a", "b"), sentence=(0, 0), source="x")
    assert a != Words(onset=np.arange(2.0), duration=np.zeros(2), text=("a", "b"), sentence=(0, 1))
    assert a != Words(onset=np.arange(2.0) + 1, duration=np.zeros(2), text=("a", "b"), sentence=(0, 0))
    assert len(a) == 2
    with pytest.raises(ValueError):
        Words(onset=np.arange(2.0), duration=np.zeros(2), text=("a", "b"), sentence=(0,))


EMPTY_GRID = SHORT.split('"IntervalTier"\n"sentences"')[0].replace("<exists>\n3", "<exists>\n1")
for label in ("The", "cat", "sat", "Ça", "va", '"""bien?"""'):
    EMPTY_GRID = EMPTY_GRID.replace(f'"{label}"' if not label.startswith('"') else label, '"sil"', 1)


@pytest.mark.parametrize("stim_file,content,expected", [
    ("story.TextGrid", None, "does not exist"),
    ("story.TextGrid", EMPTY_GRID, "no words"),
    ("story.tsv", "onset\tword\n", "no words"),
    ("story.TextGrid", LONG[: len(LONG) // 2], "cannot be parsed"),
    ("story.TextGrid", "just some notes\n", "cannot be parsed"),
    ("story.TextGrid", b"ooBinaryFile\x08TextGrid\xff\xfe\x00\x01", "cannot be parsed"),
    ("story.tsv", "onset\tduration\n0\t1\n", "no word column"),
    ("story.tsv", "time\tword\n0\ta\n", "no onset column"),
    ("story.tsv", "onset\tword\n0\ta\nn/a\tb\n", "line 3"),
    ("story.tsv", "onset\tword\n0\ta\nsoon\tb\n", "line 3"),
    ("story.tsv", "onset\tword\n-0.5\ta\n", "negative"),
    ("story.tsv", "onset\toffset\tword\n1\t0.5\ta\n", "ends before it starts"),
])
def test_transcript_errors_name_the_file(tmp_path, stim_file, content, expected):
    files = {} if content is None else {stim_file: content}
    events_file, stimuli = dataset(tmp_path, f"onset\tduration\tstim_file\n0\t10\t{stim_file}\n", files)
    with pytest.raises(UserError) as err:
        stimuli_from_events(events_file, stimuli)
    message = err.value.message
    assert expected in message, message
    named = events_file if content is None else (stimuli / stim_file).resolve()
    assert str(named) in message and stim_file in message


def test_a_non_word_tier_is_used_when_it_is_the_only_one_besides_sentences(tmp_path):
    (tmp_path / "g.TextGrid").write_text(LONG.replace('"Words"', '"ortho"'), encoding="utf-8")
    assert read_textgrid(tmp_path / "g.TextGrid").text == TEXT


def test_textgrid_with_two_candidate_tiers_lists_them(tmp_path):
    grid = LONG.replace('"Words"', '"ortho"').replace('"sentences"', '"phones"')
    (tmp_path / "g.TextGrid").write_text(grid, encoding="utf-8")
    with pytest.raises(UserError) as err:
        read_textgrid(tmp_path / "g.TextGrid")
    assert "'ortho' (IntervalTier), 'phones' (IntervalTier), 'events' (TextTier)" in err.value.message


def test_silence_rows_may_lack_an_onset(tmp_path):
    (tmp_path / "t.tsv").write_text("onset\tword\nn/a\tsp\n0.3\tword\n", encoding="utf-8")
    assert read_transcript_tsv(tmp_path / "t.tsv").text == ("word",)
