"""Stimulus sequences read from a run's events.tsv.

A run's events become up to five typed sequences, one per modality that a
feature extractor can consume:

* :class:`Words`  (modality ``text``)   - events with a ``word`` or ``text`` value, or the words
  of transcripts that events point to through ``stim_file``;
* :class:`Images` (modality ``image``)  - events whose ``stim_file`` is an image under ``stimuli/``;
* :class:`Audio`  (modality ``audio``)  - events whose ``stim_file`` is a sound (``.wav``, ``.flac``,
  ``.ogg``, ``.mp3``), played from the event's onset for its duration (the whole file when the
  duration is 0);
* :class:`Video`  (modality ``video``)  - events whose ``stim_file`` is a movie (``.mp4``, ``.mkv``,
  ``.avi``, ``.mov``), likewise;
* :class:`Trials` (modality ``trials``) - events with a ``trial_type`` value.

Media are read at their own rate when an extractor asks (:mod:`.media`); :func:`check_media` reads only
their headers, to check that each file is readable and lasts as long as its event (planning calls it for
the media an extractor will read, so that a dataset whose sound files are not used is never held up by them).

Onsets and durations are in seconds from the start of the run, as in BIDS.

Transcripts are how naturalistic datasets time words: a ``stim_file`` ending in
``.TextGrid`` (Praat), ``.tsv`` or ``.csv`` is one, and an audio ``stim_file``
(``.wav``, ``.mp3``, ``.flac``, ``.ogg``) uses the transcript beside it with the same
stem (``STEM.TextGrid``, ``STEM.tsv`` or ``STEM_words.tsv``, first found). A
transcript's onsets count from the start of its stimulus, so each word lands at
the event's onset plus its own. When an events file has both a word column with
words in it and transcripts, the word column wins and transcripts are not read.

Words keep their casing and punctuation as written (language models need them;
extractors normalise as they need); silence markers (:data:`SILENCE_MARKERS`) and
empty labels are dropped everywhere. ``Words.sentence`` numbers sentences from a
sentence column or tier when the data mark them, else from sentence-final
punctuation.
"""

from __future__ import annotations

import codecs
import csv
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from . import media
from ..errors import UserError
from .media import AUDIO_SUFFIXES, VIDEO_SUFFIXES

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
TRANSCRIPT_SUFFIXES = (".textgrid", ".tsv", ".csv")
MEDIA_TOLERANCE = 0.05  # s: a media file may be this much shorter than its event (rounding of durations)
WORD_COLUMNS = ("word", "text")
TRANSCRIPT_WORD_COLUMNS = ("word", "text", "token")
SENTENCE_COLUMNS = ("sentence", "sentence_id", "sentence_index")
WORD_TIERS = ("words", "word")
SENTENCE_TIERS = ("sentences", "sentence", "phrases")

#: Labels (compared lower-cased) that forced aligners and annotators write for
#: silence, pauses, sentence delimiters and non-speech noise: ``sp``/``sil``
#: (HTK, P2FA, MFA), ``<sil>``, ``<s>``/``</s>`` (ASR), ``{sl}``, ``{lg}`` laughter,
#: ``{ns}`` noise, ``{br}`` breath, ``{cg}`` cough, ``{ls}`` lip smack (CMU/P2FA),
#: ``<p:>`` (WebMAUS pause) and ``#``. ``<unk>`` is kept on purpose: aligners write it
#: for a word that was spoken but is not in their dictionary, so it is a word event.
SILENCE_MARKERS = frozenset({"sp", "sil", "sils", "<sil>", "{sl}", "{sil}", "<s>", "</s>", "<p:>", "<p>", "#",
                             "{lg}", "{ns}", "{br}", "{cg}", "{ls}"})

# Sentence-final punctuation, possibly followed by closing quotes or brackets: 'end.' 'why?"' 'so!)' 'and…'
_SENTENCE_END = re.compile(r"[.?!…][\"'”’»)\]]*$")


