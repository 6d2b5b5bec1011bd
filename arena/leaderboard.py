"""The leaderboard table: one renderable for the dashboard's final standings, the export and `arena report`.

Rows are AgentMetrics or export rows (dicts): agents ranked best value first, the buy-and-hold baseline
unranked and dimmed; a narrow console drops cents first, then empty columns, then the least important.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from arena import fmt, ui
from arena.metrics import AgentMetrics

# (key, header, priority): lower priority matters more; 0 is never dropped. A narrow table drops the
# columns nobody has a value for first, then the highest numbers (arena.ui.fit_table).
_COLUMNS = [
    ("rank", "#", 0),
    ("name", "agent", 0),
    ("total_value", "value", 0),
    ("return_pct", "return", 0),
    ("max_drawdown_pct", "max DD", 2),
    ("sharpe", "Sharpe", 3),
    ("win_rate", "win rate", 4),
    ("trades", "trades", 5),
    ("model_errors", "model err", 6),  # export rows only (the dashboard counts them); absent otherwise
    ("realized_pnl", "realized", 7),
    ("unrealized_pnl", "unrealized", 8),
    ("fees", "fees", 9),
    ("slippage", "slippage", 10),
    ("exposure_pct", "exposure", 11),
    ("cash", "cash", 12),
    # export rows only: a ledger has no tokens (docs/METRICS.md "Tokens and dollars")
    ("tokens", "tokens", 13),
    ("model_cost_usd", "model $", 14),
    ("return_per_dollar", "P&L/$", 15),
]
_OPTIONAL = {"model_errors", "tokens", "model_cost_usd", "return_per_dollar"}  # shown only when some row has the field
_UNAVAILABLE = 50  # priority offset for a column without any value
NA = "—"  # not defined (yet): see docs/METRICS.md
# An export row's own fields (arena.dashboard.leaderboard, arena report --html): any other key of an
# agent's metrics goes under the row's "metrics".
ROW_KEYS = frozenset(
    {"rank", "name", "baseline", "total_value", "return_pct", "cash", "realized_pnl", "unrealized_pnl", "fees",
     "trades", "rejected", "positions", "metrics"}
)  # fmt: skip


def _num(row: Mapping[str, Any], key: str) -> float | None:
    v = row.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _cell(key: str, row: Mapping[str, Any], rank: str, short: bool = False) -> Text:
    """One cell; `short` is the condensed form a narrow table switches to (dollars without cents)."""
    v = _num(row, key)
    if key == "rank":
        return Text(rank, style="dim")
    if key == "name":
        name = str(row.get("name", "?"))
        return Text(name, style="italic") if row.get("baseline") else ui.agent_text(name)
    if key == "trades":
        rejected = _num(row, "rejected") or 0
        return Text(f"{v or 0:.0f}") + (Text(f" ({rejected:.0f} rej)", style="yellow") if rejected else Text(""))
    if v is None:
        return Text(NA, style="dim")
    if key == "total_value":  # "*": some position is valued at a notional price (row["notional_marks"])
        return Text(ui.money(v, cents=not short)) + (Text("*", style="yellow") if row.get("notional_marks") else "")
    if key in ("fees", "slippage", "cash"):
        return Text(ui.money(v, cents=not short))
    if key in ("realized_pnl", "unrealized_pnl"):
        return ui.signed_money(v, cents=not short)
    if key == "return_pct":
        return ui.signed_pct(v)
    if key == "max_drawdown_pct":
        return Text(ui.pct(-v), style=ui.DOWN if v > 0 else ui.FLAT)
    if key == "sharpe":
        return Text(f"{v:.2f}")
    if key == "win_rate":
        return Text(f"{v:.0f}% of {_num(row, 'round_trips') or 0:.0f}")
    if key == "exposure_pct":
        return Text(f"{v:.1f}%")
    if key == "model_errors":
        return Text(f"{v:.0f}", style="red" if v else ui.FLAT)
    if key == "tokens":
        return Text(f"{v:,.0f}")
    if key == "model_cost_usd":  # one agent's calls often cost less than a cent
        return Text(fmt.usd_cost(v))
    if key == "return_per_dollar":
        return Text(fmt.per_dollar(v), style=ui.UP if v > 0 else ui.DOWN if v < 0 else ui.FLAT)
    raise KeyError(key)


_MONEY = {"realized_pnl", "unrealized_pnl", "fees", "slippage", "cash"}  # condensed form (the value keeps cents)


def leaderboard_table(
    rows: Iterable[AgentMetrics | Mapping[str, Any]],
    *,
    title: str | None = None,
    width: int | None = None,
    run_column: bool = False,
) -> RenderableType:
    """The leaderboard: agents best value first and ranked; the benchmark row reads "base", unranked
    and dimmed. Rows are AgentMetrics or export rows (dicts; a missing or undefined metric shows "—").
    Drawn with arena.ui.fit_table like the dashboard: a table wider than `width` first drops cents,
    then the columns nobody has a value for, then the least important ones. width=None fits whatever
    console it is printed on. `run_column` adds a leading "run" column (rows ranked within their run).
    """
    dicts = [r.model_dump() if isinstance(r, AgentMetrics) else dict(r) for r in rows]
    runs: dict[Any, list[dict]] = {}
    for d in dicts:
        runs.setdefault(d.get("run") if run_column else None, []).append(d)
    ordered: list[tuple[dict, str]] = []
    for group in runs.values():
        group.sort(key=lambda d: _num(d, "total_value") or 0.0, reverse=True)
        rank = 0
        for d in group:
            rank += not d.get("baseline")
            ordered.append((d, "base" if d.get("baseline") else str(rank)))

    columns = []
    if run_column:
        columns.append(
            ui.Column("run", [Text(str(d.get("run", "")), style="cyan") for d, _ in ordered], justify="left")
        )
    for key, header, priority in _COLUMNS:
        if key in _OPTIONAL and not any(_num(d, key) is not None for d in dicts):
            continue
        cells = [_cell(key, d, label) for d, label in ordered]
        short = [_cell(key, d, label, short=True) for d, label in ordered] if key in _MONEY else None
        if priority and dicts and all(_num(d, key) is None for d in dicts):
            priority += _UNAVAILABLE
        columns.append(
            ui.Column(header, cells, priority=priority, justify="left" if key == "name" else "right", short=short)
        )
    for i, (d, _) in enumerate(ordered):
        if d.get("baseline"):
            for c in columns:
                for cells in filter(None, (c.cells, c.short)):
                    cells[i].stylize("dim")
    if not dicts:
        columns[1 + run_column].cells.append(Text("no agents yet", style="dim"))
    notional = sorted({pid for d in dicts for pid in d.get("notional_marks") or ()})
    footnote = (
        Text(f"* valued partly at a notional price, not a live bid: {', '.join(notional)}", style="yellow")
        if notional
        else None
    )

    def build(w: int) -> RenderableType:
        table = ui.fit_table(columns, w, header_style="bold")
        parts = [Text(title, style="bold")] if title else []
        return Group(*parts, table, footnote) if footnote else Group(*parts, table) if title else table

    return build(width) if width is not None else ui.FitWidth(build)
