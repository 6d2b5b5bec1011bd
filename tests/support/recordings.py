"""Short cuts of the sample recording: a replay test that needs only the first few snapshots (where the
offline policies already trade) need not wait through all of them."""

from __future__ import annotations

from pathlib import Path

from tests.support.procs import ROOT

SAMPLE = ROOT / "assets" / "sample_recording.jsonl"


def first_snapshots(n: int, folder: Path, source: Path = SAMPLE) -> Path:
    """The first `n` snapshots of `source`, their lines verbatim, as a recording of their own in `folder`."""
    lines = [line for line in source.read_text(encoding="utf-8").splitlines(keepends=True) if line.strip()]
    assert len(lines) >= n, f"{source} has only {len(lines)} snapshots"
    path = Path(folder) / f"first-{n}-of-{source.name}"
    path.write_text("".join(lines[:n]), encoding="utf-8")
    return path
