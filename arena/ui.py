"""Rich helpers shared by the dashboard and the response viewer: one colour per agent, money, prices,
quantities with their unit, ages — and tables that drop their least important columns to fit a width."""

from __future__ import annotations

import math
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.segment import Segment
from rich.text import Text

from arena.fmt import money, price  # noqa: F401 - re-exported: the screens format through arena.ui

# Distinct hues that read well on dark terminals, all in the xterm-256 cube so 256-colour terminals
# show them exactly; neighbours differ most, since a collision moves an agent to the next one. P&L
# uses plain green/red, so no agent is pure green or red.
AGENT_PALETTE = (
    "#5fafff",  # blue
    "#ffaf5f",  # orange
    "#d787ff",  # purple
    "#87d75f",  # green
    "#ff87af",  # pink
    "#5fd7d7",  # cyan
    "#ffd75f",  # gold
    "#ffffff",  # white
    "#d7af87",  # tan
    "#87ffd7",  # mint
)
UP = "green"
DOWN = "red"
FLAT = "grey62"


class AgentColors:
    """Hands out agent colours. An agent's slot comes from crc32 of its name (not Python's salted hash),
    so the dashboard and the viewer agree; if the slot is taken by an agent met earlier, the nearest
    least-used one is chosen (sticky thereafter), so up to len(palette) agents never share a colour."""

    def __init__(self, palette: tuple[str, ...] = AGENT_PALETTE, max_names: int = 1024):
        self.palette = palette
        self.max_names = max_names
        self._colors: dict[str, str] = {}
        self._lock = threading.Lock()

    def __call__(self, name: str) -> str:
        color = self._colors.get(name)
        if color is not None:
            return color
        with self._lock:
            if name not in self._colors:
                n = len(self.palette)
                start = zlib.crc32(name.encode("utf-8")) % n
                uses = dict.fromkeys(self.palette, 0)
                for c in self._colors.values():
                    uses[c] += 1
                self._colors[name] = min((self.palette[(start + i) % n] for i in range(n)), key=lambda c: uses[c])
                if len(self._colors) > self.max_names:  # names can be forged: forget the earliest met
                    del self._colors[next(iter(self._colors))]
            return self._colors[name]


agent_color = AgentColors()  # the process's colours: agent_color(name) -> "#rrggbb"


def agent_text(name: str, *, bold: bool = True) -> Text:
    return Text(name, style=f"{'bold ' if bold else ''}{agent_color(name)}")


def signed_money(x: float, *, cents: bool = True) -> Text:
    """A P&L amount: sign written out, green up, red down."""
    x = round(x, 2 if cents else 0)
    return Text(money(x, signed=True, cents=cents), style=UP if x > 0 else DOWN if x < 0 else FLAT)


def pct(x: float | None, *, signed: bool = True) -> str:
    if x is None:
        return "n/a"
    x = round(x, 2)
    s = f"{abs(x):.2f}%"
    return ("-" + s) if x < 0 else ("+" + s) if signed and x > 0 else s


def signed_pct(x: float) -> Text:
    x = round(x, 2)
    return Text(pct(x), style=UP if x > 0 else DOWN if x < 0 else FLAT)


def base_unit(product_id: str) -> str:
    """`BTC-USD` -> `BTC`."""
    return product_id.split("-", 1)[0]


def qty(x: float, product_id: str | None = None) -> str:
    """`0.0123 BTC`: at least four significant digits, trailing zeros dropped."""
    if x == 0:
        s = "0"
    elif abs(x) >= 1:
        s = f"{x:,.{2 if abs(x) >= 1000 else 4}f}".rstrip("0").rstrip(".")
    else:
        decimals = min(12, max(4, 3 - math.floor(math.log10(abs(x)))))
        s = f"{x:.{decimals}f}".rstrip("0").rstrip(".")
    return f"{s} {base_unit(product_id)}" if product_id else s


def ago(seconds: float | None) -> str:
    """A short duration: `4s`, `1m05s`, `2h03m`, `3d04h`."""
    if seconds is None:
        return "never"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def hms(t: datetime) -> str:
    return t.strftime("%H:%M:%S")


