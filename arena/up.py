"""`arena up arena.toml`: a whole arena from one file (read and checked by arena/arena_file.py).

`arena demo` builds the same `Arena` in code (arena/demo.py), and both run through `run()`: the embedded
broker (or an external cluster), the market (simulator, live Coinbase feed or a recording), the offline
policy server when a chat node uses it, the chat nodes, one router per agent, and the tools process with
the dashboard in front.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from arena import kafka as k
from arena import lifeline, service
from arena.arena_file import (  # noqa: F401 - the file's names, re-exported for arena demo and tournament
    OFFLINE,
    Agent,
    Arena,
    ChatNode,
    ConfigError,
    Market,
    Output,
    Tools,
    Web,
    builtin_strategies,
    load,
    parse,
    summary,
)
from arena.config import DEFAULT_FETCH_WAIT_MS, HEALTH_TOPIC, KafkaSettings
from arena.supervisor import ROOT, ProcessStatus, Supervisor

log = logging.getLogger("arena.up")

# -- running it -------------------------------------------------------------------------------------


class Console:
    """The supervisor's stdout, which may go away under it: `arena up | tee` stopped with Ctrl-C, a
    closed terminal. Then the arena stops as on Ctrl-C, and nothing it still writes fails."""

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
    if Console.lost:
        return
    try:
        service.status(f"[arena] {msg}")
    except OSError:  # EPIPE from a closed pipe, EIO from a hung-up terminal
        Console.lose()


@dataclass
class RunOptions:
    duration: float | None = None  # seconds of trading, counted once every part is up
    export: Path | None = None  # overrides the file's [output].export
    headless: bool = False  # status lines instead of the live dashboard


def fetch_wait_for(arena: Arena) -> int:
    if arena.fetch_wait_ms is not None:
        return arena.fetch_wait_ms
    from arena.config import fetch_wait_ms

    return fetch_wait_ms(
        os.environ.get("ARENA_FETCH_WAIT_MS") or str(min(100, max(DEFAULT_FETCH_WAIT_MS, 4 * len(arena.agents))))
    )


async def run(arena: Arena, opts: RunOptions) -> int:
    from arena.broker import EmbeddedBroker, free_port
    from arena.exchanges.coinbase.protocol import COINBASE_REST_URL, COINBASE_WS_URL
    from arena.tools_service import SERVED

    out = arena.output
    run_dir = Path(out.run_dir or ROOT / "runs" / datetime.now().strftime("%Y%m%d-%H%M%S"))
    run_dir.mkdir(parents=True, exist_ok=True)
    ledger = str(out.ledger or run_dir / "ledger.db")
    export = str(opts.export or out.export or run_dir / "leaderboard.json")
    headless = opts.headless or not sys.stdout.isatty()
    wait_ms = fetch_wait_for(arena)
    (run_dir / "arena.json").write_text(json.dumps(arena.describe(), indent=2) + "\n")
    status(f"run folder: {run_dir} (every process logs there)")

    loop = asyncio.get_running_loop()
    market = arena.market
    replay = market.source == "recording"
    stop = asyncio.Event()
    starting = asyncio.current_task()  # cancelled by a stop request until every part is up

    def request_stop() -> None:
        stop.set()
        if starting is not None:
            starting.cancel()

    # Taken over before anything starts: a Ctrl-C while the broker comes up stops it too.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGHUP: the terminal went away
        loop.add_signal_handler(sig, request_stop)

    async def watch_output() -> None:
        while not Console.check():
            await asyncio.sleep(0.5)
        request_stop()

    output_watch = loop.create_task(watch_output())
    code = 0
    broker = sup = health = None
    try:
        if arena.bootstrap_servers:
            bootstrap = arena.bootstrap_servers
            status(f"using the Kafka cluster at {bootstrap}")
        else:
            broker = EmbeddedBroker("127.0.0.1", free_port(), log=open(run_dir / "broker.log", "ab")).start()
            await broker.wait_ready()
            bootstrap = broker.bootstrap
            status(f"broker ready on {bootstrap}; consumers wait up to {wait_ms} ms per fetch")
        sup = Supervisor(run_dir, env={"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "ARENA_FETCH_WAIT_MS": str(wait_ms)})
        health = k.producer(KafkaSettings(bootstrap_servers=bootstrap))
        await health.start()
        sup.on_status = lambda st: loop.create_task(health.send(HEALTH_TOPIC, k.encode(st)))
        kafka = ["--bootstrap-servers", bootstrap]
        web = None
        if arena.web is not None:  # from the start, so the page holds the whole run
            from arena.web import web_command

            web = sup.start(
                "web", [*web_command(arena.web.port, kafka), "--max-quote-age", f"{arena.tools.max_quote_age:g}"]
            )
        products = ["--products", *market.products]
        if market.source == "live":
            ws, rest = COINBASE_WS_URL, COINBASE_REST_URL
        elif market.source == "simulator":
            port = free_port()
            sim = sup.start(
                "market-sim",
                ["-m", "arena.cli", "market-sim", "--port", str(port), "--seed", str(arena.seed), *products],
            )
            await sup.wait_ready(sim)
            ws, rest = f"ws://127.0.0.1:{port}", f"http://127.0.0.1:{port}"
            status(f"market simulator ready ({ws})")
        policy = None
        if any(c.offline for c in arena.chat_nodes):
            policy_port = free_port()
            policy = sup.start(
                "policy-server",
                ["-m", "arena.cli", "policy-server", "--port", str(policy_port), "--seed", str(arena.seed)],
            )
        if replay:  # started last, so every agent sees the recording from its first snapshot
            conn_args = [
                "coinbase_connector.py",
                *kafka,
                "--replay",
                str(market.recording),
                "--speed",
                f"{market.speed:g}",
            ]
            conn = None
        else:
            conn_args = [
                "coinbase_connector.py",
                *kafka,
                "--ws-url",
                ws,
                "--rest-url",
                rest,
                "--interval",
                f"{market.interval:g}",
                *products,
            ]
            conn = sup.start("connector", conn_args)
        tools_args = [
            "tools_and_dashboard.py",
            *kafka,
            "--ledger",
            ledger,
            "--export",
            export,
            "--log-file",
            str(run_dir / "tools.log"),
            "--fee-bps",
            f"{arena.tools.fee_bps:g}",
            "--impact-bps",
            f"{arena.tools.impact_bps:g}",
            "--max-quote-age",
            f"{arena.tools.max_quote_age:g}",
        ]
        if headless:
            tools_args.append("--no-dashboard")
        if policy is not None:
            await sup.wait_ready(policy)
            status("policy server ready (offline models)")
        chats = [
            sup.start(f"chat {c.name}", _chat_args(c, kafka, policy_port if c.offline else None), env=_chat_env(c))
            for c in arena.chat_nodes
        ]
        routers = [sup.start(f"router {a.name}", _router_args(a, kafka)) for a in arena.agents]
        if conn is not None:
            await sup.wait_ready(conn, timeout=90)
            status("feed connected; first snapshot published")
        for c in chats:
            await sup.wait_ready(c)
        status(f"chat nodes ready: {', '.join(c.name for c in arena.chat_nodes)}")
        for r in routers:
            await sup.wait_ready(r)
        status(f"agents online: {', '.join(a.name for a in arena.agents)}")
        if web is not None and not headless:  # before the dashboard takes the screen
            from arena.web import web_url

            await sup.wait_ready(web)
            status(f"web page: {web_url(web.log_tail(200))}")
        status("starting tools + dashboard" + (" (headless)" if headless else "; Ctrl-C to stop"))
        tools = sup.start("tools", tools_args, foreground=not headless)
        if headless or replay:
            await sup.wait_ready(tools, marker=SERVED)  # its log: with the dashboard, stdout is the terminal
            if headless:
                status("tools ready; trading")
        if web is not None:
            from arena.web import web_url

            await sup.wait_ready(web)
            if headless:
                status(f"web page: {web_url(web.log_tail(200))}")
        if replay:
            conn = sup.start("connector", conn_args)
            if headless:
                status(f"replaying {market.recording} at {f'{market.speed:g}x' if market.speed else 'full speed'}")
        starting = None
        deadline = loop.time() + opts.duration if opts.duration else None
        while not stop.is_set():
            if replay and not conn.stopping and conn.proc.poll() == 0:  # the recording is over: expected
                conn.stopping = True
                sup.on_status(ProcessStatus(name=conn.name, status="stopped", detail="replay finished"))
                if headless:
                    status("replay finished: every snapshot of the recording published")
            for c in sup.dead():  # the dashboard shows these from the health topic
                if headless:
                    status(
                        f"{c.name} exited unexpectedly (code {c.proc.returncode}); log {c.log_path}:\n{c.log_tail(5)}"
                    )
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
        starting = None  # a second Ctrl-C must not cut the stop short
        output_watch.cancel()
        status("stopping ...")
        if sup is not None:
            sup.stop_all(order=["router", "chat", "tools", "connector", "web"])
        if health is not None:
            await health.stop()
        if broker is not None:
            broker.stop()
    if Path(export).exists():
        if headless and not Console.check():  # with the dashboard, the tools process printed the final standings itself
            try:
                print_leaderboard(export)
                sys.stdout.flush()
            except OSError:
                Console.lose()
        status(f"leaderboard written to {export}")
    return code


def _chat_args(c: ChatNode, kafka: list[str], policy_port: int | None) -> list[str]:
    base_url = f"http://127.0.0.1:{policy_port}/v1" if policy_port else c.base_url
    args = ["deploy_chat_node.py", *kafka, "--name", c.name, "--model-id", c.model, "--base-url", base_url]
    if c.reasoning_effort:
        args += ["--reasoning-effort", c.reasoning_effort]
    if c.price_in_per_mtok is not None and c.price_out_per_mtok is not None:  # the cost shown per agent
        args += ["--price-in", f"{c.price_in_per_mtok:g}", "--price-out", f"{c.price_out_per_mtok:g}"]
    return args


def _chat_env(c: ChatNode) -> dict[str, str]:
    """The key reaches the chat node through its environment only (a command line is visible to all)."""
    if c.api_key_env:
        return {"OPENAI_API_KEY": os.environ[c.api_key_env]}
    return {"OPENAI_API_KEY": "unused"}  # the offline policy server, or a server that needs no key


def _router_args(a: Agent, kafka: list[str]) -> list[str]:
    args = ["deploy_router_node.py", *kafka, "--name", a.name, "--chat-node-name", a.chat_node]
    args += ["--strategy-file", str(a.prompt_file)] if a.prompt_file else ["--strategy", a.strategy or "default"]
    if a.turn_timeout:
        args += ["--turn-timeout", f"{a.turn_timeout:g}"]
    return args


def print_leaderboard(path: str) -> None:
    from arena.report import print_export

    print_export(json.loads(Path(path).read_text()))


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="arena up",
        description="Run a whole arena described by one TOML file: the market, the chat nodes (any mix of providers), "
        "the agents, fees and limits, and where logs, ledger and exports go. The file is checked whole before "
        "anything starts. Ctrl-C stops everything.",
        epilog="examples: examples/offline.toml (no key, no internet), examples/openai.toml (a real provider).\n"
        "The file's format: README.md, section `arena up`.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", type=Path, help="the arena file (TOML)")
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop by itself after this many seconds of trading (counted once every part is up) and print the final leaderboard",
    )
    p.add_argument(
        "--export",
        type=Path,
        default=None,
        help="write the final leaderboard as JSON to this path (default: the file's [output].export, else leaderboard.json in the run folder)",
    )
    p.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="folder for logs and the ledger (default: the file's [output].run_dir, else runs/<timestamp>)",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="only check the file: print what it would start, or every problem, and exit",
    )
    p.add_argument(
        "--no-dashboard",
        action="store_true",
        help="headless: status lines instead of the live dashboard (automatic when stdout is not a terminal)",
    )
    args = p.parse_args(argv)
    if args.duration is not None and not args.duration > 0:
        p.error("--duration must be positive")
    return args


def main(argv=None) -> int:
    """Ctrl-C (or SIGTERM) at any moment stops the arena quietly: before the event loop (reading the file)
    as arena.service's parts do; once it runs, every part started so far is stopped in order."""
    service.own_signals()
    try:
        return _main(argv)
    except KeyboardInterrupt:
        return 0


def _main(argv) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = parse_args(argv)
    try:
        arena = load(args.file)
    except ConfigError as exc:
        print(f"arena up: {exc}", file=sys.stderr)
        return 2
    if args.run_dir is not None:
        arena.output.run_dir = args.run_dir
    if args.check:
        print(f"{args.file}: ok\n{summary(arena)}")
        return 0
    return asyncio.run(run(arena, RunOptions(duration=args.duration, export=args.export, headless=args.no_dashboard)))
