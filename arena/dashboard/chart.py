"""The portfolio-value chart: braille lines against wall-clock time."""

from __future__ import annotations

import math
from datetime import datetime, timezone

from rich.text import Text

from arena.portfolio import INITIAL_CASH
from arena.ui import (
    agent_color,
    hms,
    money,
)

_BRAILLE_BITS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))


def _nice_bounds(lo: float, hi: float) -> tuple[float, float]:
    """Auto-range with padding; a flat line gets a visible band around it."""
    mid = (lo + hi) / 2
    half = max((hi - lo) / 2 * 1.15, abs(mid) * 0.0001, 1.0)
    return mid - half, mid + half


def _nice_step(span: float, ticks: int) -> float:
    """A round step (1, 2, 2.5 or 5 x 10^k) giving about `ticks` intervals over `span`."""
    raw = span / ticks
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if raw <= m * mag)


def value_chart(
    series: dict[str, list[tuple[float, float]]],
    width: int,
    height: int,
    *,
    start: datetime,
    end: datetime,
    baseline: float | None = INITIAL_CASH,
) -> Text:
    """Each agent's value (series of (UNIX seconds, value)) as a braille line against wall-clock time:
    y labels on the left, HH:MM:SS labels below. Exactly `height` lines of `width` cells. Later series
    draw over earlier ones."""
    values = [v for pts in series.values() for _, v in pts]
    lo, hi = _nice_bounds(min(values), max(values)) if values else _nice_bounds(INITIAL_CASH, INITIAL_CASH)
    plot_h = max(1, height - 1)
    dots_h = plot_h * 4
    y_scale = (dots_h - 1) / (hi - lo)
    # round-number ticks (1, 2, 2.5 or 5 x 10^k apart), each on the text row it falls in, none adjacent
    step = _nice_step(hi - lo, max(2, plot_h // 2))
    cents = step % 1 != 0
    labels: dict[int, str] = {}
    v = math.ceil(lo / step) * step
    while v <= hi:
        r = min(plot_h - 1, max(0, round((hi - v) * y_scale) // 4))
        if r not in labels and r - 1 not in labels and r + 1 not in labels:
            labels[r] = money(v, cents=cents)
        v += step
    if len(labels) < 2 and plot_h >= 3:  # a short chart: also label the edge row farthest from the tick
        r = plot_h - 1 if labels and min(labels) < plot_h / 2 else 0
        labels[r] = money(hi - (4 * r + 1.5) / (dots_h - 1) * (hi - lo), cents=hi - lo < 20)
    if not labels:
        labels[0] = money(hi, cents=True)
    label_w = max(len(s) for s in labels.values())
    plot_w = max(1, width - label_w - 2)
    dots_w = plot_w * 2
    t0, t1 = start.timestamp(), max(end.timestamp(), start.timestamp() + 1)
    x_scale = (dots_w - 1) / (t1 - t0)

    bits = [[0] * plot_w for _ in range(plot_h)]
    owner: list[list[str]] = [[""] * plot_w for _ in range(plot_h)]

    def plot(x: int, y: int, who: str) -> None:
        cx, cy = x >> 1, y >> 2
        bits[cy][cx] |= _BRAILLE_BITS[y & 3][x & 1]
        owner[cy][cx] = who

    for name, pts in series.items():
        # Samples that land in the same dot column become one vertical stroke (first, last, min, max),
        # so drawing costs the chart's width, not the run's length.
        columns: dict[int, list[int]] = {}
        x_max, y_max = dots_w - 1, dots_h - 1
        for t, v in pts:
            x = int((t - t0) * x_scale + 0.5)
            x = 0 if x < 0 else min(x, x_max)
            y = int((hi - v) * y_scale + 0.5)
            y = 0 if y < 0 else min(y, y_max)
            c = columns.get(x)
            if c is None:
                columns[x] = [y, y, y, y]
            else:
                c[1] = y
                if y < c[2]:
                    c[2] = y
                elif y > c[3]:
                    c[3] = y
        prev: tuple[int, int] | None = None
        for x in sorted(columns):
            first, last, top, bottom = columns[x]
            if prev is not None:  # join the samples: a line through time, not a scatter
                px, py = prev
                steps = max(x - px, abs(first - py), 1)
                for i in range(1, steps):
                    plot(round(px + (x - px) * i / steps), round(py + (first - py) * i / steps), name)
            for y in range(top, bottom + 1):
                plot(x, y, name)
            prev = (x, last)

    base_row = None
    if baseline is not None and lo <= baseline <= hi:
        base_row = min(dots_h - 1, max(0, round((hi - baseline) * y_scale))) // 4

    out = Text(no_wrap=True, overflow="crop")
    for r in range(plot_h):
        label = labels.get(r)
        out.append(label.rjust(label_w) + " ┤" if label else " " * label_w + " │", style="grey50")
        run, run_style = [], ""
        for c in range(plot_w):  # consecutive cells of one colour become one span
            b = bits[r][c]
            ch, st = (
                (chr(0x2800 + b), agent_color(owner[r][c])) if b else ("┈", "grey35") if r == base_row else (" ", "")
            )
            if st != run_style and run:
                out.append("".join(run), style=run_style)
                run = []
            run.append(ch)
            run_style = st
        out.append("".join(run), style=run_style)
        out.append("\n")
    # time axis: HH:MM:SS under the start, the end, and evenly in between where there is room
    axis = [" "] * (label_w + 2 + plot_w)
    n_labels = max(2, min(6, plot_w // 14 + 1))
    for i in range(n_labels):
        frac = i / (n_labels - 1)
        t = datetime.fromtimestamp(t0 + (t1 - t0) * frac, timezone.utc)
        s = hms(t)
        pos = label_w + 2 + round(frac * (plot_w - 1)) - len(s) // 2
        pos = min(max(pos, label_w + 2), len(axis) - len(s))
        if all(ch == " " for ch in axis[max(0, pos - 1) : pos + len(s) + 1]):
            axis[pos : pos + len(s)] = list(s)
    out.append("".join(axis), style="grey50")
    return out
