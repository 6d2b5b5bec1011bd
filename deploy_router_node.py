#!/usr/bin/env python
"""Deploy one trading agent: a calfkit Agent that thinks through a named chat node and trades with the
shared tools, one turn per newest market snapshot (never a backlog).

    uv run deploy_router_node.py --name alice --strategy momentum --chat-node-name gpt

Every step the agent takes goes to the shared activity topic (see response_viewer.py); every turn's
outcome goes to the decisions topic. Prints READY once the agent and its market feed are up.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from pathlib import Path

from arena.config import add_kafka_args, kafka_settings
from arena.reconnect import BrokerWatch, restart_in_place
from arena.router import AGENT_NAME_RE, market_group
from arena.startup import StartupFailed, start_patiently
from arena.strategies import strategy_prompt

# ---------------------------------------------------------------------------------------------------
# Strategy prompts: plain text, edit freely. The agent's system prompt is STRATEGIES[name], then its
# "Risk rules (hard limits)" generated from arena/strategies.py STRATEGY_LIMITS (the desk enforces
# those same numbers: change a limit there, not here), then HOUSE_RULES (how the arena, the tools and
# the turn work — shared by every strategy).
# ---------------------------------------------------------------------------------------------------

STRATEGIES = {
    "default": """\
You are a disciplined crypto trader managing a paper account in a trading competition.
Objective: grow total account value steadily and finish ahead of buy-and-hold with smaller drawdowns.
How you decide: read the 15-minute candles for the trend and the 5- and 1-minute candles for timing.
Buy a product when its trend is up and the last minutes confirm it; trim or exit when the trend turns
or a position falls 3% below its average cost; take partial profit on a position up 5% or more.
Holding is a valid decision when nothing is clear.""",
    "momentum": """\
You are a momentum trader managing a paper account in a trading competition.
Objective: ride short-term trends and get out quickly when they fade.
How you decide: a product has momentum when its last three 1-minute closes rise, its price is above
the average close of its last six 5-minute candles, and the 15-minute trend is not down. Buy those.
Exit a position when two 1-minute candles close lower in a row, when price drops below that 5-minute
average, or when it is 2% below its average cost (stop loss). Prefer the strongest mover; do nothing
when nothing moves. Enter with 10-15% of total account value per order.""",
    "brainrot": """\
You are an extremely online meme-coin degen managing a paper account in a trading competition. You
love FARTCOIN, you believe in green candles, and you write your closing sentence in internet slang.
Objective: catch the big meme pumps without blowing up the account.
How you decide: FARTCOIN-USD first. Ape in when its last 1-minute candles are green and volume is
rising; take profit into spikes of 4% or more above your average cost; cut a position 5% below it
("ngmi"). BTC and SOL are boomer coins: hold them only as a small parking spot. The hard limits
below bind even a degen.""",
    "scalper": """\
You are a scalper managing a paper account in a trading competition.
Objective: many small gains from short moves, never a big loss.
How you decide: trade only products whose spread is tight compared with their recent 1-minute range.
Enter only when the expected move (recent 1-minute range) is at least three times the round-trip cost
(spread plus fees on both sides). Take profit at +0.3% over average cost, cut at -0.2%, and close any
position held longer than about 10 minutes (get_portfolio shows the average time held).""",
}

HOUSE_RULES = """\

How the arena works:
- Each turn you get one market snapshot: for every product the last price, best bid, best ask, spread
  and the age of its quote, then 15-, 5- and 1-minute candles (oldest first). Your account started
  with $100,000 in cash. Positions are marked at the best bid.
- Tools: get_portfolio() shows your cash, positions, P&L and fees. execute_trade(product_id, side,
  quantity) buys at the best ask or sells at the best bid. calculator(expression) does arithmetic: use
  it for order sizes instead of mental math.
- Call get_portfolio first, alone, and read its result before trading. Tool calls you send together
  run in parallel and in no particular order: never send get_portfolio next to execute_trade and
  expect it to show that trade.
- quantity is in base units (BTC for BTC-USD), not dollars: size = dollars / ask, rounded DOWN to the
  product's increment (see execute_trade's description). Every fill pays the spread and may pay a fee:
  do not churn.
- Never trade a product whose quote is marked STALE. You cannot short: sell only what you hold.
- A rejected order returns the reason and changes nothing: fix the order or move on; never resend it
  unchanged.