@dataclass(frozen=True, eq=False)
class _Events:
    onset: np.ndarray
    duration: np.ndarray
    source: str = field(default="", compare=False)

    def __len__(self) -> int:
        return len(self.onset)

    def __eq__(self, other: object) -> bool:
        """Field by field, arrays by value (the generated ``__eq__`` cannot compare arrays)."""
        if type(other) is not type(self):
            return NotImplemented
        return all(_same(getattr(self, f.name), getattr(other, f.name)) for f in fields(self) if f.compare)


def _same(a, b) -> bool:
    return bool(np.array_equal(a, b)) if isinstance(a, np.ndarray) or isinstance(b, np.ndarray) else a == b


@dataclass(frozen=True, eq=False)
class Words(_Events):
    """Words heard or read, one event each.

    ``sentence`` is each word's sentence, counted from 0 and never decreasing; empty
    when unknown (sequences built by hand). :func:`stimuli_from_events` always fills it.
    """

    text: tuple[str, ...] = ()
    sentence: tuple[int, ...] = ()
    modality = "text"

    def __post_init__(self) -> None:
        if self.sentence and len(self.sentence) != len(self.text):
            raise ValueError(f"Words has {len(self.text)} words but {len(self.sentence)} sentence indices")


@dataclass(frozen=True, eq=False)
class Images(_Events):
    """Images shown, one event each; ``path`` is absolute."""

    path: tuple[Path, ...] = ()
    modality = "image"


@dataclass(frozen=True, eq=False)
class _Media(_Events):
    """Media files played, one event each; ``path`` is absolute. A clip starts at its event's onset and lasts its
    ``duration`` seconds (the file's length when the events give 0)."""

    path: tuple[Path, ...] = ()

    def clip_duration(self, index: int) -> float | None:
        """How many seconds of the file event ``index`` plays (None: all of it)."""
        return float(self.duration[index]) if self.duration[index] > 0 else None


@dataclass(frozen=True, eq=False)
class Audio(_Media):
    """Sounds heard. :meth:`read` gives an event's samples at the file's rate, or at the rate a model needs."""

    modality = "audio"

    def read(self, index: int, rate: float | None = None) -> tuple[np.ndarray, float]:
        """Event ``index``'s clip as mono float32 samples in [-1, 1] and their rate (``rate`` resamples them)."""
        samples, native = media.read_audio(self.path[index], self.clip_duration(index))
        if rate is None:
            return samples, native
        return media.resample_audio(samples, native, rate), float(rate)


@dataclass(frozen=True, eq=False)
class Video(_Media):
    """Movies watched. :meth:`frames` decodes an event's frames on demand, one at a time."""

    modality = "video"

    def frames(self, index: int, fps: float, size: tuple[int, int] | None = None) -> Iterator[tuple[float, np.ndarray]]:
        """Event ``index``'s frames at ``fps`` frames per second: ``(seconds from the event's onset, height x width x
        3 uint8 RGB)``; ``size`` (width, height) rescales them while decoding."""
        return media.iter_frames(self.path[index], fps, self.clip_duration(index), size)

    def info(self, index: int) -> media.MediaInfo:
        """Frame rate, frame size and duration of event ``index``'s file."""
        return media.video_info(self.path[index])


@dataclass(frozen=True, eq=False)
class Trials(_Events):
    """Trials labelled by their ``trial_type``."""

    trial_type: tuple[str, ...] = ()
    modality = "trials"


Stimuli = Words | Images | Audio | Video | Trials
MODALITIES = {cls.modality: cls for cls in (Words, Images, Audio, Video, Trials)}
FRAME_SOURCE = "video"
"""Image extractors also read movies, frame by frame (the host samples the frames: ``fps``)."""


def stimuli_for(modality: str, found: dict[str, Stimuli] | tuple[str, ...]) -> str | None:
    """Which of the stimulus modalities ``found`` in a run an extractor of ``modality`` reads: its own, else a movie's
    frames for an image extractor; None when it can read none of them."""
    if modality in found:
        return modality
    if modality == "image" and FRAME_SOURCE in found:
        return FRAME_SOURCE
    return None


# --------------------------------------------------------------------------- events.tsv


