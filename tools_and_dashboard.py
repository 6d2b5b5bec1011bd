"""The shared trading tools (execute_trade, get_portfolio, calculator) for every agent, the durable
ledger behind them, and the live dashboard.

    python tools_and_dashboard.py --bootstrap-servers localhost:9092 --ledger arena_ledger.db

Prints READY once the tools are served. Ctrl-C (or SIGTERM) leaves the live screen, prints the final
standings and writes --export.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from concurrent.futures import ThreadPoolExecutor

from arena import service
from arena.config import add_kafka_args, kafka_settings
from arena.desk import DEFAULT_FEE_BPS, DEFAULT_IMPACT_BPS
from arena.tool_names import TOOL_NAMES


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Serve the arena's shared trading tools to every agent, keep the money in a durable "
        "SQLite ledger, and show the live dashboard. Each agent gets a $100,000 paper account on its first call.",
    )
    add_kafka_args(p)
    p.add_argument(
        "--ledger",
        default="arena_ledger.db",
        help="SQLite ledger file, the store of record; reopened on restart (default %(default)s)",
    )
    p.add_argument(
        "--sync",
        choices=["normal", "full"],
        default="normal",
        help="ledger durability: normal survives the process being killed; full also survives power loss "
        "(an fsync per trade, several times slower) (default %(default)s)",
    )
    p.add_argument(
        "--max-quote-age",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="refuse trades on a quote older than this (default %(default)s)",
    )
    p.add_argument(
        "--fee-bps",
        type=float,
        default=DEFAULT_FEE_BPS,
        help="taker fee in basis points of the notional, charged on every fill; the default is Coinbase Advanced "
        "Trade's lowest-volume tier (docs/METRICS.md); 0 turns fees off (default %(default)s)",
    )
    p.add_argument(
        "--impact-bps",
        type=float,
        default=DEFAULT_IMPACT_BPS,
        metavar="BPS",
        help="price impact: the part of an order beyond the best bid/ask size fills this many basis points worse "
        "for every further top-of-book size (linear; docs/METRICS.md); a quote without a size: no impact; "
        "0 turns it off (default %(default)s)",
    )
    g = p.add_argument_group(
        "risk limits",
        "arena-wide defaults the desk enforces on every order (a rejection names the rule and the numbers); "
        "an agent whose router names a strategy gets that strategy's own limits (arena/strategies.py) and these for any "
        "rule it leaves unset. Percentages are of the agent's total value at the best bids. Default: no limit",
    )
    g.add_argument(
        "--max-order-pct",
        type=float,
        default=None,
        metavar="PCT",
        help="one buy's notional, at most this %% of total value",
    )
    g.add_argument(
        "--max-position-pct",
        type=float,
        default=None,
        metavar="PCT",
        help="one product's value after a buy, at most this %% of total value",
    )
    g.add_argument(
        "--max-invested-pct",
        type=float,
        default=None,
        metavar="PCT",
        help="all positions' value after a buy, at most this %% of total value",
    )
    g.add_argument(
        "--min-cash-pct",
        type=float,
        default=None,
        metavar="PCT",
        help="cash after a buy, at least this %% of total value",
    )
    g.add_argument(
        "--max-orders-per-turn", type=int, default=None, metavar="N", help="filled orders per agent turn (one run)"
    )
    g.add_argument(
        "--cooldown",
        type=float,
        default=None,
        metavar="SECONDS",
        help="seconds an agent waits from one fill to its next order",
    )
    p.add_argument(
        "--no-dashboard",
        action="store_true",
        help="headless: log lines and periodic standings instead of the live dashboard",
    )
    p.add_argument(
        "--export",
        default=None,
        metavar="PATH",
        help="write the leaderboard JSON here on exit (Ctrl-C or SIGTERM), and every 5 s while the dashboard "
        "is on screen: standings, metrics (docs/METRICS.md), the buy-and-hold baseline row, process health "
        "(default: none)",
    )
    p.add_argument(
        "--max-workers",
        type=int,
        default=8,
        help="tool calls each tool runs concurrently (calfkit Worker max_workers; default %(default)s)",
    )
    p.add_argument(
        "--log-file",
        default="runs/tools.log",
        help="where logs go while the live dashboard is on screen (default %(default)s)",
    )
    p.add_argument(
        "--status-every",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="headless: seconds between standings lines (default %(default)s)",
    )
    service.add_service_args(p, log_level=False)  # logs: INFO, the headless mode's output
    p.add_argument(
        "--agent-keys",
        default=None,
        metavar="FILE",
        help="agent name -> key (a JSON object or TOML table); then a tool call is served only with a proof "
        "from that agent's router (its env ARENA_AGENT_KEY), and agents not in the file cannot trade "
        "(default: none; names are still checked). Market data: env ARENA_FEED_KEY, as on the connector",
    )
    args = p.parse_args(argv)
    if args.agent_keys is not None:
        from arena import auth

        try:
            auth.AGENT_KEYS.keys = auth.load_agent_keys(args.agent_keys)
        except (OSError, ValueError) as exc:
            p.error(f"--agent-keys: {exc}")
    if args.max_quote_age <= 0:
        p.error("--max-quote-age must be positive")
    if not 0 <= args.fee_bps < 10_000:
        p.error("--fee-bps must be between 0 and 10000")
    if not 0 <= args.impact_bps < 10_000:
        p.error("--impact-bps must be between 0 and 10000")
    if args.max_workers < 1:
        p.error("--max-workers must be at least 1")
    from arena.strategies import Limits

    try:
        args.limits = Limits(
            max_order_pct=args.max_order_pct,
            max_position_pct=args.max_position_pct,
            max_invested_pct=args.max_invested_pct,
            min_cash_pct=args.min_cash_pct,
            max_orders_per_turn=args.max_orders_per_turn,
            cooldown_s=args.cooldown,
        )
    except ValueError as exc:
        flags = {
            "max_order_pct": "--max-order-pct",
            "max_position_pct": "--max-position-pct",
            "max_invested_pct": "--max-invested-pct",
            "min_cash_pct": "--min-cash-pct",
            "max_orders_per_turn": "--max-orders-per-turn",
            "cooldown_s": "--cooldown",
        }
        field, _, why = str(exc).partition(" ")
        p.error(f"{flags.get(field, field)} {why}")
    return args


def setup_logging() -> None:
    # To stderr; while the live dashboard is on screen it sends them to --log-file instead.
    from arena.kafka import BriefFormatter, BriefRecordErrors

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(BriefFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    for noisy in ("calfkit", "faststream", "aiokafka", "ktables", "arena.tools.faststream"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    logging.getLogger("arena.tools.faststream").addFilter(BriefRecordErrors())  # garbage on a tool's inbox: one line


class ToolsProcess(service.Service):
    """The tools, the ledger behind them and the dashboard, run by arena.service."""

    what = "the tools"
    restart_note = " (the ledger keeps every account)"
    log = logging.getLogger("arena.tools")

    def __init__(self, args: argparse.Namespace, ledger):
        from arena.dashboard import AgentActivity, ArenaState, LiveDashboard
        from arena.desk import Desk, QuoteBook
        from arena.market import utcnow
        from arena.metrics import MetricsTracker
        from arena.strategies import limits_line
        from arena.tools_service import ToolsService

        super().__init__(kafka_settings(args), args.connect_timeout)
        self.args, self.ledger, self.fatal = args, ledger, []  # fatal: a feed task that kept failing
        # Leaderboard metrics (docs/METRICS.md): the whole log now, then every trade and snapshot via the state.
        metrics = MetricsTracker(fee_bps=args.fee_bps)
        for trade in ledger.trades():
            metrics.on_trade(trade)
        for name in ledger.accounts():
            metrics.on_agent(name)
        self.state = ArenaState(
            max_quote_age_s=args.max_quote_age,
            fee_bps=args.fee_bps,
            impact_bps=args.impact_bps,
            metrics=metrics,
            log_path=None if args.no_dashboard else args.log_file,
            export_path=args.export,
            limits=limits_line(args.limits),
        )
        # Model usage (tokens, dollars) is kept in the ledger per finished turn: restored here, recorded as
        # each Decision arrives, so a restarted process shows the totals it had.
        for name, usage in ledger.usage().items():
            usage.add_to(self.state.activity.setdefault(name, AgentActivity(first_seen=utcnow())))
        show_decision = self.state.on_decision
        # Written in a thread of its own: a stalled disk must not stall the event loop that serves the tools.
        self.usage_writer = ThreadPoolExecutor(1, thread_name_prefix="usage")

        def kept(future) -> None:
            if future.exception() is not None:  # the screen still counts it; only a restart would lose it
                self.log.error("could not keep a turn's model usage in the ledger: %r", future.exception())

        def on_decision(decision, **kw):
            if decision.status != "started" and decision.model_calls:
                self.usage_writer.submit(ledger.record_usage, decision).add_done_callback(kept)
            show_decision(decision, **kw)

        self.state.on_decision = on_decision
        self.desk = Desk(
            ledger,
            QuoteBook(),
            fee_bps=args.fee_bps,
            impact_bps=args.impact_bps,
            max_quote_age_s=args.max_quote_age,
            limits=args.limits,
        )
        self.tools = ToolsService(
            self.kafka,
            self.desk,
            max_workers=args.max_workers,
            state=self.state,
            on_fatal=lambda exc: (self.fatal.append(exc), self.stop_requested.set()),
        )
        self.dashboard = LiveDashboard(
            self.state, ledger.accounts, print_final=False
        )  # final standings: after the drain

    async def start(self) -> None:
        await self.tools.start()

    async def stop(self) -> None:
        if self.args.export:  # written again after the drain; this one survives a stop cut short (SIGKILL)
            from arena.dashboard import leaderboard, write_export

            write_export(self.args.export, leaderboard(self.state, self.ledger.accounts()))
        await self.tools.stop()

    def connecting(self) -> str:
        return f"Connecting to Kafka at {self.kafka.bootstrap_servers} and serving the tools ..."

    def ready(self, elapsed_s: float) -> str:
        a = self.args
        return (
            f"READY: {', '.join(TOOL_NAMES)} served in {elapsed_s:.2f}s "
            f"(ledger {a.ledger}, fee {a.fee_bps:g} bps, impact {a.impact_bps:g} bps per top size, max quote age {a.max_quote_age:g}s, "
            f"arena-wide limits: {' '.join(a.limits.sentences()) or 'none'})"
        )

    def startup_failed(self, exc) -> None:
        service.status(f"error: {exc} (is Kafka reachable at {self.kafka.bootstrap_servers}?)")

    def serve_failed(self, exc: Exception) -> None:
        self.log.exception("tools process failed")
        service.status(f"error: {exc}")

    async def serve(self, stop: asyncio.Event) -> int:
        from arena.tools_service import headless, standings_line

        accounts = self.ledger.accounts
        if self.args.no_dashboard:
            await headless(
                stop,
                lambda: self.state.sample(accounts()),
                lambda: standings_line(accounts(), self.desk.quotes.quotes()),
                self.args.status_every,
            )
        else:
            try:
                await self.dashboard.run(stop)
            except OSError as exc:
                from arena import lifeline

                if not lifeline.output_gone(1):
                    raise
                # The terminal hung up (a closed window) or its reader quit: stop in order, as on Ctrl-C.
                self.log.info("the dashboard's terminal is gone (%s): stopping", exc)
                stop.set()
            await stop.wait()
        if self.fatal:
            service.status(f"error: {self.fatal[0]}")
            return 1
        return 0

    def abandon(self) -> None:
        self.usage_writer.shutdown(wait=True, cancel_futures=True)
        self.ledger.close()

    def stopping(self) -> str:
        return "Stopping: finishing in-flight tool calls ..."

    async def finish(self, code: int, *, served: bool) -> int:
        from arena.dashboard import final_standings_table, leaderboard, write_export

        args, accounts = self.args, self.ledger.accounts
        if args.export:
            write_export(args.export, leaderboard(self.state, accounts()))
        if args.no_dashboard:
            self.dashboard.console.print(final_standings_table(self.state, accounts()))
            if args.export:
                service.status(f"Leaderboard written to {args.export}")
        else:
            self.dashboard.console.print(self.dashboard.final_standings())
        self.usage_writer.shutdown(wait=True)  # the last turns' usage is in the ledger before it closes
        self.ledger.close()
        return code


def build(argv: list[str] | None) -> ToolsProcess | int:
    args = parse_args(argv)
    setup_logging()
    from arena.ledger import Ledger, LedgerLocked

    service.status(f"Opening ledger {args.ledger} ...")
    try:  # first: a second tools process on this ledger stops here, before any other work
        ledger = Ledger(args.ledger, synchronous=args.sync)
    except LedgerLocked as exc:  # two writers would spend the same cash twice
        service.status(f"error: {exc}; one tools process per ledger: stop that one, or pass another --ledger")
        return 1
    service.status(f"  {len(ledger.accounts())} accounts, {len(ledger)} trades restored")
    import arena.tools  # noqa: F401 - calfkit takes seconds to import: not on the connect timeout's clock

    return ToolsProcess(args, ledger)


def main(argv: list[str] | None = None) -> int:
    return service.main(lambda: build(argv))


if __name__ == "__main__":
    sys.exit(main())
