"""The shared trading tools (execute_trade, get_portfolio, calculator) for every agent, the durable
ledger behind them, and the live dashboard.

    python tools_and_dashboard.py --bootstrap-servers localhost:9092 --ledger arena_ledger.db

Prints READY once the tools are served. Ctrl-C (or SIGTERM) leaves the live screen, prints the final
standings and writes --export.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys

from arena.config import add_kafka_args, kafka_settings
from arena.reconnect import BrokerWatch, restart_in_place
from arena.startup import StartupFailed, start_patiently


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Serve the arena's shared trading tools to every agent, keep the money in a durable "
        "SQLite ledger, and show the live dashboard. Each agent gets a $100,000 paper account on its first call.",
    )
    add_kafka_args(p)
    p.add_argument("--ledger", default="arena_ledger.db",
                   help="SQLite ledger file, the store of record; reopened on restart (default %(default)s)")
    p.add_argument("--sync", choices=["normal", "full"], default="normal",
                   help="ledger durability: normal survives the process being killed; full also survives power loss "
                   "(an fsync per trade, several times slower) (default %(default)s)")
    p.add_argument("--max-quote-age", type=float, default=30.0, metavar="SECONDS",
                   help="refuse trades on a quote older than this (default %(default)s)")
    p.add_argument("--fee-bps", type=float, default=0.0,
                   help="trading fee in basis points of the notional, charged on every fill (default %(default)s)")
    g = p.add_argument_group(
        "risk limits", "arena-wide defaults the desk enforces on every order (a rejection names the rule and the numbers); "
        "an agent whose router names a strategy gets that strategy's own limits (arena/strategies.py) and these for any "
        "rule it leaves unset. Percentages are of the agent's total value at the best bids. Default: no limit")
    g.add_argument("--max-order-pct", type=float, default=None, metavar="PCT", help="one buy's notional, at most this %% of total value")
    g.add_argument("--max-position-pct", type=float, default=None, metavar="PCT",
                   help="one product's value after a buy, at most this %% of total value")
    g.add_argument("--max-invested-pct", type=float, default=None, metavar="PCT",
                   help="all positions' value after a buy, at most this %% of total value")
    g.add_argument("--min-cash-pct", type=float, default=None, metavar="PCT", help="cash after a buy, at least this %% of total value")
    g.add_argument("--max-orders-per-turn", type=int, default=None, metavar="N", help="filled orders per agent turn (one run)")
    g.add_argument("--cooldown", type=float, default=None, metavar="SECONDS",
                   help="seconds an agent waits from one fill to its next order")
    p.add_argument("--no-dashboard", action="store_true",
                   help="headless: log lines and periodic standings instead of the live dashboard")
    p.add_argument("--export", default=None, metavar="PATH",
                   help="write the leaderboard JSON here on exit (Ctrl-C or SIGTERM), and every 5 s while the dashboard "
                   "is on screen: standings, metrics (docs/METRICS.md), the buy-and-hold baseline row, process health "
                   "(default: none)")
    p.add_argument("--max-workers", type=int, default=8,
                   help="tool calls each tool runs concurrently (calfkit Worker max_workers; default %(default)s)")
    p.add_argument("--log-file", default="runs/tools.log",
                   help="where logs go while the live dashboard is on screen (default %(default)s)")
    p.add_argument("--status-every", type=float, default=30.0, metavar="SECONDS",
                   help="headless: seconds between standings lines (default %(default)s)")
    p.add_argument("--connect-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="seconds to keep trying to serve the tools (broker not there yet, or just restarted) before giving up; once running, a broker that goes away is waited for without limit (default %(default)s)")
    p.add_argument("--agent-keys", default=None, metavar="FILE",
                   help="agent name -> key (a JSON object or TOML table); then a tool call is served only with a proof "
                   "from that agent's router (its env ARENA_AGENT_KEY), and agents not in the file cannot trade "
                   "(default: none; names are still checked). Market data: env ARENA_FEED_KEY, as on the connector")
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
    if args.max_workers < 1:
        p.error("--max-workers must be at least 1")
    from arena.strategies import Limits

    try:
        args.limits = Limits(max_order_pct=args.max_order_pct, max_position_pct=args.max_position_pct,
                             max_invested_pct=args.max_invested_pct, min_cash_pct=args.min_cash_pct,
                             max_orders_per_turn=args.max_orders_per_turn, cooldown_s=args.cooldown)
    except ValueError as exc:
        flags = {"max_order_pct": "--max-order-pct", "max_position_pct": "--max-position-pct", "max_invested_pct": "--max-invested-pct",
                 "min_cash_pct": "--min-cash-pct", "max_orders_per_turn": "--max-orders-per-turn", "cooldown_s": "--cooldown"}
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


def status(msg: str) -> None:
    print(msg, flush=True)


async def run(args: argparse.Namespace) -> int:
    from arena.ledger import Ledger, LedgerLocked

    kafka = kafka_settings(args)
    status(f"Opening ledger {args.ledger} ...")
    try:  # first: a second tools process on this ledger stops here, before any other work
        ledger = Ledger(args.ledger, synchronous=args.sync)
    except LedgerLocked as exc:  # two writers would spend the same cash twice
        status(f"error: {exc}; one tools process per ledger: stop that one, or pass another --ledger")
        return 1

    from arena.dashboard import ArenaState, LiveDashboard, final_standings_table, leaderboard, write_export
    from arena.desk import Desk, QuoteBook
    from arena.metrics import MetricsTracker
    from arena.tools_service import ToolsService, headless, standings_line

    status(f"  {len(ledger.accounts())} accounts, {len(ledger)} trades restored")
    # Leaderboard metrics (docs/METRICS.md): the whole log now, then every trade and snapshot via the state.
    metrics = MetricsTracker(fee_bps=args.fee_bps)
    for trade in ledger.trades():
        metrics.on_trade(trade)
    for name in ledger.accounts():
        metrics.on_agent(name)
    state = ArenaState(max_quote_age_s=args.max_quote_age, fee_bps=args.fee_bps, metrics=metrics,
                       log_path=None if args.no_dashboard else args.log_file, export_path=args.export)
    desk = Desk(ledger, QuoteBook(), fee_bps=args.fee_bps, max_quote_age_s=args.max_quote_age, limits=args.limits)
    stop = asyncio.Event()
    fatal: list[BaseException] = []  # a feed task that kept failing: stop, and exit non-zero
    service = ToolsService(kafka, desk, max_workers=args.max_workers, state=state,
                           on_fatal=lambda exc: (fatal.append(exc), stop.set()))
    dashboard = LiveDashboard(state, ledger.accounts, print_final=False)  # final standings: after the drain

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    import arena.tools  # noqa: F401 - calfkit takes seconds to import: not on the connect timeout's clock

    code = 0
    # A broker that goes away or comes back empty (in-memory) is met by restarting this process in place.
    watch = BrokerWatch(kafka, lambda why: (status(f"{why}: restarting the tools process in place (the ledger keeps "
                                                   "every account)"), stop.set()), stop=stop)

    async def attempt() -> None:
        await service.start()
        await watch.start()

    async def undo() -> None:
        await watch.stop()
        await service.stop()

    began = loop.time()
    try:
        status(f"Connecting to Kafka at {kafka.bootstrap_servers} and serving the tools ...")
        try:
            if not await start_patiently(attempt, undo, stop=stop, timeout_s=args.connect_timeout, what="the tools", status=status):
                return 0
        except StartupFailed as exc:
            status(f"error: {exc} (is Kafka reachable at {kafka.bootstrap_servers}?)")
            return 1
        status(f"READY: execute_trade, get_portfolio, calculator served in {loop.time() - began:.2f}s "
               f"(ledger {args.ledger}, fee {args.fee_bps:g} bps, max quote age {args.max_quote_age:g}s, "
               f"arena-wide limits: {' '.join(args.limits.sentences()) or 'none'})")
        if args.no_dashboard:
            await headless(stop, lambda: state.sample(ledger.accounts()),
                           lambda: standings_line(ledger.accounts(), desk.quotes.quotes()), args.status_every)
        else:
            await dashboard.run(stop)
            await stop.wait()
        if fatal:
            status(f"error: {fatal[0]}")
            code = 1
    except Exception as exc:
        logging.getLogger("arena.tools").exception("tools process failed")
        status(f"error: {exc}")
        code = 1
    finally:
        await watch.stop()
        if watch.replaced:  # every Kafka client here talks to a broker that is gone: nothing to stop gracefully
            ledger.close()
            restart_in_place(watch)
        status("Stopping: finishing in-flight tool calls ...")
        await service.stop()
        if args.export:
            write_export(args.export, leaderboard(state, ledger.accounts()))
        if args.no_dashboard:
            dashboard.console.print(final_standings_table(state, ledger.accounts()))
            if args.export:
                status(f"Leaderboard written to {args.export}")
        else:
            dashboard.console.print(dashboard.final_standings())
        ledger.close()
    return code


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # until the loop's handlers take over: exit quietly
    try:
        code = asyncio.run(run(args))
    except KeyboardInterrupt:  # a signal before the handlers were installed
        return 0
    # All is flushed and closed: spare the interpreter's final garbage collection of this large heap
    # (calfkit, pydantic), which kept the process alive 3-17 s after Ctrl-C on a busy 2-core machine.
    gc.freeze()
    return code


if __name__ == "__main__":
    sys.exit(main())