def _read_table(path: Path, sep: str, dtype: dict | None = None) -> pd.DataFrame:
    """Read a BIDS-style table, keeping quote characters that are punctuation, not quoting.

    BIDS allows double quotes around values that hold a tab, so quoting is tried first;
    but in a word column a quote is usually speech (``"Hello,`` ... ``said."``), which a
    CSV parser would treat as one field across lines. When that happens (a value spans
    lines, or a quote never closes) the table is read again with quotes as plain text.
    """
    options = dict(sep=sep, na_values=["n/a"], keep_default_na=False, dtype=dtype, encoding="utf-8-sig")
    try:
        table = pd.read_csv(path, **options)
    except pd.errors.ParserError:
        return pd.read_csv(path, quoting=csv.QUOTE_NONE, **options)
    text = table.select_dtypes(exclude="number")
    if any(text[c].astype(str).str.contains("\n", regex=False).any() for c in text.columns):
        return pd.read_csv(path, quoting=csv.QUOTE_NONE, **options)
    return table


def read_events(events_file: str | Path) -> pd.DataFrame:
    """Read and check a BIDS events.tsv: ``onset`` and ``duration`` must be finite numbers."""
    events_file = Path(events_file)
    if not events_file.exists():
        raise UserError(
            "the events file does not exist",
            path=events_file,
            fix="Add the run's _events.tsv next to its data, as the BIDS specification requires",
        )
    try:
        events = _read_table(events_file, "\t", dtype={c: str for c in (*WORD_COLUMNS, "stim_file")})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(
            f"the events file cannot be read as a tab-separated table ({exc})",
            path=events_file,
            fix="Save it as UTF-8 text with tab-separated columns and a header row",
        ) from None
    missing = [c for c in ("onset", "duration") if c not in events.columns]
    if missing:
        raise UserError(
            f"the events file has no {' or '.join(missing)} column (it has: {', '.join(map(str, events.columns)) or 'none'})",
            path=events_file,
            fix="BIDS events files need 'onset' and 'duration' columns in seconds; add them",
        )
    for column in ("onset", "duration"):
        values = pd.to_numeric(events[column], errors="coerce")
        bad = ~np.isfinite(values.to_numpy(dtype=float))
        if bad.any():
            row = int(np.flatnonzero(bad)[0]) + 2  # header is line 1
            raise UserError(
                f"column '{column}' holds a value that is not a finite number on line {row} "
                f"({events[column].iloc[row - 2]!r})",
                path=events_file,
                fix=f"Give every event a numeric {column} in seconds",
            )
        events[column] = values.astype(float)
    if (events["onset"] < 0).any() or (events["duration"] < 0).any():
        raise UserError(
            "some events have a negative onset or duration",
            path=events_file,
            fix="Onsets and durations are seconds from the start of the run and cannot be negative",
        )
    return events.sort_values("onset", kind="stable").reset_index(drop=True)


def _present(column: pd.Series) -> np.ndarray:
    return column.notna().to_numpy() & (column.astype(str).str.strip() != "").to_numpy()


def stimuli_from_events(events_file: str | Path, stimuli_dir: str | Path | None) -> dict[str, Stimuli]:
    """Split a run's events into the stimulus sequences they hold, keyed by modality."""
    events_file = Path(events_file)
    events = read_events(events_file)
    source = str(events_file)
    found: dict[str, Stimuli] = {}

    def times(rows: np.ndarray) -> dict:
        return dict(onset=events["onset"].to_numpy()[rows], duration=events["duration"].to_numpy()[rows], source=source)

    words = _words_from_column(events, source)
    if words is None:
        words = _words_from_transcripts(events, stimuli_dir, events_file)
    if words is not None:
        found["text"] = words

    if "stim_file" in events.columns:
        rows = _present(events["stim_file"])
        names = events["stim_file"][rows].astype(str)
        for cls, suffixes in ((Images, IMAGE_SUFFIXES), (Audio, AUDIO_SUFFIXES), (Video, VIDEO_SUFFIXES)):
            kind_rows = np.flatnonzero(rows)[names.str.lower().str.endswith(suffixes).to_numpy()]
            if len(kind_rows):
                # images must exist now; sounds and movies when an extractor reads them (check_media), so that a
                # story's words stay usable without its sound track (a copy of the events elsewhere, a placeholder)
                find = resolve_stim_file if cls is Images else _media_path
                paths = tuple(find(name, stimuli_dir, events_file) for name in events["stim_file"][kind_rows])
                mask = np.zeros(len(events), bool)
                mask[kind_rows] = True
                found[cls.modality] = cls(**times(mask), path=paths)

    if "trial_type" in events.columns:
        rows = _present(events["trial_type"])
        if rows.any():
            found["trials"] = Trials(**times(rows), trial_type=tuple(events["trial_type"][rows].astype(str)))
    return found


