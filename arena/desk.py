"""The trading desk: the latest quotes, order validation and execution against the ledger.

Pure logic (no Kafka): the tools process feeds it snapshots and tool calls; tests drive it directly.
Buys fill at the best ask, sells at the best bid, of the latest quote this process has seen; the part
of an order beyond the size quoted there fills at a worse price (the impact model, `walk`), and every
fill pays the taker fee. Every outcome, fill or rejection, is logged with the call's idempotency key; a
repeated key returns the logged result and changes nothing.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation, localcontext

from arena import exchanges, fmt
from arena.exchanges.coinbase.products import KNOWN as KNOWN_PRODUCTS
from arena.ledger import DuplicateCall, Ledger
from arena.market import Quote, base_currency, utcnow
from arena.portfolio import INITIAL_CASH, Account, Fill, Rejection, mark_price
from arena.quotes import QuoteBook
from arena.strategies import STRATEGY_LIMITS, Limits

log = logging.getLogger(__name__)

MAX_QUANTITY = 1e12  # no product in the arena trades anywhere near this many units
MAX_ECHO = 40  # characters of a hostile argument echoed back / logged
LIMIT_SLACK = 1e-9  # relative: an order exactly at a limit passes despite float rounding
# Coinbase Advanced Trade's taker fee in its lowest tier (under $1K of 30-day volume): 1.20%. The
# schedule and where it is published: docs/METRICS.md "Fees and slippage".
DEFAULT_FEE_BPS = 120.0
# The impact model: the price worsens by this many basis points of the top price for every further
# top-of-book size of quantity beyond the top (docs/METRICS.md "Fees and slippage").
DEFAULT_IMPACT_BPS = 1.0
MAX_WALK_PCT = 10.0  # an order whose last unit would fill further than this from the top is refused


def walk(top: float, size: float | None, quantity: float, impact_bps: float) -> float:
    """The slippage, in quote currency, of taking `quantity` against a top of book of `size` at `top`.

    The first `size` units fill at `top`; beyond them the price moves away from `top` linearly, by
    impact_bps of `top` per further `size` units: unit s beyond the top fills at
    top x (1 +/- impact_bps/10,000 x s/size). Over x = quantity - size units that adds
    top x impact_bps/10,000 x x**2 / (2 x size). A buy's average price is top + slippage/quantity, a
    sell's top - slippage/quantity. An unknown (None) or non-positive size: no impact.
    """
    if size is None or size <= 0 or quantity <= size or impact_bps <= 0:
        return 0.0
    beyond = quantity - size
    return top * impact_bps / 10_000 * beyond * beyond / (2 * size)


def walk_pct(size: float | None, quantity: float, impact_bps: float) -> float:
    """How far from the top, in %, the last unit of `quantity` fills (0 within the top or without a size)."""
    if size is None or size <= 0 or quantity <= size:
        return 0.0
    return impact_bps / 100 * (quantity - size) / size


def _echo(value: object) -> str:
    try:
        text = repr(value)
    except ValueError:  # an int beyond Python's digit limit for str()
        return f"<a {type(value).__name__} too long to show>"
    return text if len(text) <= MAX_ECHO else text[: MAX_ECHO - 3] + "..."


def _decimals(increment: float) -> int:
    return max(0, -Decimal(repr(increment)).normalize().as_tuple().exponent)


def _usd(x: float) -> float:
    return round(x, 2)


def _qty(q: float, increment: float) -> float:
    """A quantity without float noise, at the product's precision."""
    return round(q, _decimals(increment))


def _show_qty(q: float, increment: float) -> str:
    """A quantity written out at the product's precision (no exponent, no rounding up): one a model can send back."""
    return f"{q:.{_decimals(increment)}f}".rstrip("0").rstrip(".") or "0"


def _held(since: datetime | None, now: datetime) -> str:
    if since is None:
        return ""
    s = int((now - since).total_seconds())
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def unit(product_id: str) -> str:
    """The base currency: 'BTC' for BTC-USD."""
    return base_currency(product_id)


class Rejected(Exception):
    """An order that must not execute; the message is for the model."""


class OutcomeUnknown(Exception):
    """A call failed and the ledger could not be read to tell whether its order was recorded."""


