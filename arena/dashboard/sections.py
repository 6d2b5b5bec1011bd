"""The dashboard's sections (market, leaderboard, positions, fills, problems, chart, header, footer),
each built for the size the layout gives it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.text import Text

from arena import fmt
from arena.dashboard.chart import value_chart
from arena.dashboard.export import Standing
from arena.dashboard.state import ArenaState, Health, Problem, return_per_dollar
from arena.portfolio import INITIAL_CASH, Fill, mark_price
from arena.ui import (
    FLAT,
    Column,
    Fixed,
    agent_color,
    agent_text,
    ago,
    fit_table,
    hms,
    money,
    pct,
    price,
    qty,
    signed_money,
    signed_pct,
    table_width,
)


def _win_rate(m: dict) -> Text:
    if m.get("win_rate") is None:
        return Text("—", style=FLAT)
    return Text(f"{m['win_rate']:.0f}% of {m.get('round_trips', 0)}")


def _drawdown(m: dict) -> Text:
    dd = m.get("max_drawdown_pct")
    if dd is None:
        return Text("—", style=FLAT)
    return Text(pct(-dd), style="red" if round(dd, 2) > 0 else FLAT)


def _number(key: str, pattern: str) -> Callable[[dict], Text]:
    return lambda m: Text("—", style=FLAT) if m.get(key) is None else Text(pattern.format(m[key]))


# (metric key, column header, cell from the agent's metrics dict, priority): lower priority numbers stay
# longer on a narrow screen (the money columns are 0-6, see _leaderboard_body).
METRIC_COLUMNS: list[tuple[str, str, Callable[[dict], Text | str], int]] = [
    ("max_drawdown_pct", "Max DD", _drawdown, 2),
    ("win_rate", "Win rate", _win_rate, 3),
    ("sharpe", "Sharpe", _number("sharpe", "{:.2f}"), 4),
    ("exposure_pct", "Exposure", _number("exposure_pct", "{:.0f}%"), 5),
]


def tokens_text(n: int | None) -> str:
    """12 / 4.5k / 1.2M tokens; "—" unknown."""
    if n is None:
        return "—"
    if n < 10_000:
        return f"{n:,}"
    return f"{n / 1000:.1f}k" if n < 1_000_000 else f"{n / 1_000_000:.2f}M"


def per_dollar(x: float | None) -> Text:
    """P&L per dollar of inference, e.g. "+412" (dollars earned per dollar spent); "—" without a cost."""
    if x is None:
        return Text("—", style=FLAT)
    return Text(fmt.per_dollar(x), style="green" if x > 0 else "red" if x < 0 else FLAT)


@dataclass
class Frame:
    """One refresh's consistent view of the state."""

    state: ArenaState
    now: datetime
    standings: list[Standing]  # agents and the baseline, best first
    health: Health
    compact: bool

    @property
    def agents(self) -> list[Standing]:
        """The standings without the baseline: the contenders."""
        return [s for s in self.standings if not s.baseline]


def _title(text: str, note: str = "") -> Text:
    t = Text(text, style="bold bright_white")
    if note:
        t.append(f"  {note}", style="grey62")
    return t


def _section(
    f: Frame, title: Text, body: Callable[[int, int], RenderableType], width: int, height: int
) -> RenderableType:
    """A titled box of exactly width x height; its body is built for the inner size. In compact mode
    the frame is a single title line (more rows for data on small terminals)."""
    if f.compact:
        line = Text(" ", style="on grey19") + title
        line.stylize("on grey19")
        line.truncate(width, overflow="ellipsis", pad=True)
        return Group(line, Fixed(body(width, height - 1), height - 1))
    inner_w, inner_h = width - 4, height - 2
    return Panel(
        body(inner_w, inner_h),  # a Panel of fixed height already cuts or pads its content
        title=title,
        title_align="left",
        box=box.ROUNDED,
        border_style="grey37",
        padding=(0, 1),
        width=width,
        height=height,
    )


def _empty(message: str) -> Text:
    return Text(message, style="grey50 italic")