def check_media(clips: Stimuli, events_file: Path) -> None:
    """Every media file of ``clips`` (Audio or Video; other stimuli pass) readable and at least as long as its event,
    from the headers only: planning checks the media that an extractor will read, before anything runs."""
    if not isinstance(clips, _Media):
        return
    info = media.audio_info if isinstance(clips, Audio) else media.video_info
    for onset, duration, path in zip(clips.onset, clips.duration, clips.path):
        if not path.is_file():
            raise UserError(f"the stim_file {path.name} that the event at {onset:g} s of {events_file.name} plays does "
                            f"not exist ({path})", path=events_file,
                            fix="Put the file under the dataset's stimuli/ folder, or correct the stim_file column")
        length = info(path).duration
        if duration > length + MEDIA_TOLERANCE:
            raise UserError(f"the stim_file {path.name} lasts {length:.2f} s, but the event at {onset:g} s of "
                            f"{events_file.name} plays it for {duration:g} s", path=path,
                            fix="Give the event the file's duration (or 0 to play the whole file), or replace the file "
                                "with its complete version")


def _media_path(name: str, stimuli_dir: str | Path | None, events_file: Path) -> Path:
    """Where a media ``stim_file`` should be (absolute); whether it is there is :func:`check_media`'s question."""
    return Path(stimuli_dir if stimuli_dir is not None else Path(events_file).parent / "stimuli", name).resolve()


def resolve_stim_file(name: str, stimuli_dir: str | Path | None, events_file: Path) -> Path:
    """Find a ``stim_file`` value under the dataset's ``stimuli/`` folder."""
    if stimuli_dir is None or not Path(stimuli_dir, name).is_file():
        where = Path(stimuli_dir, name) if stimuli_dir else Path("stimuli", name)
        raise UserError(
            f"stim_file '{name}' is listed but {where} does not exist",
            path=events_file,
            fix="Put the stimulus file under the dataset's stimuli/ folder, or correct the stim_file column",
        )
    return Path(stimuli_dir, name).resolve()


# --------------------------------------------------------------------------- words: shared helpers


def is_silence(label: object) -> bool:
    """True for a missing or blank label and for the silence markers in :data:`SILENCE_MARKERS`."""
    if label is None or (not isinstance(label, str) and pd.isna(label)):
        return True
    label = str(label).strip()
    return not label or label.lower() in SILENCE_MARKERS


def sentences_from_punctuation(text: tuple[str, ...] | list[str]) -> tuple[int, ...]:
    """Sentence index per word when nothing marks sentences: a word ending in ``. ? ! …``
    (quotes or brackets may follow) closes its sentence. Abbreviations (``Mr.``) close one too."""
    ends = [bool(_SENTENCE_END.search(word)) for word in text]
    return tuple(int(n) for n in np.concatenate([[0], np.cumsum(ends)[:-1]])) if ends else ()


def _number_runs(keys) -> tuple[int, ...]:
    """0, 0, 1, ... : a new sentence wherever the key changes from the word before (any labels work)."""
    keys = list(keys)
    changes = [i > 0 and keys[i] != keys[i - 1] for i in range(len(keys))]
    return tuple(int(n) for n in np.cumsum(changes))


