"""Progress of long steps: a few plain log lines when stderr is not a terminal, a bar when it is."""

from __future__ import annotations

import fcntl
import logging
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import textwrap

import pytest

from bids_encoding.progress import track

from ..conftest import run_cli

# a real ridge fit in 5 folds x 40 chunks, in a process where nobody configured logging (as in a SLURM job)
FIT = textwrap.dedent("""
    import numpy as np
    from bids_encoding.models.voxelwise import encode_runs

    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((100, 8)), rng.standard_normal((100, 400))
    encode_runs(X, Y, [20] * 5, chunk_size=10, label="test fit")
""")
QUIET_NOW = {"BIDS_ENCODING_PROGRESS_SECONDS": "0"}  # show progress however short the step


def progress_lines(text: str, step: str) -> list[str]:
    return [line for line in text.splitlines() if step in line and "done in" not in line]


@pytest.mark.slow
def test_without_a_terminal_a_step_logs_a_line_per_tenth_and_a_summary():
    result = subprocess.run([sys.executable, "-c", FIT], capture_output=True, text=True,
                            env={**os.environ, **QUIET_NOW}, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = progress_lines(result.stderr, "test fit (400 voxels x 8 features, 5 folds, chunks of 10 voxels)")
    assert 5 <= len(lines) <= 10, result.stderr  # 200 chunks, but a line only for each further tenth
    assert re.search(r"bids_encoding INFO: test fit .*: 200/200 chunks \(100 %\)", lines[-1])
    summaries = [line for line in result.stderr.splitlines() if "test fit" in line and "done in" in line]
    assert len(summaries) == 1 and re.search(r"done in \d+\.\d s$", summaries[0])
    assert "\r" not in result.stderr and "chunks/s" not in result.stderr  # no bar


def test_a_short_step_stays_quiet(monkeypatch, caplog):
    monkeypatch.setenv("BIDS_ENCODING_PROGRESS_SECONDS", "600")
    with caplog.at_level(logging.DEBUG, logger="bids_encoding"):
        assert list(track(range(50), "short step", unit="items")) == list(range(50))
    assert [r.levelno for r in caplog.records if "short step" in r.getMessage()] == [logging.DEBUG]  # the summary only
    assert re.fullmatch(r"short step: done in \d+\.\d s", caplog.records[-1].getMessage())


@pytest.mark.slow
def test_on_a_terminal_a_bar_is_drawn():
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 24 rows x 100 columns, as a terminal
    try:
        process = subprocess.Popen([sys.executable, "-c", FIT], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=slave, env={**os.environ, **QUIET_NOW, "TERM": "xterm"})
        os.close(slave)
        output = b""
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            output += data
        assert process.wait(timeout=120) == 0
    finally:
        os.close(master)
    text = output.decode(errors="replace")
    assert "\r" in text and re.search(r"test fit .*\d+%\|", text) and "chunks/s" in text, text[-2000:]
    assert re.search(r"\| \d+/200 \[", text)
    assert re.search(r"test fit .*: done in \d+\.\d s", text)


@pytest.mark.slow
def test_cli_in_multiproc_workers_logs_progress_of_the_fit(example_dataset, tmp_path):
    out = tmp_path / "out"
    result = run_cli(example_dataset, out, "participant", "--participant-label", "01", "--task", "lpp",
                     "--features", "wordrate", "--derivatives", example_dataset / "derivatives" / "fmriprep",
                     "--skip-bids-validation", "--n-cpus", "2", "--mem-gb", "2", "-w", tmp_path / "work",
                     env=QUIET_NOW)
    assert result.returncode == 0, result.stderr
    lines = progress_lines(result.stderr, "encoding model wordrate (")
    assert 1 <= len(lines) <= 10, result.stderr
    assert any("encoding model wordrate" in line and "done in" in line for line in result.stderr.splitlines())
    assert "done: sub_01_wf.lpp_encoding_wf.fit_wordrate" in result.stderr  # the node's own line is still there
    assert list(out.rglob("*desc-wordrate_stat-rSquare_statmap.nii.gz"))