class Desk:
    """Validates and executes orders for the calling agent, one at a time."""

    def __init__(
        self,
        ledger: Ledger,
        quotes: QuoteBook | None = None,
        *,
        fee_bps: float = DEFAULT_FEE_BPS,
        impact_bps: float = DEFAULT_IMPACT_BPS,
        max_quote_age_s: float = 30.0,
        increments: dict[str, float] | None = None,
        on_trade: Callable[[Fill | Rejection], None] | None = None,
        on_call: Callable[[str, str, datetime | None], None] | None = None,
        limits: Limits | None = None,
        strategy_limits: dict[str, Limits] | None = None,
    ):
        if not (math.isfinite(fee_bps) and 0 <= fee_bps < 10_000):
            raise ValueError("fee_bps must be between 0 and 10000")
        if not (math.isfinite(impact_bps) and 0 <= impact_bps < 10_000):
            raise ValueError("impact_bps must be between 0 and 10000")
        if not (math.isfinite(max_quote_age_s) and max_quote_age_s > 0):
            raise ValueError("max_quote_age_s must be positive")
        self.ledger = ledger
        self.quotes = quotes or QuoteBook()
        self.fee_bps = fee_bps
        self.impact_bps = impact_bps
        self.max_quote_age_s = max_quote_age_s
        self.increments = dict(increments or {})  # overrides of the venue's product records
        self.on_trade = on_trade or (lambda trade: None)
        self.on_call = on_call or (lambda agent, tool, reacted_to: None)
        self.limits = limits or Limits()  # arena-wide: for rules a strategy leaves unset, and unknown strategies
        self.strategy_limits = STRATEGY_LIMITS if strategy_limits is None else strategy_limits
        # The orders-per-turn and cooldown limits read the ledger (fills per turn, each account's last fill):
        # a restarted process enforces them as the one before it did.
        # Money mutations are serialized: validation reads the account, the fill changes it.
        self._lock = threading.Lock()

    # -- accounts --------------------------------------------------------------------------------

    def note_call(self, agent: str, tool: str, reacted_to: datetime | None = None) -> Account:
        """Every tool call starts here: the caller's account is created on its first call. reacted_to:
        when the snapshot the caller is deciding on was published, if known."""
        acct, created = self.ledger.open_account(agent, reacted_to=reacted_to)
        if created:
            log.info("opened account for %s with %s", agent, fmt.money(INITIAL_CASH))
        self._notify(self.on_call, agent, tool, reacted_to)
        return acct

    def limits_for(self, strategy: object) -> tuple[str | None, Limits]:
        """(the strategy's name if it has limits of its own, the limits in force for it)."""
        if isinstance(strategy, str) and strategy in self.strategy_limits:
            return strategy, self.strategy_limits[strategy].over(self.limits)
        return None, self.limits

    def increment(self, product_id: str) -> float:
        return self.increments.get(product_id) or exchanges.base_increment(product_id)

    def products(self) -> list[str]:
        return sorted(set(self.quotes.quotes()) | set(KNOWN_PRODUCTS))

    # -- trading ---------------------------------------------------------------------------------

    def execute_trade(
        self,
        agent: str,
        product_id: object,
        side: object,
        quantity: object,
        *,
        call_key: str | None = None,
        received_at: datetime | None = None,
        deadline: object = None,
        strategy: object = None,
        turn: object = None,
    ) -> dict:
        """Fill or reject one order for `agent`; returns the result for the model (never raises for bad input).

        `call_key` is the idempotency key: a key already in the ledger returns the logged result.
        `deadline`: the turn's deadline in epoch seconds, as the router put it in the run's deps; a call
        arriving after it is refused (nobody waits for its result). Not a finite number: no deadline.
        `strategy`: the caller's strategy (its limits apply, see arena.strategies); `turn`: the run it
        belongs to (for the orders-per-turn limit).
        """
        received_at = received_at or utcnow()
        call_key = call_key or uuid.uuid4().hex
        try:
            result, outcome = self._execute(
                agent,
                product_id,
                side,
                quantity,
                call_key,
                received_at,
                deadline,
                strategy,
                turn if isinstance(turn, str) else None,
            )
        except Exception as exc:
            # Raise only if the log shows that nothing happened: the tool then tells the model that nothing changed.
            try:
                done = self.ledger.find(call_key)
            except Exception:
                raise OutcomeUnknown(
                    f"{_echo(exc)}; whether this order was recorded is unknown: see get_portfolio"
                ) from exc
            if done is None:
                raise
            log.exception(
                "call %s from %s failed after its outcome was recorded; answering from the log", call_key, agent
            )
            return {**done.result, "warning": f"an error followed the recording of this order: {_echo(exc)}"}
        if outcome is not None:
            self._notify(self.on_trade, outcome)
        return result

    def _notify(self, observer: Callable, *args) -> None:
        """An observer (dashboard, trades topic) that fails must not fail a call whose outcome is logged."""
        try:
            observer(*args)
        except Exception:
            log.exception("observer %s failed", getattr(observer, "__name__", observer))

    def _execute(
        self,
        agent: str,
        product_id: object,
        side: object,
        quantity: object,
        call_key: str,
        received_at: datetime,
        deadline: object,
        strategy: object = None,
        turn: str | None = None,
    ) -> tuple[dict, Fill | Rejection | None]:
        """(result, the outcome just logged or None)."""
        with self._lock:
            done = self.ledger.find(call_key)
            if done is not None:
                log.info("duplicate call %s from %s: returning the logged result", call_key, agent)
                return done.result, None
            acct, _ = self.ledger.open_account(agent)
            pid = product_id.strip().upper() if isinstance(product_id, str) else product_id
            sd = side.strip().lower() if isinstance(side, str) else side
            if sd not in ("buy", "sell"):
                # An outcome cannot carry an unknown side; the schema of the tool already refuses this.
                return _rejection(f"side must be 'buy' or 'sell', not {_echo(side)}"), None
            try:
                fill = self._fill(acct, call_key, pid, sd, quantity, received_at, _finite(deadline), strategy, turn)
            except Rejected as why:
                outcome: Fill | Rejection = Rejection(
                    trade_id=call_key,
                    agent=agent,
                    product_id=pid if isinstance(pid, str) and len(pid) <= MAX_ECHO else _echo(product_id),
                    side=sd,
                    quantity=_finite(quantity) or 0.0,
                    status="rejected",
                    reason=str(why),
                    executed_at=_now(),
                    latency_ms=(utcnow() - received_at).total_seconds() * 1000,
                )
                result = _rejection(str(why))
            else:
                # The result states the account as it will be: fold the fill into a cheap copy (only
                # the traded position is copied; apply() replaces the positions dict entry it touches).
                pos = acct.positions.get(fill.product_id)
                after = acct.model_copy(update={"positions": {pos.product_id: pos.model_copy()} if pos else {}})
                after.apply(fill)
                result = self._fill_result(after, fill)
                outcome = fill
            try:
                self.ledger.record(call_key, outcome, result, turn=turn)
            except DuplicateCall:  # written by someone else between find() and record()
                return self.ledger.find(call_key).result, None
        return result, outcome

    def _fill(
        self,
        acct: Account,
        call_key: str,
        pid: object,
        side: str,
        quantity: object,
        received_at: datetime,
        deadline: float | None = None,
        strategy: object = None,
        turn: str | None = None,
    ) -> Fill:
        if deadline is not None and (late := time.time() - deadline) > 0:
            raise Rejected(f"turn deadline passed {late:.1f}s ago: the router gave up on this turn")
        if not isinstance(pid, str) or pid not in self.products():
            raise Rejected(f"unknown product {_echo(pid)}; tradable products: {', '.join(self.products())}")
        inc = self.increment(pid)
        q = _check_quantity(quantity, inc, pid)
        quote = self.quotes.get(pid)
        if quote is None:
            raise Rejected(f"no quote for {pid} yet; wait for the next market snapshot")
        age = quote.age_s()
        if quote.stale:
            raise Rejected(f"the {pid} quote is marked stale (the feed has not updated it); wait for a fresh one")
        if age > self.max_quote_age_s:
            raise Rejected(
                f"the latest {pid} quote is {age:.0f}s old (limit {self.max_quote_age_s:g}s); wait for a fresh one"
            )
        buy = side == "buy"
        top = quote.best_ask if buy else quote.best_bid
        if top is None or not math.isfinite(top) or top <= 0:
            raise Rejected(f"no {'ask' if buy else 'bid'} price for {pid} right now")
        size = quote.ask_size if buy else quote.bid_size
        fee_rate = self.fee_bps / 10_000

        def avg(x: float) -> float:  # the average price of x units: the top, then the walk beyond it
            slip = walk(top, size, x, self.impact_bps) / x
            return top + slip if buy else top - slip

        def notional(x: float) -> float:
            return x * avg(x)

        def cost(x: float) -> float:  # a buy's cash out, notional plus fee, as Account.apply will take it
            n = notional(x)
            return n + n * fee_rate

        if (far := walk_pct(size, q, self.impact_bps)) > MAX_WALK_PCT:
            deepest = size * (1 + MAX_WALK_PCT * 100 / self.impact_bps)
            raise Rejected(
                f"the {pid} book is not that deep: {q:g} {unit(pid)} against {_show_qty(size, inc)} {unit(pid)} at "
                f"the best {'ask' if buy else 'bid'} would fill its last unit {far:.2f}% from it (at most "
                f"{MAX_WALK_PCT:g}%); the most it takes within that is {_show_qty(_floor(deepest, inc), inc)} {unit(pid)}"
            )
        price = avg(q)
        value = q * price
        fee = value * fee_rate
        if buy:
            if cost(q) > acct.cash:
                affordable = _most(lambda x: cost(x) <= acct.cash, q, inc)
                raise Rejected(
                    f"insufficient cash: buying {q:g} {unit(pid)} at {fmt.price(price)}{' on average' if price != top else ''}"
                    f" costs {fmt.money(cost(q))}{f' (incl. fee {fmt.money(fee)})' if fee else ''} but you have "
                    f"{fmt.money(acct.cash)}; "
                    f"the most you can buy now is {_show_qty(affordable, inc)} {unit(pid)}"
                )
        else:
            pos = acct.positions.get(pid)
            held = pos.quantity if pos else 0.0
            # Tolerate float noise from summing fills (e.g. 0.1+0.2), never a real increment.
            if q > held + max(inc * 1e-3, held * 1e-12):
                raise Rejected(
                    f"cannot sell {q:g} {unit(pid)}: you hold {_qty(held, inc):g} {unit(pid)} (no short selling)"
                )
        self._check_limits(acct, pid, side, q, notional, cost, quote, strategy, turn)
        return Fill(
            trade_id=call_key,
            agent=acct.agent,
            product_id=pid,
            side=side,
            quantity=q,
            price=price,
            fee=fee,
            top_price=top,
            top_size=size if size is not None and size > 0 else None,
            slippage=walk(top, size, q, self.impact_bps),
            quote_age_s=round(age, 3),
            tick_seq=self.quotes.seq(pid),
            executed_at=_now(),
            latency_ms=(utcnow() - received_at).total_seconds() * 1000,
        )

    def _check_limits(
        self,
        acct: Account,
        pid: str,
        side: str,
        q: float,
        notional: Callable[[float], float],
        cost: Callable[[float], float],
        quote: Quote,
        strategy: object,
        turn: str | None,
    ) -> None:
        """Rejected, naming the rule and the numbers, if the order breaks a limit in force for the caller.

        notional(x) / cost(x): what buying x units trades for / costs in cash (the impact walk and the fee
        included); both grow with x, so every rule below is monotone in x."""
        name, lim = self.limits_for(strategy)
        whose = f" ({name} strategy)" if name else ""
        if lim.max_orders_per_turn is not None and turn is not None:
            n = self.ledger.fills_in_turn(acct.agent, turn)
            if n >= lim.max_orders_per_turn:
                raise Rejected(
                    f"limit 'orders per turn'{whose}: {n} orders already filled this turn; the most is "
                    f"{lim.max_orders_per_turn}. Wait for the next turn"
                )
        if lim.cooldown_s and acct.last_fill_at is not None:
            since = time.time() - acct.last_fill_at.timestamp()
            if since < lim.cooldown_s:
                raise Rejected(
                    f"limit 'cooldown'{whose}: your last order filled {since:.1f}s ago; the least between "
                    f"orders is {lim.cooldown_s:g}s (another {lim.cooldown_s - since:.1f}s)"
                )
        if side != "buy":
            return  # a sell lowers every exposure below, and an agent must always be able to get out
        inc, u = self.increment(pid), unit(pid)
        value = acct.total_value(self.quotes.quotes())  # before the order, as get_portfolio shows it
        bid = mark_price(quote) or cost(1.0)
        # After buying x units, marked at the best bids, the account is worth less by what x cost beyond
        # its marked worth (spread, impact and fee).
        held = acct.positions.get(pid)
        position = held.market_value(quote) if held else 0.0
        invested = value - acct.cash

        def after(x: float) -> float:
            return value - (cost(x) - x * bid)

        def pct(x: float, of: float) -> float:
            return x / of * 100 if of > 0 else math.inf

        rules = []  # (rule, passes(x), what x would make of it)
        if lim.max_order_pct is not None:
            cap = value * lim.max_order_pct / 100
            rules.append(
                (
                    "largest order",
                    lambda x: notional(x) <= cap * (1 + LIMIT_SLACK),
                    lambda x: (
                        f"this buy is {fmt.money(notional(x))}, {pct(notional(x), value):.2f}% of your total value "
                        f"{fmt.money(value)}; the most is {lim.max_order_pct:g}% ({fmt.money(cap)})"
                    ),
                )
            )

        def share(limit: float, held: Callable[[float], float], says: Callable[[str], str], least: bool):
            """(passes(x), what(x)) of a rule on held(x), a value after buying x, as a share of the total value."""

            def passes(x: float) -> bool:
                bound = limit / 100 * after(x)
                return held(x) >= bound * (1 - LIMIT_SLACK) if least else held(x) <= bound * (1 + LIMIT_SLACK)

            def what(x: float) -> str:
                said = says(f"{pct(held(x), after(x)):.2f}%")
                return f"after this buy {said}; the {'least' if least else 'most'} is {limit:g}%"

            return passes, what

        # (rule, limit %, the value held after buying x, how the message says its share, a least not a most)
        shares = (
            ("largest position", lim.max_position_pct, lambda x: position + x * bid,
             lambda s: f"{pid} would be {s} of your total value", False),
            ("most invested", lim.max_invested_pct, lambda x: invested + x * bid,
             lambda s: f"{s} of your total value would be invested", False),
            ("least cash", lim.min_cash_pct, lambda x: acct.cash - cost(x),
             lambda s: f"cash would be {s} of your total value", True),
        )  # fmt: skip
        rules += [(rule, *share(limit, *how)) for rule, limit, *how in shares if limit is not None]
        for rule, passes, what in rules:
            if not passes(q):
                most = _most(lambda x: all(ok(x) for _, ok, _ in rules), q, inc)
                raise Rejected(
                    f"limit '{rule}'{whose}: {what(q)}; the most you can buy now is {_show_qty(most, inc)} {u}"
                )

    def _fill_result(self, acct: Account, t: Fill) -> dict:
        inc = self.increment(t.product_id)
        pos = acct.positions.get(t.product_id)
        return {
            "status": "filled",
            "product_id": t.product_id,
            "side": t.side,
            "quantity": t.quantity,
            "unit": unit(t.product_id),
            "price": t.price,  # the average over the order (top of book, then the walk beyond it)
            "top_of_book": t.top_price,
            "top_size": t.top_size,  # null: the quote said no size (no impact applied)
            "slippage": round(t.slippage, 4),
            "slippage_bps": round(t.slippage_bps, 3),
            "notional": _usd(t.notional),
            "fee": round(t.fee, 4),
            "cash_after": _usd(acct.cash),
            "position_after": {
                "quantity": _qty(pos.quantity, inc) if pos else 0.0,
                "avg_cost": round(pos.avg_cost, 8) if pos else None,
            },
            "quote_age_s": t.quote_age_s,
            "trade_id": t.trade_id,
        }

    # -- reporting -------------------------------------------------------------------------------

    def portfolio(self, agent: str, strategy: object = None) -> dict:
        """The agent's account as the model sees it, marked at the best bids, with the limits in force."""
        with self._lock:  # a consistent view: no fill lands halfway through
            return self._portfolio(agent, strategy)

    def _portfolio(self, agent: str, strategy: object = None) -> dict:
        acct, _ = self.ledger.open_account(agent)
        quotes, now = self.quotes.quotes(), utcnow()
        positions = []
        for pid, p in sorted(acct.positions.items()):
            q = quotes.get(pid)
            mark = mark_price(q)
            positions.append(
                {
                    "product_id": pid,
                    "quantity": _qty(p.quantity, self.increment(pid)),
                    "unit": unit(pid),
                    "avg_cost": round(p.avg_cost, 8),
                    "mark_price": mark,  # best bid; None if no quote yet (then valued at cost)
                    "market_value": _usd(p.market_value(q)),
                    "unrealized_pnl": _usd(p.unrealized_pnl(q)),
                    "avg_time_held_s": round((now - p.opened_at).total_seconds()) if p.opened_at else None,
                    "avg_time_held": _held(p.opened_at, now),
                }
            )
        return {
            "agent": agent,
            "cash": _usd(acct.cash),
            "positions": positions,
            "realized_pnl": _usd(acct.realized_pnl),
            "unrealized_pnl": _usd(acct.unrealized_pnl(quotes)),
            "fees_paid": round(acct.fees_paid, 4),
            "slippage_paid": round(acct.slippage_paid, 4),
            "total_value": _usd(acct.total_value(quotes)),
            "initial_cash": INITIAL_CASH,
            "return_pct": round(acct.return_pct(quotes), 4),
            "fills": acct.trades,
            "rejected_orders": acct.rejected,
            "fee_bps": self.fee_bps,
            "impact_bps_per_top_size": self.impact_bps,
            "limits": self._limits_view(strategy),
        }

    def _limits_view(self, strategy: object) -> dict:
        name, lim = self.limits_for(strategy)
        return {"strategy": name, **{k: v for k, v in lim.as_dict().items() if v is not None}, "rules": lim.sentences()}