def _sentence_keys(column: pd.Series) -> list[str]:
    """A sentence column's labels, an n/a continuing the sentence before it."""
    return column.ffill().fillna("").astype(str).str.strip().tolist()


def _words_from_column(events: pd.DataFrame, source: str) -> Words | None:
    column = next((c for c in WORD_COLUMNS if c in events.columns), None)
    if column is None:
        return None
    rows = np.array([not is_silence(v) for v in events[column]], bool)
    if not rows.any():
        return None
    text = tuple(events[column][rows].astype(str).str.strip())
    marked = next((c for c in SENTENCE_COLUMNS if c in events.columns), None)
    sentence = _number_runs(np.array(_sentence_keys(events[marked]), object)[rows]) if marked \
        else sentences_from_punctuation(text)
    return Words(onset=events["onset"].to_numpy()[rows], duration=events["duration"].to_numpy()[rows],
                 source=source, text=text, sentence=sentence)


def _words_from_transcripts(events: pd.DataFrame, stimuli_dir: str | Path | None, events_file: Path) -> Words | None:
    """Each transcript event's words, shifted by the event's onset, in one sequence."""
    if "stim_file" not in events.columns:
        return None
    parts, read = [], {}
    for onset, name in zip(events["onset"], events["stim_file"]):
        path = None if is_silence(name) else _transcript_path(str(name).strip(), stimuli_dir, events_file)
        if path is not None:
            if path not in read:
                try:
                    read[path] = read_transcript(path)
                except UserError as exc:
                    raise UserError(f"{exc.problem}; {events_file} lists it as stim_file", path=exc.path,
                                    fix=exc.fix) from None
            parts.append((onset, read[path]))
    return _concatenate(parts, str(events_file)) if parts else None


def _transcript_path(name: str, stimuli_dir: str | Path | None, events_file: Path) -> Path | None:
    """The transcript a ``stim_file`` names, or the one beside the audio it names; None for other files."""
    suffix = Path(name).suffix.lower()
    if suffix in TRANSCRIPT_SUFFIXES:
        return resolve_stim_file(name, stimuli_dir, events_file)
    if suffix in AUDIO_SUFFIXES and stimuli_dir is not None:
        audio = Path(stimuli_dir, name)
        stem = audio.name[: -len(suffix)]
        for candidate in (f"{stem}.TextGrid", f"{stem}.textgrid", f"{stem}.tsv", f"{stem}_words.tsv"):
            if (audio.parent / candidate).is_file():
                return (audio.parent / candidate).resolve()
    return None


def _concatenate(parts: list[tuple[float, Words]], source: str) -> Words:
    """Words of several transcripts at their event onsets, in onset order; sentences never merge across parts."""
    onset = np.concatenate([start + words.onset for start, words in parts])
    order = np.argsort(onset, kind="stable")
    first = np.cumsum([0] + [max(words.sentence, default=-1) + 1 for _, words in parts])
    sentence = np.concatenate([np.asarray(words.sentence, int) + n for (_, words), n in zip(parts, first)])
    text = [word for _, words in parts for word in words.text]
    return Words(onset=onset[order], duration=np.concatenate([w.duration for _, w in parts])[order], source=source,
                 text=tuple(text[i] for i in order), sentence=_number_runs(sentence[order]))


# --------------------------------------------------------------------------- transcripts


def read_transcript(path: str | Path) -> Words:
    """A transcript's words, onsets from the start of its stimulus; the format follows the file name."""
    path = Path(path)
    return read_textgrid(path) if path.suffix.lower() == ".textgrid" else read_transcript_tsv(path)