def _market_columns(f: Frame, rows: int) -> list[Column]:
    quotes = sorted(f.state.quotes.items())[: max(1, rows - 1)]
    ages, spreads_bps = [], []
    for _, q in quotes:
        age = q.age_s(f.now)
        if f.state.quote_is_stale(q, f.now):
            ages.append(Text(f"{ago(age)} STALE", style="bold red"))
        else:
            ages.append(Text(ago(age), style="green"))
        mid = (q.best_bid + q.best_ask) / 2 if q.spread is not None else None
        spreads_bps.append(f"{q.spread / mid * 1e4:.1f}bp" if mid else "n/a")
    return [
        Column("Product", [Text(pid, style="bold") for pid, _ in quotes], justify="left"),
        Column("Last", [price(q.price) for _, q in quotes], priority=2),
        Column("Bid", [price(q.best_bid) for _, q in quotes]),
        Column("Ask", [price(q.best_ask) for _, q in quotes]),
        Column("Spread", [price(q.spread) for _, q in quotes], priority=3),
        Column("bps", spreads_bps, priority=5),
        Column("Quote age", ages),
    ]


def _market_body(f: Frame, width: int, rows: int) -> RenderableType:
    if not f.state.quotes:
        return _empty("waiting for the first market snapshot…")
    return fit_table(_market_columns(f, rows), width)


def _leaderboard_body(f: Frame, width: int, rows: int) -> RenderableType:
    if not f.standings:
        return _empty(
            f"no agents yet: each appears with {money(INITIAL_CASH, cents=False)} on its first trade or decision"
        )
    shown = f.standings[: max(1, rows - 1)]
    more = len(f.standings) - len(shown)
    if more:
        shown = f.standings[: max(1, rows - 2)]
        more = len(f.standings) - len(shown)
    acts = [s.activity for s in shown]
    errors = []
    for s, a in zip(shown, acts):
        n = a.model_errors if a else 0
        errors.append(Text("" if s.baseline else str(n), style="bold magenta" if n else FLAT))
    names = [Text("buy-and-hold", style="italic") if s.baseline else agent_text(s.name) for s in shown]  # "#" says base
    cols = [
        Column("#", ["base" if s.baseline else str(s.rank) for s in shown], priority=0),
        Column("Agent", names, justify="left", flex=True, min_width=14),
        Column(
            "Value", [money(s.value) for s in shown], priority=0, short=[money(s.value, cents=False) for s in shown]
        ),
        Column("Return", [signed_pct(s.ret) for s in shown], priority=0),
        Column(
            "Cash",
            [money(s.account.cash) for s in shown],
            priority=4,
            short=[money(s.account.cash, cents=False) for s in shown],
        ),
        Column(
            "Realized",
            [signed_money(s.account.realized_pnl) for s in shown],
            priority=3,
            short=[signed_money(s.account.realized_pnl, cents=False) for s in shown],
        ),
        Column(
            "Unrealized",
            [signed_money(s.unrealized) for s in shown],
            priority=2,
            short=[signed_money(s.unrealized, cents=False) for s in shown],
        ),
        Column(
            "Fees",
            [money(-s.account.fees_paid) for s in shown],
            priority=5,
            short=[money(-s.account.fees_paid, cents=False) for s in shown],
        ),
        Column("Fills", [str(s.account.trades) for s in shown], priority=1),
        Column(
            "Rejected",
            [Text(str(s.account.rejected), style="bold red" if s.account.rejected else FLAT) for s in shown],
            priority=1,
        ),
        Column("Model err", errors, priority=1),
        Column(
            "Last reply",
            [ago((f.now - a.last_reply_at).total_seconds()) if a and a.last_reply_at else "—" for a in acts],
            priority=6,
        ),
    ]
    if any(s.account.slippage_paid for s in shown):  # fills have walked the book (impact beyond the top size)
        fees = next(i for i, c in enumerate(cols) if c.header == "Fees")
        cols.insert(fees + 1, Column("Slippage", [money(-s.account.slippage_paid) for s in shown], priority=6,
                                     short=[money(-s.account.slippage_paid, cents=False) for s in shown]))  # fmt: skip
    if f.state.metrics is not None:
        cols += [
            Column(header, [cell(s.metrics) for s in shown], priority=prio) for _, header, cell, prio in METRIC_COLUMNS
        ]
    if any(a.model_calls for a in f.state.activity.values()):
        inference = [
            Column(
                "Tokens",
                ["" if s.baseline else tokens_text(a.tokens if a else None) for s, a in zip(shown, acts)],
                priority=7,
            ),
            Column(
                "Model $",
                ["" if s.baseline else fmt.usd_cost(a.model_cost_usd if a else None) for s, a in zip(shown, acts)],
                priority=7,
            ),
            Column(
                "P&L/$",
                [
                    ""
                    if s.baseline
                    else per_dollar(return_per_dollar(s.value - INITIAL_CASH, a.model_cost_usd) if a else None)
                    for s, a in zip(shown, acts)
                ],
                priority=8,
            ),
        ]
        # Shown only where the rest fits uncondensed: dollars never lose their cents to make room for them.
        if table_width(cols + inference) <= width:
            cols += inference
    table = fit_table(cols, width)
    if any(s.baseline for s in shown):  # the benchmark row reads dim: a reference, not a contender
        lines = table.split("\n", allow_blank=True)
        for i, s in enumerate(shown, 1):
            if s.baseline:
                lines[i].stylize("dim")
        table = Text("\n", no_wrap=True, overflow="ellipsis").join(lines)
    if more:
        return Group(table, _empty(f"… {more} more agent{'s' * (more > 1)} (see the export)"))
    return table


