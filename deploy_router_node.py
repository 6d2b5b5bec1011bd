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
import sys
from pathlib import Path

from arena import service
from arena.config import add_kafka_args, kafka_settings
from arena.router import AGENT_NAME_RE, market_group
from arena.strategies import strategy_prompt
from arena.tool_names import TOOL_NAMES

# ---------------------------------------------------------------------------------------------------
# The agent's system prompt: its strategy's prose below (plain text, edit freely; no limits here), then
# "Risk rules (hard limits)" generated from arena/strategies.py's STRATEGY_LIMITS (the desk enforces
# those same numbers), then HOUSE_RULES (how the arena, the tools and the turn work, shared by every
# strategy; edit freely). In this order `arena demo` hands the strategies out to its agents.
# ---------------------------------------------------------------------------------------------------

STRATEGIES: dict[str, str] = {
    "momentum": """\
You are a momentum trader managing a paper account in a trading competition.
Objective: ride short-term trends and get out quickly when they fade.
How you decide: a product has momentum when its last three 1-minute closes rise, its price is above
the average close of its last six 5-minute candles, and the 15-minute trend is not down. Buy those.
Exit a position when two 1-minute candles close lower in a row, when price drops below that 5-minute
average, or when it is 2% below its average cost (stop loss). Prefer the strongest mover; do nothing
when nothing moves. Enter with 10-15% of total account value per order.""",
    "scalper": """\
You are a scalper managing a paper account in a trading competition.
Objective: many small gains from short moves, never a big loss.
How you decide: trade only products whose spread is tight compared with their recent 1-minute range.
Enter only when the expected move (recent 1-minute range) is at least three times the round-trip cost
(spread plus fees on both sides). Take profit at +0.3% over average cost, cut at -0.2%, and close any
position held longer than about 10 minutes (get_portfolio shows the average time held).""",
    "brainrot": """\
You are an extremely online meme-coin degen managing a paper account in a trading competition. You
love FARTCOIN, you believe in green candles, and you write your closing sentence in internet slang.
Objective: catch the big meme pumps without blowing up the account.
How you decide: FARTCOIN-USD first. Ape in when its last 1-minute candles are green and volume is
rising; take profit into spikes of 4% or more above your average cost; cut a position 5% below it
("ngmi"). BTC and SOL are boomer coins: hold them only as a small parking spot. The hard limits
below bind even a degen.""",
    "default": """\
You are a disciplined crypto trader managing a paper account in a trading competition.
Objective: grow total account value steadily and finish ahead of buy-and-hold with smaller drawdowns.
How you decide: read the 15-minute candles for the trend and the 5- and 1-minute candles for timing.
Buy a product when its trend is up and the last minutes confirm it; trim or exit when the trend turns
or a position falls 3% below its average cost; take partial profit on a position up 5% or more.
Holding is a valid decision when nothing is clear.""",
}

