"""Run one of the arena's scripts with other consumer tuning, for what-if benchmarks:

    python -m bench.tuned deploy_router_node.py --name alice ...

Environment: BENCH_FETCH_WAIT_MS replaces arena.config.CONSUMER_TUNING["fetch_max_wait_ms"] (every arena
consumer and calfkit node subscriber); BENCH_READER_POLL_MS / BENCH_READER_FETCH_MS replace the cadence
of calfkit's fan-out table readers (KTableReaderTuning, as the router sets it). Unset: unchanged.
The benchmarks set these from their --fetch-wait-ms / --reader-ms options.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def apply_tuning() -> None:
    import arena.config

    if fetch := os.environ.get("BENCH_FETCH_WAIT_MS"):
        os.environ["ARENA_FETCH_WAIT_MS"] = fetch  # every script's --fetch-wait-ms default
        arena.config.CONSUMER_TUNING["fetch_max_wait_ms"] = int(fetch)  # the dict every module shares
    poll, reader_fetch = os.environ.get("BENCH_READER_POLL_MS"), os.environ.get("BENCH_READER_FETCH_MS")
    if poll or reader_fetch:
        import calfkit

        original = calfkit.KTableReaderTuning

        def tuned(**kw):
            if poll:
                kw["poll_timeout_ms"] = int(poll)
            if reader_fetch:
                kw["fetch_max_wait_ms"] = int(reader_fetch)
            return original(**kw)

        calfkit.KTableReaderTuning = tuned  # arena.router imports it from calfkit when it starts


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sys.path.insert(0, str(ROOT))
    apply_tuning()
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    runpy.run_path(str(ROOT / script), run_name="__main__")


if __name__ == "__main__":
    main()
