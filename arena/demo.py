"""`arena demo`: a whole arena on this machine with one command — no API key, no internet.

Starts, as real subprocesses: the embedded broker, the Coinbase-compatible market simulator (or the
real Coinbase feed with --live, or a recording with --replay), the connector, the offline policy server,
two chat nodes, N routers, the live web page (arena web) and the tools process with the dashboard in
the foreground. It is an arena
file built in code (`demo_arena`), run the way `arena up` runs one."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from arena import service
from arena.config import DEFAULT_FETCH_WAIT_MS, fetch_wait_ms
from arena.up import OFFLINE, Agent, Arena, ArenaService, ChatNode, Market, Output, Web, add_run_args, run_options

log = logging.getLogger("arena.demo")

NAMES = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"]
# Two shared chat nodes, each serving one deterministic policy from the policy server.
CHAT_NODES = {"quant": "auto", "degen": "mean-revert"}


def agent_plan(n: int) -> list[tuple[str, str, str]]:
    """(name, strategy, chat node) for n agents: the built-in strategies rotate, chat nodes alternate."""
    from arena.strategies import builtin_strategies

    chat, strategies = list(CHAT_NODES), builtin_strategies()
    return [
        (NAMES[i] if i < len(NAMES) else f"agent{i + 1}", strategies[i % len(strategies)], chat[i % len(chat)])
        for i in range(n)
    ]


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="arena demo",
        description="Run a whole arena offline: broker, market simulator, connector, policy server, "
        "chat nodes, routers and the tools process with the live dashboard. Ctrl-C stops everything.",
        epilog="replay a recorded market instead of the simulator (record one with coinbase_connector.py --record):\n"
        "  arena demo --replay assets/sample_recording.jsonl --speed 1\n"
        "With the offline policies, a replay slow enough for every agent to decide every snapshot trades the\n"
        "same way each time (tests/test_replay_determinism.py).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--agents", type=int, default=3, help="number of agents (routers), at least 1 (default %(default)s)")
    p.add_argument(
        "--interval",
        type=float,
        default=10.0,
        help="seconds between market snapshots (default %(default)s; with --replay the recording keeps its own pace)",
    )
    p.add_argument(
        "--seed", type=int, default=7, help="seed for the market simulator and random policies (default %(default)s)"
    )
    p.add_argument("--ledger", default=None, help="ledger database path (default: ledger.db in the run folder)")
    feed = p.add_mutually_exclusive_group()
    feed.add_argument(
        "--live", action="store_true", help="use the real Coinbase feed instead of the simulator (needs internet)"
    )
    feed.add_argument(
        "--replay",
        type=Path,
        default=None,
        metavar="PATH",
        help="publish this market recording (coinbase_connector.py --record; e.g. assets/sample_recording.jsonl) "
        "instead of the simulator, once every agent and the tools are up; the arena keeps running after it "
        "ends (Ctrl-C or --duration stops it)",
    )
    p.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="with --replay: 2 = twice the recorded pace, 0 = as fast as possible (agents skip the snapshots "
        "that arrive while they think) (default %(default)s)",
    )
    p.add_argument(
        "--fetch-wait-ms",
        type=fetch_wait_ms,
        default=None,
        help="every process's consumer fetch wait, 1-1000 ms (default: env ARENA_FETCH_WAIT_MS, else "
        "4 ms per agent within 10-100: at 10 agents each hop waits up to 40 ms, but the broker is not "
        "swamped by polls; see bench/README.md)",
    )
    p.add_argument(
        "--web-port",
        type=int,
        default=8000,
        metavar="PORT",
        help="port of the live web page (arena web; default %(default)s, a free one when taken)",
    )
    p.add_argument("--no-web", action="store_true", help="no web page")
    add_run_args(p, from_file=False)
    args = p.parse_args(argv)
    if args.agents < 1:
        p.error("--agents must be at least 1")
    if not 0 <= args.web_port <= 65535:
        p.error("--web-port must be 0-65535")
    if args.interval <= 0:
        p.error("--interval must be positive")
    if args.speed < 0:
        p.error("--speed must be >= 0")
    if args.fetch_wait_ms is None:
        try:
            args.fetch_wait_ms = fetch_wait_ms(
                os.environ.get("ARENA_FETCH_WAIT_MS") or str(min(100, max(DEFAULT_FETCH_WAIT_MS, 4 * args.agents)))
            )
        except argparse.ArgumentTypeError as exc:
            p.error(f"ARENA_FETCH_WAIT_MS: {exc}")
    if args.replay is not None and not args.replay.is_file():
        p.error(f"--replay: no such file {args.replay}")
    return args


# The offline models answer in milliseconds and a turn takes a few seconds at most: a turn that stalls
# (docs/RELIABILITY.md, "Known issues": a tool's reply that never reaches its agent) costs 10 s, not 60.
TURN_TIMEOUT_S = 10.0


def demo_arena(args) -> Arena:
    """The demo as an arena file would describe it (arena/up.py): the same dataclasses, built in code."""
    if args.live:
        market = Market(source="live", interval=args.interval)
    elif args.replay:
        market = Market(source="recording", recording=args.replay.resolve(), speed=args.speed)
    else:
        market = Market(source="simulator", interval=args.interval)
    return Arena(
        chat_nodes=[ChatNode(name=name, model=model, base_url=OFFLINE) for name, model in CHAT_NODES.items()],
        agents=[
            Agent(name=name, strategy=strategy, chat_node=chat, turn_timeout=TURN_TIMEOUT_S)
            for name, strategy, chat in agent_plan(args.agents)
        ],
        market=market,
        output=Output(run_dir=args.run_dir, ledger=Path(args.ledger) if args.ledger else None),
        seed=args.seed,
        fetch_wait_ms=args.fetch_wait_ms,
        web=None if args.no_web else Web(port=args.web_port),
        source="arena demo",
    )


def build(argv) -> ArenaService:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = parse_args(argv)
    return ArenaService(demo_arena(args), run_options(args))


def main(argv=None) -> int:
    """Run the way `arena up` runs (arena.service.main): Ctrl-C at any moment stops it quietly."""
    return service.main(lambda: build(argv))
