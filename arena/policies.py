"""Deterministic trading policies for the offline policy server: read the market as the prompt shows it
(arena.market.render_snapshot) and the account as get_portfolio returns it (in the turn prompt, see
arena.accounts.render_account, or a get_portfolio result), decide orders. Pure: no I/O."""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from statistics import fmean, pstdev

from arena import exchanges
from arena.exchanges.coinbase import products as coinbase_products
from arena.portfolio import INITIAL_CASH

POLICIES = ("momentum", "mean-revert", "random-walk", "hold")

# Order sizes as a fraction of cash, per buy.
BUY_FRACTION = {"momentum": 0.08, "mean-revert": 0.06, "random-walk": 0.05}
MIN_NOTIONAL = 1.0  # USD; smaller orders are not worth a tool call

QUOTE_HEADER = "product | last | bid | ask | spread | quote age"
ACCOUNT_HEADER = "Your account"  # arena.accounts.ACCOUNT_HEADER (not imported: that module brings Kafka)
_CANDLE_HEADER = re.compile(r"^(?P<product>\S+) (?P<gran>[A-Z_]+) candles \(oldest first\)")


@dataclass
class QuoteRow:
    product_id: str
    last: float | None
    bid: float | None
    ask: float | None
    stale: bool


@dataclass
class Market:
    """The market as the prompt shows it: quotes and candle closes (oldest first) per product and granularity."""

    quotes: dict[str, QuoteRow] = field(default_factory=dict)
    closes: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def tradable(self) -> list[QuoteRow]:
        """Products with a fresh two-sided quote: never trade a STALE product."""
        return [q for _, q in sorted(self.quotes.items()) if not q.stale and q.bid and q.ask]


@dataclass
class Holdings:
    cash: float
    positions: dict[str, float]  # product -> quantity
    known: bool = True  # False when the portfolio could not be read (defaults used)


@dataclass
class Order:
    product_id: str
    side: str  # "buy" | "sell"
    quantity: float
    why: str


def _num(text: str) -> float | None:
    text = text.strip().replace(",", "")
    try:
        return float(text)
    except ValueError:
        return None


def parse_market(text: str) -> Market | None:
    """Parse render_snapshot() output (possibly embedded in a longer prompt); None if there is no quote table."""
    lines = text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == QUOTE_HEADER)
    except StopIteration:
        return None
    market = Market()
    i = start + 1
    while i < len(lines) and lines[i].strip():
        cells = [c.strip() for c in lines[i].split("|")]
        if len(cells) >= 6:
            market.quotes[cells[0]] = QuoteRow(
                cells[0], _num(cells[1]), _num(cells[2]), _num(cells[3]), "STALE" in cells[5]
            )
        i += 1
    product = gran = None
    for line in lines[i:]:
        if m := _CANDLE_HEADER.match(line.strip()):
            product, gran = m["product"], m["gran"]
            market.closes.setdefault(product, {})[gran] = []
            continue
        parts = line.split()
        if (
            product
            and len(parts) == 6
            and re.fullmatch(r"\d\d:\d\d", parts[0])
            and (close := _num(parts[4])) is not None
        ):
            market.closes[product][gran].append(close)
        elif not line.strip():
            product = gran = None
    return market


def _find(obj, keys: tuple[str, ...]):
    """First value under any of `keys`, searching nested dicts/lists breadth-first."""
    queue = [obj]
    while queue:
        cur = queue.pop(0)
        if isinstance(cur, dict):
            for key in keys:
                if key in cur:
                    return cur[key]
            queue.extend(cur.values())
        elif isinstance(cur, list):
            queue.extend(cur)
    return None


def parse_portfolio(text: str | None) -> Holdings:
    """Cash and position quantities from a get_portfolio result (JSON preferred, text tolerated)."""
    if not text:
        return Holdings(INITIAL_CASH, {}, known=False)
    try:
        data = json.loads(text)
    except (TypeError, ValueError):
        data = None
    if isinstance(data, (dict, list)):
        cash = _find(data, ("cash", "cash_usd", "available_cash", "usd"))
        positions: dict[str, float] = {}
        raw = _find(data, ("positions", "holdings"))
        items = raw.items() if isinstance(raw, dict) else ((None, p) for p in raw) if isinstance(raw, list) else ()
        for key, pos in items:
            if isinstance(pos, dict):
                pid = pos.get("product_id") or pos.get("product") or key
                qty = pos.get("quantity", pos.get("qty", pos.get("size")))
            else:
                pid, qty = key, pos
            if pid and isinstance(qty, (int, float)) and qty > 0:
                positions[str(pid)] = float(qty)
        if isinstance(cash, (int, float)):
            return Holdings(float(cash), positions)
    m = re.search(r"cash\D{0,20}?([\d,]+(?:\.\d+)?)", text, re.IGNORECASE)
    if not m:
        return Holdings(INITIAL_CASH, {}, known=False)
    positions = {
        pm[1]: float(pm[2])
        for pm in re.finditer(
            r"\b([A-Z0-9]+-[A-Z]+)\b[^\n]*?(?:quantity|qty|size|units)\D{0,5}(\d+(?:\.\d+)?(?:[eE]-?\d+)?)",
            text,
            re.IGNORECASE,
        )
        if float(pm[2]) > 0
    }
    return Holdings(float(m[1].replace(",", "")), positions)


