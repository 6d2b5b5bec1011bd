"""`arena demo`: a whole arena on this machine with one command — no API key, no internet.

Starts, as real subprocesses: the embedded broker, the Coinbase-compatible market simulator (or the
real Coinbase feed with --live, or a recording with --replay), the connector, the offline policy server,
two chat nodes, N routers and the tools process with the dashboard in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from datetime import datetime
from pathlib import Path

from arena import kafka as k
from arena import lifeline
from arena.broker import EmbeddedBroker, free_port
from arena.coinbase import COINBASE_REST_URL, COINBASE_WS_URL
from arena.config import DEFAULT_FETCH_WAIT_MS, HEALTH_TOPIC, KafkaSettings, fetch_wait_ms
from arena.supervisor import ROOT, ProcessStatus, Supervisor
from arena.tools_service import SERVED

log = logging.getLogger("arena.demo")

NAMES = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"]
STRATEGIES = ["momentum", "scalper", "brainrot", "default"]
# Two shared chat nodes, each serving one deterministic policy from the policy server.
CHAT_NODES = {"quant": "auto", "degen": "mean-revert"}


def agent_plan(n: int) -> list[tuple[str, str, str]]:
    """(name, strategy, chat node) for n agents: strategies rotate, chat nodes alternate."""
    chat = list(CHAT_NODES)
    return [
        (NAMES[i] if i < len(NAMES) else f"agent{i + 1}", STRATEGIES[i % len(STRATEGIES)], chat[i % len(chat)])
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
    p.add_argument("--interval", type=float, default=10.0, help="seconds between market snapshots (default %(default)s; with --replay the recording keeps its own pace)")
    p.add_argument("--duration", type=float, default=None, help="stop by itself after this many seconds of trading (counted once every part is up) and print the final leaderboard")
    p.add_argument("--export", default=None, help="write the final leaderboard as JSON to this path")
    p.add_argument("--seed", type=int, default=7, help="seed for the market simulator and random policies (default %(default)s)")
    p.add_argument("--ledger", default=None, help="ledger database path (default: ledger.db in the run folder)")
    feed = p.add_mutually_exclusive_group()
    feed.add_argument("--live", action="store_true", help="use the real Coinbase feed instead of the simulator (needs internet)")
    feed.add_argument("--replay", type=Path, default=None, metavar="PATH",
                      help="publish this market recording (coinbase_connector.py --record; e.g. assets/sample_recording.jsonl) "
                      "instead of the simulator, once every agent and the tools are up; the arena keeps running after it "
                      "ends (Ctrl-C or --duration stops it)")
    p.add_argument("--speed", type=float, default=1.0,
                   help="with --replay: 2 = twice the recorded pace, 0 = as fast as possible (agents skip the snapshots "
                   "that arrive while they think) (default %(default)s)")
    p.add_argument("--fetch-wait-ms", type=fetch_wait_ms, default=None,
                   help="every process's consumer fetch wait, 1-1000 ms (default: env ARENA_FETCH_WAIT_MS, else "
                   "4 ms per agent within 10-100: at 10 agents each hop waits up to 40 ms, but the broker is not "
                   "swamped by polls; see bench/README.md)")
    p.add_argument("--run-dir", default=None, help="folder for logs and the ledger (default runs/<timestamp>)")
    p.add_argument("--no-dashboard", action="store_true", help="headless: status lines instead of the live dashboard (automatic when stdout is not a terminal)")
    args = p.parse_args(argv)
    if args.agents < 1:
        p.error("--agents must be at least 1")
    if args.interval <= 0:
        p.error("--interval must be positive")
    if args.speed < 0:
        p.error("--speed must be >= 0")
    if args.fetch_wait_ms is None:
        try:
            args.fetch_wait_ms = fetch_wait_ms(os.environ.get("ARENA_FETCH_WAIT_MS") or str(min(100, max(DEFAULT_FETCH_WAIT_MS, 4 * args.agents))))
        except argparse.ArgumentTypeError as exc:
            p.error(f"ARENA_FETCH_WAIT_MS: {exc}")
    if args.replay is not None and not args.replay.is_file():
        p.error(f"--replay: no such file {args.replay}")
    return args


class Output:
    """The demo's stdout, which may go away under it: `arena demo | tee` stopped with Ctrl-C, a closed
    terminal. Then the demo stops as on Ctrl-C, and nothing it still writes fails."""

    lost = False

    @classmethod
    def check(cls) -> bool:
        """Whether stdout is gone (found by a failed write, or by asking the pipe or terminal)."""
        if not cls.lost and lifeline.output_gone(1):
            cls.lose()
        return cls.lost

    @classmethod
    def lose(cls) -> None:
        cls.lost = True
        for fd in (1, 2):  # stderr too when it is the same closed pipe (2>&1)
            if fd == 1 or lifeline.output_gone(fd):
                lifeline.silence(fd)


def status(msg: str) -> None:
    if Output.lost:
        return
    try:
        print(f"[arena] {msg}", flush=True)
    except OSError:  # EPIPE from a closed pipe, EIO from a hung-up terminal
        Output.lose()


async def run(args) -> int:
    run_dir = Path(args.run_dir or ROOT / "runs" / datetime.now().strftime("%Y%m%d-%H%M%S"))
    run_dir.mkdir(parents=True, exist_ok=True)
    ledger = args.ledger or str(run_dir / "ledger.db")
    export = args.export or str(run_dir / "leaderboard.json")
    headless = args.no_dashboard or not sys.stdout.isatty()
    status(f"run folder: {run_dir} (every process logs there)")

    broker = EmbeddedBroker("127.0.0.1", free_port(), log=open(run_dir / "broker.log", "ab")).start()
    await broker.wait_ready()
    bootstrap = broker.bootstrap
    status(f"broker ready on {bootstrap}; consumers wait up to {args.fetch_wait_ms} ms per fetch")
    sup = Supervisor(run_dir, env={"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "ARENA_FETCH_WAIT_MS": str(args.fetch_wait_ms)})
    health = k.producer(KafkaSettings(bootstrap_servers=bootstrap))
    await health.start()
    loop = asyncio.get_running_loop()
    sup.on_status = lambda st: loop.create_task(health.send(HEALTH_TOPIC, k.encode(st)))
    kafka = ["--bootstrap-servers", bootstrap]

    stop = asyncio.Event()
    starting = asyncio.current_task()  # cancelled by a stop request until every part is up

    def request_stop() -> None:
        stop.set()
        if starting is not None:
            starting.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGHUP: the terminal went away
        loop.add_signal_handler(sig, request_stop)

    async def watch_output() -> None:
        while not Output.check():
            await asyncio.sleep(0.5)
        request_stop()

    output_watch = loop.create_task(watch_output())
    code = 0
    try:
        if args.live:
            ws, rest = COINBASE_WS_URL, COINBASE_REST_URL
        elif not args.replay:
            port = free_port()
            sim = sup.start("market-sim", ["-m", "arena.cli", "market-sim", "--port", str(port), "--seed", str(args.seed)])
            await sup.wait_ready(sim)
            ws, rest = f"ws://127.0.0.1:{port}", f"http://127.0.0.1:{port}"
            status(f"market simulator ready ({ws})")
        policy_port = free_port()
        policy = sup.start("policy-server", ["-m", "arena.cli", "policy-server", "--port", str(policy_port), "--seed", str(args.seed)])
        if args.replay:  # started last, so every agent sees the recording from its first snapshot
            conn_args = ["coinbase_connector.py", *kafka, "--replay", str(args.replay.resolve()), "--speed", str(args.speed)]
            conn = None
        else:
            conn_args = ["coinbase_connector.py", *kafka, "--ws-url", ws, "--rest-url", rest, "--interval", str(args.interval)]
            conn = sup.start("connector", conn_args)
        tools_args = ["tools_and_dashboard.py", *kafka, "--ledger", ledger, "--export", export, "--log-file", str(run_dir / "tools.log")]
        if headless:
            tools_args.append("--no-dashboard")
        await sup.wait_ready(policy)
        status("policy server ready (offline models)")
        base_url = f"http://127.0.0.1:{policy_port}/v1"
        chats = [
            sup.start(f"chat {name}", ["deploy_chat_node.py", *kafka, "--name", name, "--model-id", model, "--base-url", base_url])
            for name, model in CHAT_NODES.items()
        ]
        routers = [
            sup.start(f"router {name}", ["deploy_router_node.py", *kafka, "--name", name, "--strategy", strategy, "--chat-node-name", chat])
            for name, strategy, chat in agent_plan(args.agents)
        ]
        if conn is not None:
            await sup.wait_ready(conn, timeout=90)
            status("feed connected; first snapshot published")
        for c in chats:
            await sup.wait_ready(c)
        status(f"chat nodes ready: {', '.join(CHAT_NODES)}")
        for r in routers:
            await sup.wait_ready(r)
        status(f"agents online: {', '.join(n for n, _, _ in agent_plan(args.agents))}")
        status("starting tools + dashboard" + (" (headless)" if headless else "; Ctrl-C to stop"))
        tools = sup.start("tools", tools_args, foreground=not headless)
        if headless or args.replay:
            await sup.wait_ready(tools, marker=SERVED)  # its log: with the dashboard, stdout is the terminal
            if headless:
                status("tools ready; trading")
        if args.replay:
            conn = sup.start("connector", conn_args)
            if headless:
                status(f"replaying {args.replay} at {f'{args.speed:g}x' if args.speed else 'full speed'}")
        starting = None
        deadline = loop.time() + args.duration if args.duration else None
        while not stop.is_set():
            if args.replay and not conn.stopping and conn.proc.poll() == 0:  # the recording is over: expected
                conn.stopping = True
                sup.on_status(ProcessStatus(name=conn.name, status="stopped", detail="replay finished"))
                if headless:
                    status("replay finished: every snapshot of the recording published")
            for c in sup.dead():  # the dashboard shows these from the health topic
                if headless:
                    status(f"{c.name} exited unexpectedly (code {c.proc.returncode}); log {c.log_path}:\n{c.log_tail(5)}")
                if c is tools:
                    stop.set()
                    code = 1
            if deadline and loop.time() >= deadline:
                break
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except asyncio.TimeoutError:
                pass
    except asyncio.CancelledError:
        if not stop.is_set():
            raise
        starting = None  # asked to stop while the parts were coming up
    except Exception as exc:  # a part failed to come up: say which, and where its log is
        status(f"error: {exc}")
        code = 1
    finally:
        output_watch.cancel()
        status("stopping ...")
        sup.stop_all(order=["router", "chat", "tools", "connector"])
        await health.stop()
        broker.stop()
    if Path(export).exists():
        if headless and not Output.check():  # with the dashboard, the tools process printed the final standings itself
            try:
                print_leaderboard(export)
                sys.stdout.flush()
            except OSError:
                Output.lose()
        status(f"leaderboard written to {export}")
    return code


def print_leaderboard(path: str) -> None:
    data = json.loads(Path(path).read_text())
    try:
        from arena.report import print_export

        print_export(data)
    except ImportError:
        for a in data.get("agents", []):
            print(f"  {a['name']:<24} {a['total_value']:>14,.2f}  {a['return_pct']:+.3f}%  trades {a.get('trades', 0)}")


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = parse_args(argv)
    return asyncio.run(run(args))
