"""The offline policy server with one more model, `one-trade`: the turn of the side-by-side comparison
with the reference build (bench/README.md), model -> one execute_trade -> model, no get_portfolio.

    python -m bench.one_trade --port 0        # the policy server's own options

On a snapshot with an odd number it buys ~$100 of BTC-USD, on an even one it sells the same amount
(the benchmarks alternate the ticks so); once the trade's result is in, a one-line text ends the turn.
"""

from __future__ import annotations

import re
import sys

from arena.policies import Order, increment, round_down
from arena.sim import policy

MODEL = "one-trade"
PRODUCT = "BTC-USD"
NOTIONAL = 100.0
_SNAPSHOT_NO = re.compile(r"\(snapshot #(-?\d+)\)")


def plan_one_trade(turn: policy.Turn, tools: dict[str, dict]) -> policy.Reply:
    if turn.calls_to("execute_trade") or turn.model_turns >= 2:
        return policy.Reply(f"{MODEL}: done for this tick.")
    quote = turn.market.quotes.get(PRODUCT) if turn.market else None
    if quote is None or not quote.ask or "execute_trade" not in tools:
        return policy.Reply(f"{MODEL}: nothing to trade.")
    number = _SNAPSHOT_NO.search(turn.prompt)
    side = "buy" if number is None or int(number[1]) % 2 else "sell"
    qty = round_down(NOTIONAL / quote.ask, increment(PRODUCT, quote.ask))
    order = Order(PRODUCT, side, qty, "bench one-trade turn")
    return policy.Reply(
        f"{MODEL}: {side} {qty:.10g} {PRODUCT}",
        [("execute_trade", policy.trade_arguments(order, tools["execute_trade"]))],
    )


def install() -> None:
    plan = policy.plan

    def plan_(model: str, turn: policy.Turn, tools: dict[str, dict], seed: int) -> policy.Reply:
        return plan_one_trade(turn, tools) if model == MODEL else plan(model, turn, tools, seed)

    policy.plan = plan_
    policy.POLICIES = (*policy.POLICIES, MODEL)  # completion() accepts the model name


if __name__ == "__main__":
    install()
    sys.exit(policy.main())