def parse_prompt_account(text: str) -> Holdings | None:
    """The account a turn prompt shows (a header line ending in ':', then get_portfolio's JSON on the next
    line); None when the prompt shows none (not yet known, or not opened yet)."""
    lines = text.splitlines()
    for i, line in enumerate(lines[:-1]):
        if line.startswith(ACCOUNT_HEADER) and line.rstrip().endswith(":"):
            holdings = parse_portfolio(lines[i + 1])
            return holdings if holdings.known else None
    return None


def increment(product_id: str, price: float | None) -> Decimal:
    """Order size increment: the product's base increment where the venue's records know it; otherwise
    satoshi-like for anything pricier than $10 and 0.1 below (a multiple of any finer step)."""
    if product_id in coinbase_products.KNOWN:
        return Decimal(repr(exchanges.base_increment(product_id)))
    return Decimal("0.00000001") if (price or 0) >= 10 else Decimal("0.1")


def round_down(quantity: float, step: Decimal) -> float:
    return float((Decimal(repr(quantity)) / step).to_integral_value(ROUND_DOWN) * step)


def _closes(market: Market, product: str, prefer: tuple[str, ...]) -> list[float]:
    by_gran = market.closes.get(product, {})
    for gran in prefer:
        if len(by_gran.get(gran, [])) >= 6:
            return by_gran[gran]
    return []


def _buy(q: QuoteRow, cash: float, fraction: float, why: str) -> Order | None:
    qty = round_down(cash * fraction / q.ask, increment(q.product_id, q.ask))
    if qty <= 0 or qty * q.ask < MIN_NOTIONAL or qty * q.ask > cash:
        return None
    return Order(q.product_id, "buy", qty, why)


def _sell(q: QuoteRow, held: float, why: str) -> Order | None:
    qty = round_down(held, increment(q.product_id, q.bid))
    return Order(q.product_id, "sell", qty, why) if qty > 0 else None


def decide(policy: str, market: Market, holdings: Holdings, seed: bytes = b"") -> tuple[list[Order], list[str]]:
    """Orders for this turn and one note per product explaining the call (for the model's text)."""
    orders: list[Order] = []
    notes: list[str] = []
    cash = holdings.cash
    rng = random.Random(int.from_bytes(hashlib.sha256(seed).digest()[:8], "big"))
    tradable = {q.product_id for q in market.tradable()}
    for pid, q in sorted(market.quotes.items()):
        if pid not in tradable:
            notes.append(f"{pid} skipped (stale quote)" if q.stale else f"{pid} skipped (no bid/ask)")
            continue
        held = holdings.positions.get(pid, 0.0)
        mid = (q.bid + q.ask) / 2
        order: Order | None = None
        if policy == "momentum":
            closes = _closes(market, pid, ("ONE_MINUTE", "FIVE_MINUTE", "FIFTEEN_MINUTE"))
            if not closes:
                notes.append(f"{pid}: not enough candles")
                continue
            series = [*closes, mid]
            fast, slow = fmean(series[-3:]), fmean(series[-12:])
            signal = fast / slow - 1
            why = f"fast MA {signal:+.2%} vs slow"
            if signal > 0.0005 and held <= 0:
                order = _buy(q, cash, BUY_FRACTION[policy], f"{why}: riding the trend")
            elif signal < -0.0005 and held > 0:
                order = _sell(q, held, f"{why}: trend turned")
            notes.append(f"{pid}: {why}")
        elif policy == "mean-revert":
            closes = _closes(market, pid, ("FIVE_MINUTE", "ONE_MINUTE", "FIFTEEN_MINUTE"))
            if not closes:
                notes.append(f"{pid}: not enough candles")
                continue
            window = closes[-12:]
            sd = pstdev(window)
            z = (mid - fmean(window)) / sd if sd > 0 else 0.0
            why = f"z-score {z:+.2f}"
            if z < -1.0 and held <= 0:
                order = _buy(q, cash, BUY_FRACTION[policy], f"{why}: stretched below the mean")
            elif z > 1.0 and held > 0:
                order = _sell(q, held, f"{why}: back above the mean")
            notes.append(f"{pid}: {why}")
        elif policy == "random-walk":
            u = rng.random()
            if u < 0.3:
                order = _buy(q, cash, BUY_FRACTION[policy], f"coin flip {u:.2f}: buy")
            elif u < 0.5 and held > 0:
                order = _sell(q, held, f"coin flip {u:.2f}: sell")
            notes.append(f"{pid}: coin flip {u:.2f}")
        elif policy == "hold":
            notes.append(f"{pid}: holding")
        else:
            raise ValueError(f"unknown policy {policy!r}")
        if order:
            orders.append(order)
            if order.side == "buy":
                cash -= order.quantity * q.ask
    return orders, notes
