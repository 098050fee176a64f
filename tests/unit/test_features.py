"""The on-disk feature cache: a second extraction recomputes nothing; any change to what matters recomputes."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

from bids_encoding import features
from bids_encoding.plugin_api import FeatureExtractor, FeatureSet, Option

from ..conftest import registry_with


class Counting(FeatureExtractor):
    """Word lengths times the number in a text file; counts its calls in a list, so tests see every extraction."""

    name = "counting"
    modality = "text"
    options = {"scale": Option(1.0, "multiplier"), "path": Option("", "a file holding one number")}
    calls: list = []

    def extract(self, stimuli):
        Counting.calls.append(len(stimuli))
        factor = float(Path(self.path).read_text()) if self.path else 1.0
        lengths = np.array([len(w) for w in stimuli.text], float)[:, None]
        return FeatureSet.single(stimuli, lengths * self.scale * factor, ["length"], n_words=len(stimuli))


@pytest.fixture
def registry():
    Counting.calls.clear()
    with registry_with(Counting) as found:
        yield found


def write_events(path: Path, words: list[str]) -> Path:
    rows = "".join(f"{i * 0.5:.1f}\t0.4\t{w}\n" for i, w in enumerate(words))
    path.write_text("onset\tduration\tword\n" + rows)
    return path


def test_a_second_extraction_comes_from_the_cache(registry, tmp_path, caplog):
    events = write_events(tmp_path / "sub-01_task-x_events.tsv", ["the", "forest", "was", "dark"])
    cache = tmp_path / "cache"
    first, provenance = features.extract("counting", events, None, registry, cache_dir=cache)
    with caplog.at_level(logging.INFO, logger="bids_encoding"):
        second, again = features.extract("counting", events, None, registry, cache_dir=cache)
    assert Counting.calls == [4]
    assert "from the cache" in caplog.text
    np.testing.assert_array_equal(first.spaces[""], second.spaces[""])
    assert again == provenance and provenance["Details"] == {"n_words": 4}
    assert len(list(cache.rglob("*.npz"))) == 1 and not list(cache.rglob("*.tmp*"))


def test_the_key_is_the_content_not_the_events_path(registry, tmp_path):
    cache = tmp_path / "cache"
    a = write_events(tmp_path / "a_events.tsv", ["the", "forest"])
    b = write_events(tmp_path / "b_events.tsv", ["the", "forest"])
    features.extract("counting", a, None, registry, cache_dir=cache)
    _, provenance = features.extract("counting", b, None, registry, cache_dir=cache)
    assert Counting.calls == [2] and provenance["Events"] == str(b)


def test_changed_words_options_or_option_files_are_recomputed(registry, tmp_path):
    cache = tmp_path / "cache"
    events = write_events(tmp_path / "e_events.tsv", ["the", "forest"])
    number = tmp_path / "factor.txt"
    number.write_text("2")
    features.extract(f"counting:path={number}", events, None, registry, cache_dir=cache)
    features.extract(f"counting:path={number};scale=3", events, None, registry, cache_dir=cache)
    number.write_text("5")  # same path, new content: must not reuse the old features
    os.utime(number, ns=(number.stat().st_atime_ns, number.stat().st_mtime_ns + 10**9))
    found, _ = features.extract(f"counting:path={number}", events, None, registry, cache_dir=cache)
    write_events(events, ["the", "forests"])
    features.extract(f"counting:path={number}", events, None, registry, cache_dir=cache)
    assert Counting.calls == [2, 2, 2, 2]
    assert found.spaces[""][1, 0] == 30.0


def test_a_damaged_entry_is_recomputed_and_an_unwritable_cache_is_only_a_warning(registry, tmp_path, caplog):
    events = write_events(tmp_path / "e_events.tsv", ["the", "forest"])
    cache = tmp_path / "cache"
    features.extract("counting", events, None, registry, cache_dir=cache)
    entry = next(cache.rglob("*.npz"))
    entry.write_bytes(b"not an npz file")
    with caplog.at_level(logging.WARNING, logger="bids_encoding"):
        found, _ = features.extract("counting", events, None, registry, cache_dir=cache)
    assert Counting.calls == [2, 2] and "unreadable cache entry" in caplog.text
    assert found.spaces[""][:, 0].tolist() == [3.0, 6.0]

    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder should be")
    found, _ = features.extract("counting", events, None, registry, cache_dir=blocked)
    assert found.spaces[""][:, 0].tolist() == [3.0, 6.0] and "could not write the feature cache" in caplog.text


def test_parallel_extractions_of_one_entry_compute_it_once(registry, tmp_path, monkeypatch):
    """Threads stand in for jobs: flock locks belong to each open() of the lock file, so they exclude each other."""
    import threading
    import time

    original = Counting.extract
    monkeypatch.setattr(Counting, "extract", lambda self, stimuli: time.sleep(0.5) or original(self, stimuli))
    events = write_events(tmp_path / "e_events.tsv", ["the", "forest"])
    results = []
    jobs = [threading.Thread(target=lambda: results.append(
        features.extract("counting", events, None, registry, cache_dir=tmp_path / "cache")[0])) for _ in range(4)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join()
    assert Counting.calls == [2] and len(results) == 4
    assert all(r.spaces[""][:, 0].tolist() == [3.0, 6.0] for r in results)
    assert [p.suffix for p in (tmp_path / "cache").rglob("*") if p.is_file()] == [".npz"]  # no lock left behind


def test_a_killed_writer_s_temporary_file_is_removed_when_the_entry_is_made(registry, tmp_path):
    events = write_events(tmp_path / "e_events.tsv", ["the", "forest"])
    features.extract("counting", events, None, registry, cache_dir=tmp_path / "cache")
    entry = next((tmp_path / "cache").rglob("*.npz"))
    entry.unlink()  # the writer was killed before renaming its temporary file into place
    leftover = entry.with_name(f"{entry.stem}.x1y2z3.tmp.npz")
    leftover.write_bytes(b"half an entry")
    other_key = entry.with_name("0" * 64 + ".x1y2z3.tmp.npz")  # another entry's writer may be alive: kept
    other_key.write_bytes(b"being written")
    features.extract("counting", events, None, registry, cache_dir=tmp_path / "cache")
    assert not leftover.exists() and other_key.exists() and entry.exists() and Counting.calls == [2, 2]


def test_image_stimuli_are_keyed_by_their_bytes(tmp_path):
    from bids_encoding.stimuli import Images

    first = tmp_path / "a.png"
    first.write_bytes(b"one")
    images = Images(onset=np.zeros(1), duration=np.ones(1), path=(first,))
    before = features.stimulus_digest(images)
    first.write_bytes(b"two")
    assert features.stimulus_digest(images) != before