def _transcript_words(path: Path, onset: np.ndarray, duration: np.ndarray, labels, sentence_keys=None) -> Words:
    """Drop silences, check times, sort by onset; sentences from the keys when marked, else punctuation."""
    keep = np.array([not is_silence(label) for label in labels], bool)
    if not keep.any():
        raise UserError("the transcript has no words once silences and empty labels are dropped", path=path,
                        fix="Point stim_file at the transcript of the stimulus, with one word per row or interval")
    if (onset[keep] < 0).any() or (duration[keep] < 0).any():
        raise UserError("the transcript has a negative onset or a word that ends before it starts", path=path,
                        fix="Onsets count seconds from the start of the stimulus; correct the times")
    order = np.argsort(onset[keep], kind="stable")
    text = tuple(str(labels[i]).strip() for i in np.flatnonzero(keep)[order])
    if sentence_keys is None:
        sentence = sentences_from_punctuation(text)
    else:
        sentence = _number_runs(np.asarray(sentence_keys, object)[keep][order])
    return Words(onset=onset[keep][order], duration=duration[keep][order], source=str(path), text=text, sentence=sentence)


def read_transcript_tsv(path: str | Path) -> Words:
    """A TSV (CSV for ``.csv``) transcript: ``onset`` and ``word`` (or ``text``/``token``) columns.

    ``duration`` comes from a ``duration`` column, else ``offset``/``end`` minus onset, else 0;
    a ``sentence``/``sentence_id``/``sentence_index`` column marks sentences (any labels, a
    new sentence where the value changes). Column names are matched ignoring case. As in BIDS,
    a value wrapped in double quotes is quoted: write a quoted word as CSV does, its quotes doubled.
    """
    path = Path(path)
    try:
        table = _read_table(path, "," if path.suffix.lower() == ".csv" else "\t", dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"the transcript cannot be read as a table ({exc})", path=path,
                        fix="Save it as UTF-8 text, tab-separated (comma for .csv), with a header row") from None
    columns = {str(c).strip().lower(): c for c in table.columns}
    onset_col = next((columns[c] for c in ("onset", "start") if c in columns), None)
    word_col = next((columns[c] for c in TRANSCRIPT_WORD_COLUMNS if c in columns), None)
    if onset_col is None or word_col is None:
        raise UserError(
            f"the transcript has no {'onset' if onset_col is None else 'word'} column "
            f"(it has: {', '.join(map(str, table.columns)) or 'none'})", path=path,
            fix="Give the transcript a header with 'onset' (seconds from the start of the stimulus) and 'word' columns")
    labels = table[word_col].tolist()
    onset = _seconds(table[onset_col], path, "onset", required=np.array([not is_silence(w) for w in labels], bool))
    if "duration" in columns:
        duration = _seconds(table[columns["duration"]], path, "duration")
    elif end_col := next((columns[c] for c in ("offset", "end") if c in columns), None):
        duration = _seconds(table[end_col], path, "offset") - onset
    else:
        duration = np.zeros(len(table))
    marked = next((columns[c] for c in SENTENCE_COLUMNS if c in columns), None)
    keys = _sentence_keys(table[marked]) if marked else None
    return _transcript_words(path, onset, np.nan_to_num(duration), labels, keys)


def _seconds(column: pd.Series, path: Path, name: str, required: bool | np.ndarray = False) -> np.ndarray:
    """Numbers of a time column; n/a is allowed only in rows not ``required`` (silences), text never."""
    values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values) & (column.notna().to_numpy() | required)
    if bad.any():
        line = int(np.flatnonzero(bad)[0]) + 2  # header is line 1
        raise UserError(f"line {line} has no numeric {name} ({column.iloc[line - 2]!r})", path=path,
                        fix=f"Write every word's {name} as seconds from the start of the stimulus")
    return values


# --------------------------------------------------------------------------- Praat TextGrid

# Praat reads a text TextGrid as a stream of values: strings in double quotes ("" is a quote),
# numbers and <exists>/<absent> flags. The long format labels them (xmin = 0) and numbers items
# in brackets ([1]); the short format is the same values without labels. So one tokeniser
# that skips labels, [indices] and ! comments reads both.
_TEXTGRID_TOKEN = re.compile(
    r'"((?:[^"]|"")*)"'                                   # string
    r"|<(exists|absent)>"                                 # flag
    r"|([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)"   # number
    r"|\[[^\]\n]*\]|![^\n]*|[^\s\"<\[!\d.+-]+|\S"          # skipped: [index], ! comment, labels
)


class _Malformed(Exception):
    pass