@dataclass
class Column:
    """One table column and its cells. Lower priority numbers matter more; a table that does not fit its
    width first switches columns to their `short` cells (e.g. dollars without cents), then drops the
    highest numbers. A flex column takes the width left over and truncates with `…`."""

    header: str
    cells: list[Text | str] = field(default_factory=list)
    priority: int = 0
    justify: str = "right"
    flex: bool = False
    min_width: int = 8  # a flex column's least useful width
    short: list[Text | str] | None = None  # condensed cells, used when the table is too wide

    def natural_width(self) -> int:
        widths = [cell_len(self.header)] + [c.cell_len if isinstance(c, Text) else cell_len(c) for c in self.cells]
        return max(widths)

    def least_width(self) -> int:
        return min(self.min_width, self.natural_width()) if self.flex else self.natural_width()


_GAP = 2  # one space of padding each side between columns; none at the edges


def table_width(columns: list[Column]) -> int:
    """Cells wide the table needs with every column at its natural (flex: least) width."""
    return sum(c.least_width() for c in columns) + _GAP * max(0, len(columns) - 1)


def fit_table(columns: list[Column], width: int, *, header_style: str = "bold grey70") -> Text:
    """A borderless table no wider than `width`: columns condensed, then the least important dropped,
    until the rest fit. Drawn as plain lines of text (a rich Table measures every cell on every frame;
    the widths are known here, so this is several times cheaper)."""
    cols = list(columns)
    need = table_width
    for i in sorted(range(len(cols)), key=lambda i: (-cols[i].priority, -i)):  # least important first
        if need(cols) <= width:
            break
        c = cols[i]
        if c.short is not None:
            cols[i] = Column(c.header, c.short, c.priority, c.justify, c.flex, c.min_width)
    while len(cols) > 1 and need(cols) > width:
        worst = max(range(len(cols)), key=lambda i: (cols[i].priority, i))
        if cols[worst].priority == 0:
            break  # essential columns stay; the line is cut at the edge instead
        cols.pop(worst)
    spare = width - need(cols)
    widths = [min(c.natural_width(), c.least_width() + max(0, spare)) if c.flex else c.natural_width() for c in cols]

    def line(cells: list[Text | str], style: str = "") -> Text:
        row = Text(no_wrap=True, overflow="ellipsis", end="")
        for j, (cell, w, c) in enumerate(zip(cells, widths, cols)):
            t = cell.copy() if isinstance(cell, Text) else Text(cell)
            if t.cell_len > w:
                t.truncate(w, overflow="ellipsis")
            pad = " " * (w - t.cell_len)
            if j:
                row.append(" " * _GAP)
            if c.justify == "right":
                row.append(pad)
            row.append_text(t)
            if c.justify != "right" and j < len(cols) - 1:
                row.append(pad)
        if style:
            row.stylize(style)
        if row.cell_len > width:
            row.truncate(width, overflow="ellipsis")
        return row

    n = max((len(c.cells) for c in cols), default=0)
    lines = [line([c.header for c in cols], header_style)]
    lines += [line([c.cells[i] if i < len(c.cells) else "" for c in cols]) for i in range(n)]
    return Text("\n", no_wrap=True, overflow="ellipsis").join(lines)


class Fixed:
    """Renders its content in exactly `height` lines of the available width: cut or padded, never more,
    so a screen built of Fixed parts adds up to the terminal height."""

    def __init__(self, renderable: RenderableType, height: int):
        self.renderable = renderable
        self.height = max(0, height)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if self.height == 0:
            return
        lines = console.render_lines(self.renderable, options.update(height=self.height), pad=True)
        new_line = Segment.line()
        for line in lines[: self.height]:
            yield from line
            yield new_line


class FitWidth:
    """A renderable built for the width it is given (e.g. a fit_table printed into the scrollback)."""

    def __init__(self, build: Callable[[int], RenderableType]):
        self.build = build

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.build(options.max_width)
