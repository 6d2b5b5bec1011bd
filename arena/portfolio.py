"""Money types: Trade (one fill or rejection), Position, Account — and the pure arithmetic that
derives accounts from the trade log. No I/O here; the ledger stores trades, this folds them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, Field, computed_field, model_validator

from arena.market import Quote
from arena.wire import MAX_ID, PRODUCT_ID_RE, AgentName, Amount, AwareTime, Finite, Seq, Text, utcnow

INITIAL_CASH = 100_000.0

# The one side type: the tools' schema advertises the enum; " BUY " from a live tool node's own
# validation is read as "buy".
Side = Annotated[Literal["buy", "sell"], BeforeValidator(lambda v: v.strip().lower() if isinstance(v, str) else v)]


class Trade(BaseModel):
    """One execute_trade outcome. Fills change money; rejections are recorded for visibility only."""

    trade_id: Annotated[
        str, Field(min_length=1, max_length=MAX_ID)
    ]  # idempotency key: the tool call id (a redelivered call maps to the same trade)
    agent: AgentName
    product_id: Annotated[str, Field(max_length=100)]  # a product id on a fill; on a rejection, what was asked for
    side: Side
    quantity: Finite  # base units (e.g. BTC)
    # The average fill price in quote currency: the best ask (buys) or bid (sells), worsened by the desk's
    # impact model for the part of the order beyond the top-of-book size (docs/METRICS.md); 0 for rejections.
    price: Amount = 0.0
    fee: Amount = 0.0
    top_price: Amount | None = Field(
        None, description="The best ask (buy) or bid (sell) the fill walked from, quote currency per base unit."
    )
    top_size: Amount | None = Field(
        None, description="The size quoted at that price, base units; null: unknown (no impact applied)."
    )
    slippage: Amount = Field(
        0.0, description="What the walk beyond the top of book cost, quote currency: quantity x |price - top_price|."
    )
    status: Literal["filled", "rejected"] = "filled"
    reason: Text = ""  # why a rejection was rejected
    quote_age_s: Amount | None = None  # age of the quote the fill used
    tick_seq: Seq | None = None  # the snapshot seq the quote came with, if known
    executed_at: AwareTime = Field(default_factory=utcnow)
    latency_ms: Finite | None = None  # tool-call receipt -> fill

    @model_validator(mode="after")
    def _a_fill_is_a_real_trade(self) -> Trade:
        if self.status == "filled":
            if not PRODUCT_ID_RE.match(self.product_id):
                raise ValueError(f"a fill of {self.product_id!r}, which is not a product id")
            if self.price <= 0 or self.quantity <= 0:
                raise ValueError(
                    f"a fill needs a positive price and quantity (price {self.price}, quantity {self.quantity})"
                )
        return self

    @property
    def notional(self) -> float:
        return self.quantity * self.price

    @computed_field
    @property
    def slippage_bps(self) -> float:
        """The slippage in basis points of the order's value at the top of book (0 without a top price)."""
        top = self.quantity * (self.top_price or 0.0)
        return self.slippage / top * 10_000 if top > 0 else 0.0


class Position(BaseModel):
    product_id: str
    quantity: float = 0.0
    avg_cost: float = 0.0  # per unit, fees included
    opened_at: datetime | None = None  # quantity-weighted average time of acquisition

    def market_value(self, quote: Quote | None) -> float:
        """Marked at the best bid: what the position would fetch now."""
        mark = mark_price(quote) or self.avg_cost
        return self.quantity * mark

    def unrealized_pnl(self, quote: Quote | None) -> float:
        return self.market_value(quote) - self.quantity * self.avg_cost


class Account(BaseModel):
    agent: str
    cash: float = INITIAL_CASH
    positions: dict[str, Position] = Field(default_factory=dict)
    realized_pnl: float = 0.0
    fees_paid: float = 0.0
    slippage_paid: float = 0.0  # what fills paid beyond the top of book (already inside cash and the P&Ls)
    trades: int = 0  # fills
    rejected: int = 0
    first_trade_at: datetime | None = None
    last_fill_at: datetime | None = None  # the latest fill's time (the desk's cooldown counts from it)

    def total_value(self, quotes: dict[str, Quote]) -> float:
        return self.cash + sum(p.market_value(quotes.get(pid)) for pid, p in self.positions.items())

    def unrealized_pnl(self, quotes: dict[str, Quote]) -> float:
        return sum(p.unrealized_pnl(quotes.get(pid)) for pid, p in self.positions.items())

    def return_pct(self, quotes: dict[str, Quote]) -> float:
        return (self.total_value(quotes) / INITIAL_CASH - 1.0) * 100.0

    def apply(self, trade: Trade) -> None:
        """Fold one trade into the account (the only place money moves)."""
        if trade.status != "filled":
            self.rejected += 1
            return
        self.trades += 1
        self.first_trade_at = self.first_trade_at or trade.executed_at
        self.last_fill_at = max(self.last_fill_at or trade.executed_at, trade.executed_at)
        self.fees_paid += trade.fee
        self.slippage_paid += trade.slippage
        pos = self.positions.get(trade.product_id) or Position(product_id=trade.product_id)
        if trade.side == "buy":
            cost = trade.notional + trade.fee
            self.cash -= cost
            new_qty = pos.quantity + trade.quantity
            pos.avg_cost = (pos.quantity * pos.avg_cost + cost) / new_qty
            if pos.opened_at is None or pos.quantity <= 0:
                pos.opened_at = trade.executed_at
            else:  # quantity-weighted average acquisition time
                w = trade.quantity / new_qty
                pos.opened_at = pos.opened_at + (trade.executed_at - pos.opened_at) * w
            pos.quantity = new_qty
        else:
            proceeds = trade.notional - trade.fee
            self.cash += proceeds
            self.realized_pnl += proceeds - trade.quantity * pos.avg_cost
            pos.quantity -= trade.quantity
        if pos.quantity <= 1e-12:
            self.positions.pop(trade.product_id, None)
        else:
            self.positions[trade.product_id] = pos


def mark_price(quote: Quote | None) -> float | None:
    if quote is None:
        return None
    return quote.best_bid if quote.best_bid is not None else quote.price


def replay(trades: list[Trade]) -> dict[str, Account]:
    """Accounts derived from a trade log, in log order."""
    accounts: dict[str, Account] = {}
    for t in trades:
        accounts.setdefault(t.agent, Account(agent=t.agent)).apply(t)
    return accounts