def _positions_body(f: Frame, width: int, rows: int) -> RenderableType:
    items = [(s.name, pid, p) for s in f.agents for pid, p in sorted(s.account.positions.items())]
    if not items:
        return _empty("no open positions (all cash)")
    shown = items[: max(1, rows - 1)]
    if len(shown) < len(items):
        shown = items[: max(1, rows - 2)]
    quotes = f.state.quotes
    held = [ago((f.now - p.opened_at).total_seconds()) if p.opened_at else "—" for _, _, p in shown]
    cols = [
        Column("Agent", [agent_text(n) for n, _, _ in shown], justify="left", flex=True, min_width=12),
        Column("Quantity", [qty(p.quantity, pid) for _, pid, p in shown], priority=0),
        Column("Avg cost", [price(p.avg_cost) for _, _, p in shown], priority=3),
        Column("Bid (mark)", [price(mark_price(quotes.get(pid))) for _, pid, _ in shown], priority=2),
        Column(
            "Value",
            [money(p.market_value(quotes.get(pid))) for _, pid, p in shown],
            priority=1,
            short=[money(p.market_value(quotes.get(pid)), cents=False) for _, pid, p in shown],
        ),
        Column("Unrealized", [signed_money(p.unrealized_pnl(quotes.get(pid))) for _, pid, p in shown], priority=0),
        Column("Held", held, priority=4),
    ]
    table = fit_table(cols, width)
    if len(shown) < len(items):
        return Group(table, _empty(f"… {len(items) - len(shown)} more"))
    return table


def _side(side: str) -> Text:
    return Text(side.upper(), style="bold green" if side == "buy" else "bold red")


def _fills_body(f: Frame, width: int, rows: int) -> RenderableType:
    fills = list(f.state.fills)[-max(1, rows - 1) :][::-1]  # newest first
    if not fills:
        return _empty("no fills yet")
    cols = [
        Column("Time", [hms(t.executed_at) for t in fills], justify="left", priority=1),
        Column("Agent", [agent_text(t.agent) for t in fills], justify="left", flex=True, min_width=10),
        Column("Side", [_side(t.side) for t in fills], justify="left"),
        Column("Quantity", [qty(t.quantity, t.product_id) for t in fills]),
        Column("Price", [price(t.price) for t in fills], priority=0),  # the average, impact included
        Column("Slip", [f"{t.slippage_bps:.1f}bp" if t.slippage else "—" for t in fills], priority=4),
        Column("Notional", [money(t.notional) for t in fills], priority=4),
        Column("Fee", [money(t.fee) for t in fills], priority=3),
        Column("Latency", [f"{t.latency_ms:.0f}ms" if t.latency_ms is not None else "—" for t in fills], priority=2),
        Column("Quote age", [f"{t.quote_age_s:.1f}s" if t.quote_age_s is not None else "—" for t in fills], priority=5),
    ]
    return fit_table(cols, width)


