"""Money types: Fill and Rejection (the two outcomes of an order), Position, Account — and the pure
arithmetic that derives accounts from the trade log. No I/O here; the ledger stores outcomes, this folds them."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Literal, Union

from pydantic import BaseModel, BeforeValidator, Discriminator, Field, Tag, TypeAdapter, computed_field
from typing_extensions import TypeAliasType

from arena.market import Quote
from arena.wire import MAX_ID, AgentName, Amount, AwareTime, Finite, Price, ProductId, Seq, Text, utcnow

INITIAL_CASH = 100_000.0

# The one side type: the tools' schema advertises the enum; " BUY " from a live tool node's own
# validation is read as "buy".
Side = Annotated[Literal["buy", "sell"], BeforeValidator(lambda v: v.strip().lower() if isinstance(v, str) else v)]


# The idempotency key of an outcome: the tool call id (a redelivered call maps to the same outcome).
TradeId = Annotated[str, Field(min_length=1, max_length=MAX_ID)]


class Fill(BaseModel):
    """An executed order: it moves money (Account.apply)."""

    trade_id: TradeId
    agent: AgentName
    product_id: ProductId
    side: Side
    quantity: Price  # base units (e.g. BTC)
    # The average fill price in quote currency: the best ask (buys) or bid (sells), worsened by the desk's
    # impact model for the part of the order beyond the top-of-book size (docs/METRICS.md).
    price: Price
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
    status: Literal["filled"] = "filled"
    quote_age_s: Amount | None = None  # age of the quote the fill used
    tick_seq: Seq | None = None  # the snapshot seq the quote came with, if known
    executed_at: AwareTime = Field(default_factory=utcnow)
    latency_ms: Finite | None = None  # tool-call receipt -> fill

    @property
    def notional(self) -> float:
        return self.quantity * self.price

    @computed_field
    @property
    def slippage_bps(self) -> float:
        """The slippage in basis points of the order's value at the top of book (0 without a top price)."""
        top = self.quantity * (self.top_price or 0.0)
        return self.slippage / top * 10_000 if top > 0 else 0.0


class Rejection(BaseModel):
    """A refused order, kept for visibility: it moves no money (Account.rejected counts it)."""

    trade_id: TradeId
    agent: AgentName
    product_id: Annotated[str, Field(max_length=100)]  # what was asked for, not necessarily a product
    side: Side
    quantity: Finite  # what was asked for, base units
    status: Literal["rejected"]  # required: a record without `status` is a fill
    reason: Text = ""  # why it was refused
    tick_seq: Seq | None = None  # the snapshot seq of the quote it was judged on, if known
    executed_at: AwareTime = Field(default_factory=utcnow)
    latency_ms: Finite | None = None  # tool-call receipt -> rejection


def _status(v: object) -> object:
    # A record without `status` is a fill, as it always was (the field defaults to "filled").
    return v.get("status", "filled") if isinstance(v, dict) else getattr(v, "status", None)


# What the trades topic and the ledger hold: a Fill or a Rejection, told apart by `status`. Readers
# validate with this (parse_outcome, arena.kafka.decode(TradeOutcome, ...)), never with one of the two.
TradeOutcome = TypeAliasType(
    "TradeOutcome",
    Annotated[Union[Annotated[Fill, Tag("filled")], Annotated[Rejection, Tag("rejected")]], Discriminator(_status)],
)
_OUTCOMES: TypeAdapter[Fill | Rejection] = TypeAdapter(TradeOutcome)


def parse_outcome(raw: str | bytes) -> Fill | Rejection:
    """A trade log row or trades-topic record as its type; raises ValidationError when it is neither."""
    return _OUTCOMES.validate_json(raw)


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

    def fold(self, outcome: Fill | Rejection) -> None:
        """Fold one logged outcome: a fill moves money, a rejection is only counted."""
        if isinstance(outcome, Fill):
            self.apply(outcome)
        else:
            self.rejected += 1

    def apply(self, fill: Fill) -> None:
        """Fold one fill into the account (the only place money moves)."""
        if not isinstance(fill, Fill):  # checked before anything changes: a rejection must never move money
            raise TypeError(f"only a Fill moves money, not a {type(fill).__name__}")
        self.trades += 1
        self.first_trade_at = self.first_trade_at or fill.executed_at
        self.last_fill_at = max(self.last_fill_at or fill.executed_at, fill.executed_at)
        self.fees_paid += fill.fee
        self.slippage_paid += fill.slippage
        pos = self.positions.get(fill.product_id) or Position(product_id=fill.product_id)
        if fill.side == "buy":
            cost = fill.notional + fill.fee
            self.cash -= cost
            new_qty = pos.quantity + fill.quantity
            pos.avg_cost = (pos.quantity * pos.avg_cost + cost) / new_qty
            if pos.opened_at is None or pos.quantity <= 0:
                pos.opened_at = fill.executed_at
            else:  # quantity-weighted average acquisition time
                w = fill.quantity / new_qty
                pos.opened_at = pos.opened_at + (fill.executed_at - pos.opened_at) * w
            pos.quantity = new_qty
        else:
            proceeds = fill.notional - fill.fee
            self.cash += proceeds
            self.realized_pnl += proceeds - fill.quantity * pos.avg_cost
            pos.quantity -= fill.quantity
        if pos.quantity <= 1e-12:
            self.positions.pop(fill.product_id, None)
        else:
            self.positions[fill.product_id] = pos


def mark_price(quote: Quote | None) -> float | None:
    if quote is None:
        return None
    return quote.best_bid if quote.best_bid is not None else quote.price


def replay(outcomes: Iterable[Fill | Rejection]) -> dict[str, Account]:
    """Accounts derived from a trade log, in log order."""
    accounts: dict[str, Account] = {}
    for o in outcomes:
        accounts.setdefault(o.agent, Account(agent=o.agent)).fold(o)
    return accounts
