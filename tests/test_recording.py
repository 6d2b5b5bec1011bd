"""`arena recording cut|join`: time ranges and joins of market recordings, replayable as they were."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from arena import recording
from arena.feed import load_recording

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "assets" / "sample_recording.jsonl"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "arena.cli", "recording", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_cut_by_seconds_and_by_time(tmp_path):
    snaps = load_recording(SAMPLE)
    first = snaps[0].published_at
    out = tmp_path / "cut.jsonl"
    assert run("cut", str(SAMPLE), "--start", "4", "--end", "10", "-o", str(out)).returncode == 0
    kept = load_recording(out)
    expected = [s for s in snaps if timedelta(seconds=4) <= s.published_at - first <= timedelta(seconds=10)]
    assert 0 < len(kept) == len(expected) < len(snaps)
    assert [s.seq for s in kept] == list(range(1, len(kept) + 1))
    assert [s.quotes for s in kept] == [s.quotes for s in expected]
    by_time = recording.cut(snaps, expected[0].published_at.isoformat(), expected[-1].published_at.isoformat())
    assert [s.published_at for s in by_time] == [s.published_at for s in expected]


def test_cut_errors_name_the_problem(tmp_path):
    out = tmp_path / "x.jsonl"
    r = run("cut", str(SAMPLE), "--start", "500", "-o", str(out))
    assert r.returncode == 2 and "no snapshot between" in r.stderr and not out.exists()
    assert "expected a time" in run("cut", str(SAMPLE), "--start", "yesterday", "-o", str(out)).stderr
    assert "ends" in run("cut", str(SAMPLE), "--start", "10", "--end", "2", "-o", str(out)).stderr


def test_join_follows_at_the_usual_spacing_and_keeps_candles_aligned(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    snaps = load_recording(SAMPLE)
    recording.write(snaps[:8], a)
    recording.write(snaps[3:], b)  # overlapping in time: the second part must still come after the first
    out = tmp_path / "joined.jsonl"
    assert run("join", str(a), str(b), "-o", str(out)).returncode == 0
    joined = load_recording(out)
    assert len(joined) == 8 + len(snaps) - 3 and [s.seq for s in joined] == list(range(1, len(joined) + 1))
    times = [s.published_at for s in joined]
    assert all(t2 > t1 for t1, t2 in zip(times, times[1:])), "time runs forward"
    assert times[8] - times[7] == recording.spacing(snaps[:8])
    assert joined[8].quotes["BTC-USD"].price == snaps[3].quotes["BTC-USD"].price
    step = max(secs for secs, _ in recording.CANDLE_WINDOWS.values())
    for pid, by in joined[8].candles.items():
        for gran, cs in by.items():
            secs = recording.CANDLE_WINDOWS[gran][0]
            assert all(c.start % secs == 0 for c in cs), (pid, gran)
            orig = snaps[3].candles[pid][gran]
            assert (cs[0].start - orig[0].start) % step == 0


@pytest.mark.parametrize("name", ["sample_recording.jsonl", "sim_recording.jsonl"])
def test_the_shipped_recordings_load(name):
    snaps = load_recording(ROOT / "assets" / name)
    assert len(snaps) >= (15 if name.startswith("sample") else 100)
    assert [s.seq for s in snaps] == list(range(1, len(snaps) + 1))