_PROBLEM_STYLE = {"rejected": "bold red", "model error": "bold magenta", "timeout": "bold magenta"}


def _problems_body(f: Frame, width: int, rows: int) -> RenderableType:
    probs = sorted(list(f.state.problems)[-max(1, rows - 1) :], key=lambda p: p.at, reverse=True)
    if not probs:
        return _empty("none so far")
    cols = [
        Column("Time", [hms(p.at) for p in probs], justify="left", priority=2),
        Column("Agent", [agent_text(p.agent) for p in probs], justify="left", priority=0),
        Column("What", [Text(p.kind.upper(), style=_PROBLEM_STYLE.get(p.kind, "bold")) for p in probs], justify="left"),
        Column("Order", [p.what for p in probs], justify="left", priority=1),
        Column("Reason", [Text(p.reason, style="red") for p in probs], justify="left", flex=True, min_width=12),
    ]
    return fit_table(cols, width)


def _activity_body(f: Frame, width: int, rows: int) -> RenderableType:
    """Fills, rejections and model errors in one newest-first list (narrow screens)."""
    n = max(1, rows - 1)
    events: list[tuple[datetime, object]] = [(t.executed_at, t) for t in list(f.state.fills)[-n:]]
    events += [(p.at, p) for p in list(f.state.problems)[-n:]]
    events.sort(key=lambda e: e[0])
    events = events[-n:][::-1]
    if not events:
        return _empty("no trades yet")
    times, agents, whats, details, lat = [], [], [], [], []
    for at, e in events:
        times.append(hms(at))
        if isinstance(e, Fill):
            agents.append(agent_text(e.agent))
            whats.append(_side(e.side) + Text(f" {qty(e.quantity, e.product_id)}"))
            details.append(Text(f"@ {price(e.price)}  fee {money(e.fee)}"))
            lat.append(f"{e.latency_ms:.0f}ms" if e.latency_ms is not None else "—")
        else:
            assert isinstance(e, Problem)
            agents.append(agent_text(e.agent))
            whats.append(Text(e.kind.upper(), style=_PROBLEM_STYLE.get(e.kind, "bold")) + Text(f" {e.what}"))
            details.append(Text(e.reason, style="red"))
            lat.append("")
    cols = [
        Column("Time", times, justify="left", priority=3),
        Column("Agent", agents, justify="left"),
        Column("Trade", whats, justify="left"),
        Column("Price / reason", details, justify="left", flex=True, min_width=14),
        Column("Latency", lat, priority=2),
    ]
    return fit_table(cols, width)


def _chart_body(f: Frame, width: int, rows: int) -> RenderableType:
    if not f.agents:
        return _empty("the chart starts with the first agent")
    now = f.now.timestamp()
    series = {s.name: f.state.history.epoch_series(s.name) + [(now, s.value)] for s in f.agents}  # right edge: now
    start = min(pts[0][0] for pts in series.values())
    end = max(now, start + 60)
    draw_order = dict(reversed([(s.name, series[s.name]) for s in f.agents]))  # leader drawn last, on top
    legend_rows = 1 if rows >= 8 else 0
    chart = value_chart(
        draw_order,
        width,
        rows - legend_rows,
        start=datetime.fromtimestamp(start, timezone.utc),
        end=datetime.fromtimestamp(end, timezone.utc),
    )
    if not legend_rows:
        return chart
    legend = Text(no_wrap=True, overflow="ellipsis")
    for with_return in (True, False):  # names only if the returns do not fit
        legend = Text(no_wrap=True, overflow="ellipsis")
        for s in f.agents:
            legend.append("━ ", style=agent_color(s.name))
            legend.append(f"{s.name} {pct(s.ret)}  " if with_return else f"{s.name}  ", style=agent_color(s.name))
        if legend.cell_len <= width:
            break
    return Group(chart, legend)


