"""`python -m bench <name> [--json] [options]`: run one benchmark (`python -m bench --help` lists them)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the arena's scripts and packages

import arena  # noqa: E402, F401 - first: its compat workarounds (arena/compat) apply to every benchmark

# name -> (module, one-line description)
BENCHMARKS = {
    "floor": ("bench.floor", "raw aiokafka publish -> consume latency and throughput on the broker (the floor)"),
    "fanout": ("bench.fanout", "a market snapshot published -> received by each of N router processes"),
    "decision": ("bench.decision", "tick -> fill for N routers through chat nodes and an instant model"),
    "idle": ("bench.idle", "CPU of a whole `arena demo` between snapshots, per process kind (broker included)"),
    "tools": ("bench.tools", "execute_trade round trip through the tools process; ledger trades/s"),
    "startup": ("bench.startup", "launch -> READY per script, memory per process kind, dashboard CPU"),
    "backlog": ("bench.backlog", "slow model and restarted router: every decision uses the newest tick"),
    "chat": ("bench.chat", "chat node start-up and a model request's round trip through it"),
    "feed": ("bench.feed", "market simulator and connector start-up, snapshot cadence"),
    "dashboard": ("bench.dashboard", "the live dashboard's rendering cost per frame"),
    "web": ("bench.web", "arena web: first render with 50 agents and 10,000 fills, server CPU with 20 open pages"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run one of the arena's benchmarks. Each starts a fresh embedded broker and the processes it "
        "needs, prints a summary and then one JSON object (the last line of stdout).",
    )
    sub = parser.add_subparsers(dest="name", metavar="<name>", required=True)
    for name, (module, help_) in BENCHMARKS.items():
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_, description=(mod.__doc__ or help_).strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
        p.add_argument(
            "--json", action="store_true", help="print only the JSON result on stdout (progress stays on stderr)"
        )
        mod.add_args(p)
        p.set_defaults(func=mod.run)
    args = parser.parse_args(argv)
    # Ctrl-C and SIGTERM stop a benchmark cleanly (its processes are stopped too), even when it was
    # started in the background, where SIGINT arrives ignored (and would be ignored by its children).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    # aiokafka logs "Unable connect" while the fresh broker comes up; real failures surface as exceptions.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    from bench.harness import Report

    try:
        return asyncio.run(args.func(args, Report(args.name, args)))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