def _now() -> datetime:
    """The desk's clock for fill times: time.time(), which the cooldown also reads."""
    return datetime.fromtimestamp(time.time(), timezone.utc)


def _floor(x: float, inc: float) -> float:
    return math.floor(x / inc + 1e-9) * inc


def _most(passes: Callable[[float], bool], q: float, inc: float) -> float:
    """The largest multiple of `inc` below q that `passes` (monotone: true up to a point, then false)."""
    lo, hi = 0, math.floor(q / inc)  # lo passes (buying nothing breaks no rule the order could), hi does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if passes(mid * inc):
            lo = mid
        else:
            hi = mid
    return lo * inc


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _finite(x: object) -> float | None:
    """x as a finite float, or None (not a number, NaN, infinite, or an int too big for a float)."""
    if not _is_number(x):
        return None
    try:
        f = float(x)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def _check_quantity(quantity: object, inc: float, pid: str) -> float:
    if quantity is None:  # JSON has no NaN/Infinity: they arrive as null
        raise Rejected("quantity must be a finite number (got null; NaN and Infinity are not numbers)")
    if not _is_number(quantity):
        raise Rejected(f"quantity must be a number, not {type(quantity).__name__} {_echo(quantity)}")
    q = _finite(quantity)
    if q is None:
        raise Rejected(f"quantity must be a finite number, not {_echo(quantity)}")
    if q <= 0:
        raise Rejected(f"quantity must be positive, not {q:g}")
    if q > MAX_QUANTITY:
        raise Rejected(f"quantity {q:g} is absurdly large (limit {MAX_QUANTITY:g})")
    if q < inc:
        raise Rejected(f"quantity {q:g} is below the minimum for {pid} ({inc:g} {unit(pid)})")
    with localcontext() as ctx:
        ctx.prec = 60  # exact for any quantity <= MAX_QUANTITY at any increment >= 1e-18
        try:
            off_grid = Decimal(repr(q)) % Decimal(repr(inc)) != 0
        except InvalidOperation:
            off_grid = True
    if off_grid:
        raise Rejected(f"quantity {q!r} is not a multiple of the {pid} increment {inc:g} {unit(pid)}")
    return q


def _rejection(reason: str) -> dict:
    return {"status": "rejected", "error": f"order rejected: {reason}. Nothing was traded."}
