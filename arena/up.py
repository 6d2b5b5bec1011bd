"""`arena up arena.toml`: a whole arena from one file (read and checked by arena/arena_file.py).

`arena demo` builds the same `Arena` in code (arena/demo.py), and both run as an `ArenaService` on
arena/service.py (signals, start-up, READY, shutdown order, like every other part): its own embedded
broker (or an external cluster), the market (simulator, live Coinbase feed or a recording), the offline
policy server when a chat node uses it, the chat nodes, one router per agent, and the tools process with
the dashboard in front, each a child process (arena/supervisor.py) that ends with it, however it ends
(arena/lifeline.py).
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
    service.status(f"[arena] {msg}", on_lost=Console.lose)


@dataclass
class RunOptions:
    duration: float | None = None  # seconds of trading, counted once every part is up
    export: Path | None = None  # overrides the file's [output].export
    headless: bool = False  # status lines instead of the live dashboard
    connect_timeout: float = service.DEFAULT_CONNECT_TIMEOUT_S  # to start the broker or reach the cluster


def add_run_args(p: argparse.ArgumentParser, *, from_file: bool) -> None:
    """The flags `arena up` and `arena demo` share (`from_file`: the defaults come from the arena file)."""
    p.add_argument(
        "--duration",
        type=service.seconds,
        default=None,
        help="stop by itself after this many seconds of trading (counted once every part is up) and print "
        "the final leaderboard",
    )
    for flag, what, otherwise in (
        ("--export", "write the final leaderboard as JSON to this path", "leaderboard.json in the run folder"),
        ("--run-dir", "folder for logs and the ledger", "runs/<timestamp>"),
    ):
        key = flag[2:].replace("-", "_")
        default = f"the file's [output].{key}, else {otherwise}" if from_file else otherwise
        p.add_argument(flag, type=Path, default=None, help=f"{what} (default: {default})")
    p.add_argument(
        "--no-dashboard",
        action="store_true",
        help="headless: status lines instead of the live dashboard (automatic when stdout is not a terminal)",
    )
    service.add_service_args(p, log_level=False, supervisor=True)


def run_options(args: argparse.Namespace) -> RunOptions:
    return RunOptions(
        duration=args.duration, export=args.export, headless=args.no_dashboard, connect_timeout=args.connect_timeout
    )


def load_or_say(path: Path, prog: str) -> Arena | int:
    """The checked arena file, or exit code 2 with every problem said on stderr."""
    try:
        return load(path)
    except ConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2


def fetch_wait_for(arena: Arena) -> int:
    if arena.fetch_wait_ms is not None:
        return arena.fetch_wait_ms
    from arena.config import fetch_wait_ms

    return fetch_wait_ms(
        os.environ.get("ARENA_FETCH_WAIT_MS") or str(min(100, max(DEFAULT_FETCH_WAIT_MS, 4 * len(arena.agents))))
    )


class ArenaService(service.Service):
    """A whole arena, run by arena.service as a supervisor: its own broker (unless the file names a
    cluster), then every part as a child process (`launch`), then watching them until stopped, and
    every part stopped in order. SIGHUP (the terminal went away) stops it like Ctrl-C."""

    what = "the arena"
    stop_signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    watches_broker = False  # on a cluster the file names; its own broker is watched as such (OwnBroker)
    log = log

    def __init__(self, arena: Arena, opts: RunOptions):
        out = arena.output
        self.arena, self.opts = arena, opts
        self.run_dir = Path(out.run_dir or ROOT / "runs" / datetime.now().strftime("%Y%m%d-%H%M%S"))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.ledger = str(out.ledger or self.run_dir / "ledger.db")
        self.export = str(opts.export or out.export or self.run_dir / "leaderboard.json")
        self.headless = opts.headless or not sys.stdout.isatty()
        self.wait_ms = fetch_wait_for(arena)
        external = KafkaSettings(bootstrap_servers=arena.bootstrap_servers) if arena.bootstrap_servers else None
        own = None if external else service.OwnBroker(self.run_dir / "broker.log")
        super().__init__(external, opts.connect_timeout, own_broker=own)
        # Its one Kafka client publishes health: a broker that goes away is said by the runner (OwnBroker),
        # not by aiokafka's reconnect errors.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
        self.sup: Supervisor | None = None
        self.health = None
        self.tools = self.conn = None
        self.conn_args: list[str] = []
        self.output_watch: asyncio.Task | None = None

    # -- what it says ------------------------------------------------------------------------------

    def say(self, msg: str) -> None:
        status(msg)

    def connecting(self) -> str | None:
        (self.run_dir / "arena.json").write_text(json.dumps(self.arena.describe(), indent=2) + "\n")
        status(f"run folder: {self.run_dir} (every process logs there)")
        return f"using the Kafka cluster at {self.kafka.bootstrap_servers}" if self.kafka else None

    def startup_failed(self, exc) -> None:
        status(f"error: {exc}")

    def launch_failed(self, exc: Exception) -> None:  # a part failed to come up: its name and log are in exc
        status(f"error: {exc}")

    def interrupted(self) -> None:
        status("stopping ...")

    def ready(self, elapsed_s: float) -> str | None:
        if not self.headless:  # the dashboard has the screen
            return None
        return f"READY arena: {len(self.arena.agents)} agents trading after {elapsed_s:.1f}s"

    def stopping(self) -> str | None:
        return "stopping ..."

    # -- its clients and children ------------------------------------------------------------------

    async def warm_up(self) -> None:
        async def watch_output() -> None:  # a lost stdout stops the arena as Ctrl-C does
            while not Console.check():
                await asyncio.sleep(0.5)
            self.stop_requested.set()

        self.output_watch = asyncio.create_task(watch_output())

    async def start(self) -> None:
        bootstrap = self.kafka.bootstrap_servers
        if self.own_broker is not None:
            status(f"broker ready on {bootstrap}; consumers wait up to {self.wait_ms} ms per fetch")
        if self.sup is None:  # the children's environment names the broker: it keeps its address
            self.sup = Supervisor(
                self.run_dir, env={"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "ARENA_FETCH_WAIT_MS": str(self.wait_ms)}
            )
            self.sup.on_status = self._publish
        await self._open_health()

    async def _open_health(self) -> None:
        health = k.producer(self.kafka)
        await health.start()
        self.health = health

    def _publish(self, st: ProcessStatus) -> None:
        if self.health is not None:
            asyncio.get_running_loop().create_task(self.health.send(HEALTH_TOPIC, k.encode(st)))

    async def _close_health(self) -> None:
        health, self.health = self.health, None
        if health is not None:
            await health.stop()

    async def broker_lost(self, why: str) -> None:
        health, self.health = self.health, None  # its broker is gone: nothing to flush
        if health is not None:
            try:
                await asyncio.wait_for(health.stop(), 5)
            except (Exception, asyncio.TimeoutError):
                pass

    async def broker_back(self) -> None:
        await self._open_health()

    async def launch(self) -> None:
        from arena.broker import free_port
        from arena.exchanges.coinbase.protocol import COINBASE_REST_URL, COINBASE_WS_URL
        from arena.tools_service import SERVED

        arena, sup, market, headless = self.arena, self.sup, self.arena.market, self.headless
        replay = market.source == "recording"
        kafka = ["--bootstrap-servers", self.kafka.bootstrap_servers]
        web = None
        if arena.web is not None:  # from the start, so the page holds the whole run
            from arena.web import web_command

            web = sup.start(
                "web", [*web_command(arena.web.port, kafka), "--max-quote-age", f"{arena.tools.max_quote_age:g}"]
            )
        products = ["--products", *market.products]
        sim = None
        if market.source == "live":
            ws, rest = COINBASE_WS_URL, COINBASE_REST_URL
        elif market.source == "simulator":
            port = free_port()
            sim = sup.start(
                "market-sim",
                ["-m", "arena.cli", "market-sim", "--port", str(port), "--seed", str(arena.seed), *products],
            )
            ws, rest = f"ws://127.0.0.1:{port}", f"http://127.0.0.1:{port}"
        policy = None
        if any(c.offline for c in arena.chat_nodes):  # starts while the simulator does
            policy_port = free_port()
            policy = sup.start(
                "policy-server",
                ["-m", "arena.cli", "policy-server", "--port", str(policy_port), "--seed", str(arena.seed)],
            )
        if sim is not None:
            await sup.wait_ready(sim)
            status(f"market simulator ready ({ws})")
        if replay:  # started last, so every agent sees the recording from its first snapshot
            self.conn_args = [
                "coinbase_connector.py",
                *kafka,
                "--replay",
                str(market.recording),
                "--speed",
                f"{market.speed:g}",
            ]
        else:
            self.conn_args = [
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
            self.conn = sup.start("connector", self.conn_args)
        tools_args = [
            "tools_and_dashboard.py",
            *kafka,
            "--ledger",
            self.ledger,
            "--export",
            self.export,
            "--log-file",
            str(self.run_dir / "tools.log"),
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
        if self.conn is not None:
            await sup.wait_ready(self.conn, timeout=90)
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
        self.tools = sup.start("tools", tools_args, foreground=not headless)
        if headless or replay:  # headless, its READY is in its log; with the dashboard, on the terminal
            await sup.wait_ready(self.tools, marker="READY" if headless else SERVED)
            if headless:
                status("tools ready; trading")
        if web is not None:
            from arena.web import web_url

            await sup.wait_ready(web)
            if headless:
                status(f"web page: {web_url(web.log_tail(200))}")
        if replay:
            self.conn = sup.start("connector", self.conn_args)
            if headless:
                status(f"replaying {market.recording} at {f'{market.speed:g}x' if market.speed else 'full speed'}")

    async def serve(self, stop: asyncio.Event) -> int:
        sup, conn, headless = self.sup, self.conn, self.headless
        replay = self.arena.market.source == "recording"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.opts.duration if self.opts.duration else None
        code = 0
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
                if c is self.tools:
                    stop.set()
                    code = 1
            if deadline and loop.time() >= deadline:
                break
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except asyncio.TimeoutError:
                pass
        return code

    async def stop(self) -> None:
        if self.sup is not None:
            self.sup.stop_all(order=["router", "chat", "tools", "connector", "web"])
        await self._close_health()

    async def finish(self, code: int, *, served: bool) -> int:
        if self.output_watch is not None:
            self.output_watch.cancel()
        if Path(self.export).exists():
            # with the dashboard, the tools process printed the final standings itself
            if self.headless and not Console.check():
                try:
                    print_leaderboard(self.export)
                    sys.stdout.flush()
                except OSError:
                    Console.lose()
            status(f"leaderboard written to {self.export}")
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
    add_run_args(p, from_file=True)
    p.add_argument(
        "--check",
        action="store_true",
        help="only check the file: print what it would start, or every problem, and exit",
    )
    return p.parse_args(argv)


def build(argv) -> ArenaService | int:
    """Read and check the file (no part starts on a bad one); the arena to run, or an exit code."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = parse_args(argv)
    arena = load_or_say(args.file, "arena up")
    if isinstance(arena, int):
        return arena
    if args.run_dir is not None:
        arena.output.run_dir = args.run_dir
    if args.check:
        print(f"{args.file}: ok\n{summary(arena)}")
        return 0
    return ArenaService(arena, run_options(args))


def main(argv=None) -> int:
    """Ctrl-C (or SIGTERM, SIGHUP) at any moment stops the arena quietly (arena.service.main): before the
    event loop (reading the file), while it comes up, and once it runs, every part started so far
    stopped in order."""
    return service.main(lambda: build(argv))