HOUSE_RULES = """\

How the arena works:
- Each turn you get one market snapshot: for every product the last price, best bid, best ask, spread
  and the age of its quote, then 15-, 5- and 1-minute candles (oldest first). Your account started
  with $100,000 in cash. Positions are marked at the best bid.
- Each turn's prompt also shows your account exactly as get_portfolio() returns it: cash, positions,
  P&L, fees and the risk limits. Trade from it; call get_portfolio only when the prompt says the account
  is not known or not valued at this snapshot. execute_trade(product_id, side, quantity) buys at the
  best ask or sells at the best bid. calculator(expression) does arithmetic: use it for order sizes
  instead of mental math.
- Tool calls you send together run in parallel and in no particular order: never send get_portfolio
  next to execute_trade and expect it to show that trade.
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
        f"the shared tools ({', '.join(TOOL_NAMES)}) and takes one turn per newest market "
        "snapshot. Ticks that arrive while a turn runs are skipped, never queued.",
        epilog="environment: ARENA_AGENT_KEY, this agent's key from the tools' --agent-keys file: each turn then "
        "carries a proof that it is this agent's, and tools started with --agent-keys refuse calls without one. "
        "ARENA_FEED_KEY: drop market snapshots not signed with it (set it on the connector too).",
    )
    p.add_argument(
        "--name",
        required=True,
        help="agent name: its account, its consumer group, its colour (letters, digits, - and _)",
    )
    p.add_argument(
        "--chat-node-name",
        default="default",
        help="the chat node this agent thinks with (deploy_chat_node.py --name; default %(default)s)",
    )
    strategy = p.add_mutually_exclusive_group()
    strategy.add_argument(
        "--strategy",
        default="default",
        choices=sorted(STRATEGIES),
        help="strategy prompt: prose in STRATEGIES at the top of this file, limits in arena/strategies.py (default %(default)s)",
    )
    strategy.add_argument(
        "--strategy-file",
        type=Path,
        default=None,
        metavar="PATH",
        help="strategy prompt from this text file instead (plain text, like the STRATEGIES; the house rules follow it as for those); the agent's strategy is named after the file",
    )
    p.add_argument(
        "--turn-timeout",
        type=float,
        default=60.0,
        help="seconds one turn (all model and tool calls) may take before it is abandoned (default %(default)s)",
    )
    service.add_service_args(p)
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
    if not args.turn_timeout > 0:
        p.error("--turn-timeout must be positive")
    return args


def setup_logging(level: str) -> None:
    from arena.kafka import BriefFormatter, BriefRecordErrors

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(BriefFormatter(level == "DEBUG"))
    logging.basicConfig(level=level, handlers=[handler])
    service.quiet_libraries(level)
    # Garbage on the agent's inbox: one short line, not the whole record.
    logging.getLogger("arena.router.faststream").addFilter(BriefRecordErrors(tracebacks=level == "DEBUG"))


def report(decision) -> None:
    """One stdout line per finished turn."""
    d = decision
    if d.status == "started":
        return
    head = f"{d.agent} #{d.tick_seq} {d.status}"
    if d.status == "done":
        service.status(f"{head} in {d.latency_s:.2f}s: {' '.join(d.output.split())[:200]}")
    elif d.status == "skipped":
        service.status(f"{head}: {d.reason}")
    else:
        service.status(f"{head} after {d.latency_s:.2f}s: {d.reason}")


class Agent(service.Service):
    """One trading agent, run by arena.service: a fresh Router for each start attempt."""

    log = logging.getLogger("arena.router")

    def __init__(self, args: argparse.Namespace):
        super().__init__(kafka_settings(args), args.connect_timeout)
        self.args, self.what, self.router = args, f"agent '{args.name}'", None

    async def start(self) -> None:
        from arena.chat import RemoteChatModel
        from arena.router import Router

        a = self.args
        model = RemoteChatModel(
            a.chat_node_name,
            self.kafka,
            timeout_s=a.turn_timeout,  # no model call outlives its turn
            ack_timeout_s=min(10.0, a.turn_timeout / 2),  # a missing chat node is reported well within a turn
        )
        self.router = Router(
            name=a.name,
            system_prompt=strategy_prompt(a.strategy, a.prompt) + HOUSE_RULES,
            model_client=model,
            kafka=self.kafka,
            chat_node=a.chat_node_name,
            strategy=a.strategy,
            turn_timeout_s=a.turn_timeout,
            on_decision=report,
        )
        await self.router.start()

    async def stop(self) -> None:
        if self.router is not None:
            await self.router.stop()

    async def serve(self, stop: asyncio.Event) -> int:
        await self.router.run(stop)
        return 0

    def ready(self, elapsed_s: float) -> str:
        a = self.args
        return (
            f"READY agent '{a.name}' serving in {elapsed_s:.1f}s: market group {market_group(a.name)}, "
            f"tools {'/'.join(TOOL_NAMES)}, chat node '{a.chat_node_name}'"
        )

    def startup_failed(self, exc) -> None:
        service.error(f"{exc} (is the broker at {self.kafka.bootstrap_servers} running?)")

    def interrupted(self) -> None:
        service.status("Interrupted during start-up.")

    def stopping(self) -> str:
        return f"Stopping agent '{self.args.name}' ..."

    async def finish(self, code: int, *, served: bool) -> int:
        if served:
            service.status("Stopped.")
        return code


def build(argv: list[str] | None) -> Agent:
    args = parse_args(argv)
    setup_logging(args.log_level)
    service.status(f"Starting agent '{args.name}' (strategy {args.strategy}, chat node '{args.chat_node_name}') ...")
    # calfkit takes seconds to import: do it before the connect timeout starts counting.
    import arena.chat  # noqa: F401
    from arena.router import preload_calfkit

    preload_calfkit()
    return Agent(args)


def main(argv: list[str] | None = None) -> int:
    return service.main(lambda: build(argv))


if __name__ == "__main__":
    sys.exit(main())
