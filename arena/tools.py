"""The arena's three shared tools, deployed once (by tools_and_dashboard.py) and used by every agent.

The caller is always `ToolContext.agent_name` (the calling agent's node id): no tool takes an agent
argument, and the schemas forbid extra arguments, so an agent can only see and trade its own account.
The desk (quotes, validation, ledger) is a worker resource under the key DESK; see `provide_desk`.
Bad input never raises out of a tool: the model gets a result saying what was wrong.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from calfkit import ToolContext, Worker, agent_tool
from pydantic import WithJsonSchema

from arena import auth
from arena.calc import calculate
from arena.desk import Desk, OutcomeUnknown
from arena.market import utcnow
from arena.portfolio import INITIAL_CASH, Side
from arena.tool_names import TOOL_NAMES

__all__ = ["INITIAL_CASH", "TOOLS", "calculator", "execute_trade", "get_portfolio", "provide_desk"]

DESK = "desk"  # the worker resource key the tools read the desk from

# Advertised as a number, but whatever arrives ("1e3", null for NaN, 1e308) reaches the desk, which
# rejects it with a reason the model reads and the dashboard shows, instead of a schema error.
Quantity = Annotated[Any, WithJsonSchema({"type": "number"})]


def call_key(ctx: ToolContext) -> str:
    """The idempotency key of this tool call.

    Model tool-call ids are not unique (a deterministic model may say "call_1" every turn), so the key
    also carries the agent, the run's correlation id and the turn (message count). A redelivered call
    carries the same state, hence the same key.
    """
    return f"{ctx.agent_name}|{ctx.correlation_id}|{len(ctx.messages)}|{ctx.tool_call_id}"


def reacted_to(ctx: ToolContext) -> datetime | None:
    """When the snapshot the calling agent is deciding on was published (its router says so in the
    run's deps); None if not said, or not a time."""
    value = ctx.deps.get("reacted_to") if isinstance(ctx.deps, dict) else None
    try:
        at = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return at if at is not None and at.tzinfo is not None else None


def _proven(ctx: ToolContext) -> None:
    """Refuse a call whose agent name is no agent's, or (with --agent-keys) that its router did not prove."""
    if why := auth.AGENT_KEYS.refusal(ctx.agent_name, ctx.correlation_id, ctx.deps):
        raise PermissionError(f"call refused: {why}")


def _desk(ctx: ToolContext, tool: str) -> Desk:
    desk = ctx.resources.get(DESK)
    if desk is None:
        raise RuntimeError("trading tools are hosted without a desk: run them with tools_and_dashboard.py")
    if not ctx.agent_name:
        raise PermissionError("these tools serve agents only (no calling agent on this request)")
    _proven(ctx)
    desk.note_call(ctx.agent_name, tool, reacted_to(ctx))
    return desk


@agent_tool
async def execute_trade(ctx: ToolContext, product_id: str, side: Side, quantity: Quantity) -> dict:
    """Buy or sell a crypto product for your own paper account, at the current top of book.

    A buy fills at the best ask, a sell at the best bid, of the latest market snapshot, for as much as
    the book shows there; the rest of a larger order fills at a worse price (slippage, growing with
    the size beyond the top), and every fill pays the taker fee (get_portfolio shows both rates). You
    can only sell what you hold (no shorting) and only buy what your cash covers (fees and slippage
    included). Orders that break a rule or a risk limit (get_portfolio lists them) are rejected with
    the reason and change nothing. Returns the average fill price, the top of book, the slippage,
    quantity, notional, fee, your cash and position after the trade, and the age of the quote used.

    Args:
        product_id: The product to trade, e.g. "BTC-USD".
        side: "buy" or "sell".
        quantity: Amount of the base currency (e.g. BTC for BTC-USD), a positive multiple of the
            product's minimum increment (1e-8 for BTC-USD, 0.1 for FARTCOIN-USD).
    """
    received_at = utcnow()
    deps = ctx.deps if isinstance(ctx.deps, dict) else {}  # the router's: turn deadline, strategy (its limits)
    return _desk(ctx, "execute_trade").execute_trade(
        ctx.agent_name,
        product_id,
        side,
        quantity,
        call_key=call_key(ctx),
        received_at=received_at,
        deadline=deps.get("deadline"),
        strategy=deps.get("strategy"),
        turn=ctx.correlation_id,
    )


@agent_tool
async def get_portfolio(ctx: ToolContext) -> dict:
    """Show your own account: cash, each position (quantity, average cost, market value at the best
    bid, unrealized P&L, average time held), realized P&L, fees and slippage paid, total value and
    return since the start, the fee and impact rates, and the risk limits the desk enforces on your
    orders."""
    strategy = ctx.deps.get("strategy") if isinstance(ctx.deps, dict) else None
    return _desk(ctx, "get_portfolio").portfolio(ctx.agent_name, strategy)


@agent_tool
async def calculator(ctx: ToolContext, expression: str) -> str:
    """Evaluate an arithmetic expression, e.g. "0.25 * 100000 / 97123.5".

    Supports numbers, + - * / // % **, comparisons, parentheses, pi, e and the functions abs, round,
    min, max, sqrt, log, log10, exp, floor, ceil, pow. Returns the result, or a line starting with
    "error:".

    Args:
        expression: The expression to evaluate.
    """
    if ctx.agent_name and DESK in ctx.resources:
        _proven(ctx)
        ctx.resources[DESK].note_call(ctx.agent_name, "calculator", reacted_to(ctx))
    return calculate(expression)


TOOLS = [execute_trade, get_portfolio, calculator]
assert tuple(t.name for t in TOOLS) == TOOL_NAMES, "arena/tool_names.py names every tool, in this order"


def _fault_to_result(ctx: Any, fault: Any) -> dict:
    """Any failure inside a tool (even an argument a discovered schema let through) comes back to the
    model as an error result, so the agent's run goes on. The desk raises only when its log shows the
    call changed nothing, or OutcomeUnknown when it cannot tell."""
    message = getattr(fault, "message", None) or str(fault)
    unknown = isinstance(getattr(ctx, "exception", None), OutcomeUnknown)
    return {
        "status": "error",
        "error": f"the tool failed: {message[:500]}{'' if unknown else '. Nothing was changed.'}",
    }


for _tool in TOOLS:
    _tool.on_node_error(_fault_to_result)


def provide_desk(worker: Worker, desk: Desk) -> None:
    """Make `desk` the DESK resource of every node hosted by `worker`."""

    @worker.resource(DESK)
    async def _desk_resource(ctx):
        yield desk