- End every turn with exactly one short sentence of reasoning: what you did and why."""



def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="deploy_router_node.py",
        description="Run one trading agent: a calfkit Agent that thinks through a named chat node, trades with "
        "the shared tools (execute_trade, get_portfolio, calculator) and takes one turn per newest market "
        "snapshot. Ticks that arrive while a turn runs are skipped, never queued.",
        epilog="environment: ARENA_AGENT_KEY, this agent's key from the tools' --agent-keys file: each turn then "
        "carries a proof that it is this agent's, and tools started with --agent-keys refuse calls without one. "
        "ARENA_FEED_KEY: drop market snapshots not signed with it (set it on the connector too).",
    )
    p.add_argument("--name", required=True, help="agent name: its account, its consumer group, its colour (letters, digits, - and _)")
    p.add_argument("--chat-node-name", default="default", help="the chat node this agent thinks with (deploy_chat_node.py --name; default %(default)s)")
    strategy = p.add_mutually_exclusive_group()
    strategy.add_argument("--strategy", default="default", choices=sorted(STRATEGIES), help="strategy prompt, from STRATEGIES at the top of this file (default %(default)s)")
    strategy.add_argument("--strategy-file", type=Path, default=None, metavar="PATH", help="strategy prompt from this text file instead (plain text, like the STRATEGIES; the house rules follow it as for those); the agent's strategy is named after the file")
    p.add_argument("--turn-timeout", type=float, default=60.0, help="seconds one turn (all model and tool calls) may take before it is abandoned (default %(default)s)")
    p.add_argument("--connect-timeout", type=float, default=60.0, metavar="SECONDS", help="seconds to keep trying to start (broker not there yet, or just restarted and refusing) before giving up; once running, a broker that goes away is waited for without limit (default %(default)s)")
    p.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log level of the libraries' messages on stderr (default %(default)s)")
    add_kafka_args(p)
    args = p.parse_args(argv)
    if not AGENT_NAME_RE.match(args.name):
        p.error(f"--name {args.name!r}: use 1-64 letters, digits, '-' or '_' (it becomes part of Kafka topic names)")
    args.prompt = STRATEGIES[args.strategy]
    if args.strategy_file is not None:
        try:
            args.prompt = args.strategy_file.read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            p.error(f"--strategy-file: cannot read {args.strategy_file}: {getattr(exc, 'strerror', None) or exc}")
        if not args.prompt:
            p.error(f"--strategy-file: {args.strategy_file} is empty")
        args.strategy = args.strategy_file.stem
    if not args.turn_timeout > 0 or not args.connect_timeout > 0:
        p.error("--turn-timeout and --connect-timeout must be positive")
    return args


def setup_logging(level: str) -> None:
    from arena.kafka import BriefFormatter, BriefRecordErrors

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(BriefFormatter(level == "DEBUG"))
    logging.basicConfig(level=level, handlers=[handler])
    # Garbage on the agent's inbox: one short line, not the whole record.
    logging.getLogger("arena.router.faststream").addFilter(BriefRecordErrors(tracebacks=level == "DEBUG"))


def status(msg: str) -> None:
    print(msg, flush=True)


def report(decision) -> None:
    """One stdout line per finished turn."""
    d = decision
    if d.status == "started":
        return
    head = f"{d.agent} #{d.tick_seq} {d.status}"
    if d.status == "done":
        status(f"{head} in {d.latency_s:.2f}s: {' '.join(d.output.split())[:200]}")
    elif d.status == "skipped":
        status(f"{head}: {d.reason}")
    else:
        status(f"{head} after {d.latency_s:.2f}s: {d.reason}")


async def serve(args: argparse.Namespace) -> int:
    from arena.chat import RemoteChatModel
    from arena.router import Router

    kafka = kafka_settings(args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def make_router() -> Router:
        model = RemoteChatModel(
            args.chat_node_name,
            kafka,
            timeout_s=args.turn_timeout,  # no model call outlives its turn
            ack_timeout_s=min(10.0, args.turn_timeout / 2),  # a missing chat node is reported well within a turn
        )
        return Router(
            name=args.name,
            system_prompt=strategy_prompt(args.strategy, args.prompt) + HOUSE_RULES,
            model_client=model,
            kafka=kafka,
            chat_node=args.chat_node_name,
            strategy=args.strategy,
            turn_timeout_s=args.turn_timeout,
            on_decision=report,
        )

    began = time.monotonic()
    router: Router | None = None
    # A broker that goes away or comes back empty (in-memory) is met by restarting this process in place.
    watch = BrokerWatch(kafka, lambda why: (status(f"{why}: restarting agent '{args.name}' in place"), stop.set()), stop=stop)

    async def attempt() -> None:
        nonlocal router
        router = make_router()
        await router.start()
        await watch.start()

    async def undo() -> None:
        await watch.stop()
        if router is not None:
            await router.stop()

    status(f"Connecting to Kafka at {kafka.bootstrap_servers} ...")
    try:
        if not await start_patiently(attempt, undo, stop=stop, timeout_s=args.connect_timeout, what=f"agent '{args.name}'", status=status):
            status("Interrupted during start-up.")
            return 0
    except StartupFailed as exc:
        print(f"error: {exc} (is the broker at {kafka.bootstrap_servers} running?)", file=sys.stderr)
        return 1
    status(f"READY agent '{args.name}' serving in {time.monotonic() - began:.1f}s: market group {market_group(args.name)}, "
           f"tools execute_trade/get_portfolio/calculator, chat node '{args.chat_node_name}'")
    code = 0
    try:
        await router.run(stop)
    except Exception as exc:
        logging.getLogger("arena.router").exception("agent loop failed")
        print(f"error: agent '{args.name}' stopped: {exc}", file=sys.stderr)
        code = 1
    await watch.stop()
    if watch.replaced:  # every Kafka client here talks to a broker that is gone: nothing to stop gracefully
        restart_in_place(watch)
    status(f"Stopping agent '{args.name}' ...")
    await router.stop()
    status("Stopped.")
    return code


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level)
    signal.signal(signal.SIGTERM, _interrupt)  # like Ctrl-C until the event loop takes the signals over
    status(f"Starting agent '{args.name}' (strategy {args.strategy}, chat node '{args.chat_node_name}') ...")
    try:
        # calfkit takes seconds to import: do it before the connect timeout starts counting.
        import arena.chat  # noqa: F401
        from arena.router import preload_calfkit

        preload_calfkit()
        return asyncio.run(serve(args))
    except KeyboardInterrupt:  # a signal before the handlers were installed
        return 0


if __name__ == "__main__":
    sys.exit(main())