def _textgrid_values(text: str):
    for match in _TEXTGRID_TOKEN.finditer(text):
        string, flag, number = match.groups()
        if string is not None:
            yield string.replace('""', '"')
        elif flag is not None:
            yield flag == "exists"
        elif number is not None:
            yield float(number)


def _parse_textgrid(text: str) -> list[tuple[str, str, list[tuple[float, float, str]]]]:
    """(tier class, tier name, [(start, end, label), ...]) per tier; points have start == end."""
    values = _textgrid_values(text)

    def take(kind: type, what: str):
        value = next(values, None)
        if type(value) is not kind:
            raise _Malformed(f"expected {what}, found {'the end of the file' if value is None else repr(value)}")
        return value

    if not take(str, 'File type = "ooTextFile"').startswith("ooTextFile") or take(str, "an object class") != "TextGrid":
        raise _Malformed('it does not start with File type = "ooTextFile" and Object class = "TextGrid"')
    take(float, "xmin"), take(float, "xmax")
    if not take(bool, "<exists> or <absent>"):
        return []
    tiers = []
    for _ in range(int(take(float, "the number of tiers"))):
        kind, name = take(str, "a tier class"), take(str, "a tier name")
        take(float, "the tier's xmin"), take(float, "the tier's xmax")
        count = int(take(float, "the number of intervals or points"))
        if kind == "IntervalTier":
            items = [(take(float, "xmin"), take(float, "xmax"), take(str, "a text")) for _ in range(count)]
        elif kind == "TextTier":
            items = [(t, t, take(str, "a mark")) for t in (take(float, "a point's time") for _ in range(count))]
        else:
            raise _Malformed(f"unknown tier class {kind!r}")
        tiers.append((kind, name, items))
    return tiers


def _decode(raw: bytes) -> str:
    """Praat writes ASCII/UTF-8, or UTF-16 (with a byte-order mark, normally) when a label needs it."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return raw.decode("utf-16")
    if len(raw) > 1 and raw[0] == 0:
        return raw.decode("utf-16-be")
    if len(raw) > 1 and raw[1] == 0:
        return raw.decode("utf-16-le")
    return raw.decode("utf-8-sig")


def read_textgrid(path: str | Path) -> Words:
    """A Praat TextGrid (long or short text format, UTF-8 or UTF-16) transcript.

    Words come from the IntervalTier named ``words``/``word`` (any case), else from the only
    IntervalTier that is not a sentence tier; a ``sentences``/``sentence``/``phrases`` tier, when
    present, numbers sentences (a word belongs to the last sentence interval starting before
    its midpoint).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw.startswith(b"ooBinaryFile"):
            raise _Malformed("it is a binary Praat file")
        tiers = _parse_textgrid(_decode(raw))
    except (UnicodeDecodeError, _Malformed) as exc:
        raise UserError(f"the file cannot be parsed as a Praat TextGrid ({exc})", path=path,
                        fix="Save it from Praat as a text file (Save as text file or short text file), not binary") from None
    intervals = {name.strip().lower(): items for kind, name, items in tiers if kind == "IntervalTier"}
    words = next((intervals[n] for n in WORD_TIERS if n in intervals), None)
    candidates = [items for name, items in intervals.items() if name not in SENTENCE_TIERS]
    if words is None and len(candidates) == 1:
        words = candidates[0]
    if words is None:
        names = ", ".join(f"{name!r} ({kind})" for kind, name, _ in tiers) or "none"
        raise UserError(f"the TextGrid has no IntervalTier named 'words' and not exactly one other to use (tiers: {names})",
                        path=path, fix="Rename the word tier to 'words', or remove the tiers that are not words")
    start, end = (np.array([item[i] for item in words], float) for i in (0, 1))
    labels = [label for _, _, label in words]
    sentences = next((intervals[n] for n in SENTENCE_TIERS if n in intervals), None)
    keys = None
    if sentences is not None:
        starts = np.array([s for s, _, label in sentences if not is_silence(label)], float)
        keys = np.searchsorted(starts, (start + end) / 2, side="right")
    return _transcript_words(path, start, end - start, labels, keys)
