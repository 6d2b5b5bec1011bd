"""The whole screen: sections allocated by priority for any terminal size, the final standings and
an SVG screenshot.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from arena.dashboard.export import leaderboard, standings
from arena.dashboard.sections import (
    Frame,
    _activity_body,
    _chart_body,
    _fills_body,
    _footer,
    _header,
    _leaderboard_body,
    _market_body,
    _market_columns,
    _positions_body,
    _problems_body,
    _section,
    _title,
)
from arena.dashboard.state import ArenaState, exit_code
from arena.leaderboard import leaderboard_table
from arena.market import utcnow
from arena.portfolio import INITIAL_CASH, Account
from arena.ui import (
    Fixed,
    ago,
    money,
    table_width,
)


@dataclass
class _Block:
    """A horizontal band of the screen: the allocator decides its height, then it is built."""

    name: str
    build: Callable[[int], RenderableType]
    h: int = 0


def _allocate(blocks: list[_Block], budget: int, plan: list[tuple[str, int]]) -> list[_Block]:
    """Walk the plan in order: a step (block, height) puts the block on screen at that height if it is
    not there yet and fits, or grows it towards that height with what is left. Blocks keep their screen
    order; a block that never fits is dropped whole (never squeezed into an empty frame)."""
    left = budget
    by_name = {b.name: b for b in blocks}
    for name, target in plan:
        b = by_name[name]
        if b.h == 0:
            if 0 < target <= left:
                b.h, left = target, left - target
        else:
            extra = min(left, max(0, target - b.h))
            b.h, left = b.h + extra, left - extra
    return [b for b in blocks if b.h > 0]


def _side_by_side(left: RenderableType, right: RenderableType, left_w: int, right_w: int) -> Table:
    grid = Table.grid(padding=0)
    grid.add_column(width=left_w, no_wrap=True)
    grid.add_column(width=right_w, no_wrap=True)
    grid.add_row(left, right)
    return grid


UNBOUNDED = 10**6


def render(
    state: ArenaState, accounts: dict[str, Account], width: int, height: int, *, now: datetime | None = None
) -> RenderableType:
    """The whole screen for a `width` x `height` terminal, exactly `height` lines. Small screens get
    compact sections and fewer columns; what does not fit is dropped by priority, never squeezed empty."""
    now = now or utcnow()
    width, height = max(40, width), max(10, height)
    with state._lock:
        f = Frame(state, now, standings(state, accounts), state.health(now), compact=height < 40)
        head = _header(f, width, 3 if height >= 40 else 2 if height >= 30 else 1)
        foot = _footer(state, width)
        budget = height - len(head) - 1
        frame_h = 1 if f.compact else 2  # rows a section spends on its frame
        n_quotes = max(1, len(state.quotes))
        n_agents = max(1, len(f.standings))
        n_positions = max(1, sum(len(s.account.positions) for s in f.agents))

        def sec(title: Text, body: Callable[[int, int], RenderableType], w: int) -> Callable[[int], RenderableType]:
            return lambda h: _section(f, title, body, w, h)

        market_title = _title("Market", f"quotes STALE after {ago(state.max_quote_age_s)}")
        board_title = _title(
            "Leaderboard",
            f"start {money(INITIAL_CASH, cents=False)} each · positions marked at best bid · fee {state.fee_bps:g} bps",
        )
        chart_title = _title(
            "Portfolio value", f"UTC · sampled every {ago(state.history.interval_s)} · marked at best bid"
        )
        market_h = frame_h + 1 + n_quotes
        board_min = frame_h + 1 + min(n_agents, 3)
        board_want = frame_h + 1 + n_agents
        chart_min = frame_h + 4  # three plot rows and the time axis

        if width >= 140:
            left_w = min(width - 64, max(84, round(width * 0.52)))
            right_w = width - left_w
            problems_title = _title("Rejections & model errors", "newest first")
            fills_title = _title("Recent fills", "newest first · latency = tool call → fill")
            pos_title = _title("Open positions", "marked at best bid")

            def market_row(h: int) -> RenderableType:
                # the market table is narrow: the rejections beside it get the rest (long reasons)
                market_w = min(left_w, max(table_width(_market_columns(f, h)), 48) + 4)
                return _side_by_side(
                    _section(f, market_title, lambda w, r: _market_body(f, w, r), market_w, h),
                    _section(f, problems_title, lambda w, r: _problems_body(f, w, r), width - market_w, h),
                    market_w,
                    width - market_w,
                )

            def lower_row(h: int) -> RenderableType:
                pos_want = frame_h + 1 + n_positions
                fills_min = frame_h + 3
                pos_h = min(pos_want, max(frame_h + 2, h // 2)) if h - fills_min >= frame_h + 2 else 0
                right = [_section(f, fills_title, lambda w, r: _fills_body(f, w, r), right_w, h - pos_h)]
                if pos_h:
                    right.append(_section(f, pos_title, lambda w, r: _positions_body(f, w, r), right_w, pos_h))
                return _side_by_side(
                    _section(f, chart_title, lambda w, r: _chart_body(f, w, r), left_w, h),
                    Group(*right),
                    left_w,
                    right_w,
                )

            blocks = [
                _Block("market", market_row),
                _Block("board", sec(board_title, lambda w, r: _leaderboard_body(f, w, r), width)),
                _Block("lower", lower_row),
            ]
            plan = [
                ("market", max(market_h, frame_h + 3)),
                ("board", board_min),
                ("lower", chart_min),
                ("board", board_want),
                ("market", max(market_h, frame_h + 5)),  # room for a few rejections beside the prices
                ("lower", UNBOUNDED),
            ]
        else:
            activity_title = _title("Recent trades", "fills, rejections (with reason), model errors · newest first")
            pos_title = _title("Open positions", "marked at best bid")
            blocks = [
                _Block("market", sec(market_title, lambda w, r: _market_body(f, w, r), width)),
                _Block("board", sec(board_title, lambda w, r: _leaderboard_body(f, w, r), width)),
                _Block("chart", sec(chart_title, lambda w, r: _chart_body(f, w, r), width)),
                _Block("activity", sec(activity_title, lambda w, r: _activity_body(f, w, r), width)),
                _Block("positions", sec(pos_title, lambda w, r: _positions_body(f, w, r), width)),
            ]
            activity_min = frame_h + 1 + 2
            plan = [
                ("market", market_h),
                ("board", board_min),
                ("activity", activity_min),
                ("chart", chart_min),
                ("board", board_want),
                ("activity", activity_min + 2),
                ("chart", max(chart_min, round(budget * 0.35))),
                ("positions", frame_h + 2),
                ("positions", frame_h + 1 + min(n_positions, 8)),
                ("activity", UNBOUNDED),
            ]
        chosen = _allocate(blocks, budget, plan)
        used = sum(b.h for b in chosen)
        parts: list[RenderableType] = [*head, *(b.build(b.h) for b in chosen)]
        if used < budget:
            parts.append(Fixed(Text(""), budget - used))
        parts.append(foot)
        return Fixed(Group(*parts), height)


def final_standings_table(
    state: ArenaState, accounts: dict[str, Account], *, now: datetime | None = None
) -> RenderableType:
    """The standings printed into the scrollback after the live screen closes: every agent and the
    baseline with their metrics, drawn like `arena report` draws the export (one leaderboard table), as
    many columns as the terminal width allows; then any process that died during the run."""
    now = now or utcnow()
    board = leaderboard(state, accounts, now=now)
    if not board["agents"]:
        return Text("No agent traded in this run.")
    title = Text.assemble(
        ("Final standings", "bold"),
        (
            f"  {now.strftime('%Y-%m-%d %H:%M:%S')} UTC · start {money(INITIAL_CASH, cents=False)} each · positions marked at best bid",
            "grey62",
        ),
    )
    parts: list[RenderableType] = [title, leaderboard_table([{**a["metrics"], **a} for a in board["agents"]])]
    with state._lock:
        down = state.processes_down()
    if down:
        parts.append(
            Text("Exited during the run: " + ", ".join(f"{p.name} ({exit_code(p)})" for p in down), style="bold red")
        )
    return Group(*parts)


def save_screenshot(
    state: ArenaState,
    accounts: dict[str, Account],
    path: str | os.PathLike,
    *,
    width: int = 160,
    height: int = 50,
    now: datetime | None = None,
    title: str = "The Agents Trading Arena",
) -> None:
    """The dashboard as it would look in a width x height terminal, saved as SVG (e.g. for the README)."""
    console = Console(
        width=width, height=height, record=True, file=io.StringIO(), force_terminal=True, color_system="truecolor"
    )
    console.print(render(state, accounts, width, height, now=now))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    console.save_svg(str(path), title=title)