def _header(f: Frame, width: int, lines: int) -> list[Text]:
    h = f.health
    marker = {
        "ok": ("● LIVE", "bold green"),
        "degraded": ("● DEGRADED", "bold black on yellow"),
        "down": ("● FEED DOWN", "bold white on red"),
        "waiting": ("○ WAITING", "bold yellow"),
    }[h.level]
    first = Text(no_wrap=True, overflow="ellipsis")
    first.append(f" {marker[0]} ", style=marker[1])
    if h.problems:
        first.append(
            "  " + " · ".join(h.problems), style="bold red" if h.level in ("down", "waiting") else "bold yellow"
        )
    state = f.state
    facts = [f"{f.now.strftime('%H:%M:%S')} UTC"]
    if h.feed_age_s is not None:
        facts.append(f"feed {ago(h.feed_age_s)} ago #{state.snapshot_seq}")
    facts.append(
        f"reply {ago((f.now - state.last_reply_at).total_seconds())} ago" if state.last_reply_at else "no reply yet"
    )
    facts.append(
        f"tool call {ago((f.now - state.last_tool_call_at).total_seconds())} ago"
        if state.last_tool_call_at
        else "no tool call yet"
    )
    facts.append(f"up {ago((f.now - state.started_at).total_seconds())}")
    first.append("   " + " · ".join(facts), style="grey70")
    first.truncate(width, overflow="ellipsis")
    out = [Text("The Agents Trading Arena  ", style="bold") + first] if width >= 120 else [first]
    out[0].truncate(width, overflow="ellipsis")
    if lines >= 2:
        fills = sum(s.account.trades for s in f.agents)
        rejected = sum(s.account.rejected for s in f.agents)
        errors = sum(s.activity.model_errors for s in f.agents if s.activity)
        second = Text(no_wrap=True, overflow="ellipsis")
        # what changes first (it must survive a narrow terminal), then the rules of the game
        second.append(f" {len(f.agents)} agents · {fills} fills · ", style="grey70")
        second.append(f"{rejected} rejected", style="bold red" if rejected else "grey70")
        second.append(" · ", style="grey70")
        second.append(f"{errors} model errors", style="bold magenta" if errors else "grey70")
        if state.processes:  # reported by a supervisor (arena demo)
            down = len(state.processes_down())
            second.append(f" · processes: {len(state.processes_up())} up", style="grey70")
            second.append(f", {down} down" if down else "", style="bold red")
        second.append(f" · Start {money(INITIAL_CASH, cents=False)} per agent", style="bold")
        second.append(" · positions marked at best bid · ", style="grey70")
        second.append(f"fee {state.fee_bps:g} bps · impact {state.impact_bps:g} bps per top size", style="grey70")
        second.append(f" · quotes stale after {ago(state.max_quote_age_s)}", style="grey70")
        second.truncate(width, overflow="ellipsis")
        out.append(second)
    if lines >= 3 and state.limits:
        third = Text(no_wrap=True, overflow="ellipsis")
        third.append(" risk limits (the desk refuses an order past one): ", style="bold")
        third.append(state.limits, style="grey70")
        third.truncate(width, overflow="ellipsis")
        out.append(third)
    return out


def _footer(state: ArenaState, width: int) -> Text:
    t = Text(no_wrap=True, overflow="ellipsis", style="grey62")
    t.append(" logs → ", style="grey50")
    t.append(state.log_path or "stderr (not redirected)", style="bold grey70")
    if state.export_path:
        t.append("   standings → ", style="grey50")
        t.append(state.export_path, style="bold grey70")
    t.append("   Ctrl-C quits", style="grey50")
    t.truncate(width, overflow="ellipsis")
    return t
