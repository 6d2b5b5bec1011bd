"""Numbers as people read them: the one place a price, an amount of money or a model cost becomes text.

Plain strings, no rich: the model's prompt (arena.market), the router's summary line, the reports and
the screens (arena.ui adds colour on top) all format through here.
"""

from __future__ import annotations


def price(x: float | None) -> str:
    """Enough digits for the instrument: BTC to the cent, a $1 coin to 4 places, sub-dollar to 6."""
    if x is None:
        return "n/a"
    if abs(x) >= 1000:
        return f"{x:,.2f}"
    if abs(x) >= 1:
        return f"{x:.4f}"
    return f"{x:.6f}"


def money(x: float | None, *, signed: bool = False, cents: bool = True) -> str:
    """`$100,000.00`; signed: `+$2.10` / `-$1.60` (zero has no sign)."""
    if x is None:
        return "n/a"
    digits = 2 if cents else 0
    x = round(x, digits)
    body = f"${abs(x):,.{digits}f}"
    if x < 0:
        return "-" + body
    return ("+" + body) if signed and x > 0 else body


def usd_cost(x: float | None) -> str:
    """A model cost: cents are too coarse for one agent's calls ($0.0027); "—" unknown."""
    if x is None:
        return "—"
    return f"${x:.4f}" if x < 1 else f"${x:,.2f}"


def per_dollar(x: float) -> str:
    """P&L per dollar of inference, e.g. "+412" (dollars earned per dollar spent)."""
    return f"{x:+,.0f}" if abs(x) >= 10 else f"{x:+.2f}"
