"""The page's HTML: the live page (static files linked) and a finished run as one self-contained file.

Both use the same markup, stylesheet and script (arena/web/static/app.js): the live page fills itself
from the server's pushes, the report from the data inlined into it (`window.ARENA_STATIC`).
"""

from __future__ import annotations

import html
import json
from pathlib import Path

STATIC = Path(__file__).resolve().parent / "static"

BODY = """
<header class="top">
  <div class="brand"><h1>{title}</h1><span id="pill" class="pill waiting">CONNECTING</span></div>
  <div id="problems" class="problems" role="status" aria-live="polite"></div>
  <div id="facts" class="facts"></div>
</header>
<main class="grid">
  <section class="card board" aria-labelledby="h-board">
    <div class="card-head"><h2 id="h-board">Leaderboard</h2><span id="board-note" class="note"></span></div>
    <div class="scroll"><table id="board" class="num-table"><thead></thead><tbody></tbody></table></div>
  </section>
  <section class="card chart" aria-labelledby="h-chart">
    <div class="card-head"><h2 id="h-chart">Portfolio value</h2><span id="chart-note" class="note">UTC · marked at best bid</span></div>
    <div id="chart" class="chart-box"></div>
  </section>
  <section class="card market live-only" aria-labelledby="h-market">
    <div class="card-head"><h2 id="h-market">Market</h2><span id="market-note" class="note"></span></div>
    <div class="scroll"><table id="market" class="num-table"><thead><tr><th class="l">Product</th><th>Last</th><th>Bid</th><th>Ask</th><th>Spread</th><th>Quote age</th></tr></thead><tbody></tbody></table></div>
  </section>
  <section class="card positions" aria-labelledby="h-positions">
    <div class="card-head"><h2 id="h-positions">Open positions</h2><span class="note">valued at the best bid (Market)</span></div>
    <div class="scroll"><table id="positions" class="num-table"><thead><tr><th class="l">Agent</th><th class="l">Product</th><th>Quantity</th><th>Avg cost</th><th>Value</th><th>Unrealized</th></tr></thead><tbody></tbody></table></div>
  </section>
  <section class="card trades" aria-labelledby="h-trades">
    <div class="card-head"><h2 id="h-trades">Fills &amp; rejections</h2><span id="trades-note" class="note">newest first</span></div>
    <div class="scroll tall"><table id="trades" class="num-table"><thead><tr><th class="l">Time</th><th class="l">Agent</th><th class="l">Side</th><th>Quantity</th><th class="l">Product</th><th>Price</th><th>Fee</th><th class="l">Result</th></tr></thead><tbody></tbody></table></div>
  </section>
  <section class="card chat live-only" aria-labelledby="h-chat">
    <div class="card-head"><h2 id="h-chat">Model chat</h2>
      <label class="filter">Agent <select id="agent-filter"><option value="">all agents</option></select></label></div>
    <div id="chat" class="chat-list tall"></div>
  </section>
  <section class="card procs live-only" aria-labelledby="h-procs">
    <div class="card-head"><h2 id="h-procs">Processes</h2><span class="note">last report of each</span></div>
    <div id="procs" class="procs-list"></div>
  </section>
</main>
<footer class="foot"><span id="foot"></span></footer>
"""


def _read(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


def page_html(title: str = "The Agents Trading Arena") -> str:
    """The live page: links the vendored static files; app.js connects to /events."""
    t = html.escape(title)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{t}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="static/uplot/uPlot.min.css">
<link rel="stylesheet" href="static/app.css">
</head><body class="live">
{BODY.format(title=t)}
<script src="static/uplot/uPlot.iife.min.js"></script>
<script src="static/app.js"></script>
</body></html>
"""


def _inline_json(data: dict) -> str:
    """JSON that is safe inside a <script> element."""
    return (
        json.dumps(data, separators=(",", ":"), default=str)
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
    )


def report_html(data: dict, title: str = "The Agents Trading Arena — report") -> str:
    """A finished run as one HTML file with no external reference: stylesheet, chart library, script and
    data inlined. `data`: {"board": export dict, "samples": [...], "trades": [...], "source": str, "notes": [...]}."""
    t = html.escape(title)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{t}</title>
<link rel="icon" href="data:,">
<style>{_read("uplot/uPlot.min.css")}</style>
<style>{_read("app.css")}</style>
</head><body class="report">
{BODY.format(title=t)}
<script>{_read("uplot/uPlot.iife.min.js")}</script>
<script>window.ARENA_STATIC = {_inline_json(data)};</script>
<script>{_read("app.js")}</script>
</body></html>
"""
