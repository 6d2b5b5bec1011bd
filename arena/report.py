"""`arena report PATH...`: the leaderboard from a tools-process export (JSON) or a ledger (SQLite).

A ledger holds trades but no prices: open positions are valued at the last fill price per product
unless --prices or --market (a connector --record file) give better marks, and drawdown, Sharpe and the
buy-and-hold baseline need --market's price history. The table says which marks it used.
The table itself is arena/leaderboard.py, shared with the dashboard.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sqlite3
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from rich.console import Console, Group
from rich.text import Text

from arena import fmt
from arena.leaderboard import NA, _num, leaderboard_table  # noqa: F401 - leaderboard_table re-exported
from arena.market import Quote, utcnow
from arena.metrics import PriceSample, compute, mark_of
from arena.portfolio import INITIAL_CASH, Fill, Rejection, parse_outcome, replay

log = logging.getLogger("arena.report")

SQLITE_MAGIC = b"SQLite format 3\x00"


class ReportError(Exception):
    """Input the report cannot use; the message says what is wrong and with which file."""


# -- reading inputs -------------------------------------------------------------------------------


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path}: cannot read: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not a leaderboard export (invalid JSON: {exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("agents", data.get("runs")), list):
        raise ReportError(f'{path}: not a leaderboard export (expected a JSON object with an "agents" list)')
    return data


def _export_runs(path: Path, data: dict) -> list[dict]:
    """An export file (or this command's own --json output) as leaderboard dicts."""
    runs = data["runs"] if "runs" in data else [data]
    out = []
    for run in runs:
        agents = run.get("agents") if isinstance(run, dict) else None
        if not isinstance(agents, list):
            raise ReportError(f'{path}: a run without an "agents" list')
        rows = []
        for i, a in enumerate(agents):
            if not isinstance(a, dict) or not isinstance(a.get("name"), str) or _num(a, "total_value") is None:
                raise ReportError(f'{path}: agent #{i + 1} needs a "name" and a numeric "total_value"')
            nested = a.get("metrics") if isinstance(a.get("metrics"), dict) else {}
            rows.append({**nested, **a})  # metric fields may sit at the top level or under "metrics"
        out.append({**run, "source": run.get("source") or str(path), "agents": rows})
    return out


def read_ledger(path: Path) -> tuple[list[Fill | Rejection], dict[str, datetime | None]]:
    """A ledger file's trade log (in log order) and every account, read-only: name -> the snapshot its
    first call reacted to (None when the ledger does not know), in order of opening.

    Reads arena.ledger's tables directly through a read-only connection rather than opening a
    Ledger (which creates its schema and takes write locks): a running arena may be writing it.
    A row that parses as neither a Fill nor a Rejection is logged and skipped.
    """
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error as exc:
        raise ReportError(f"{path}: cannot open the ledger read-only: {exc}") from exc
    try:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "trades" not in tables:
            raise ReportError(f"{path}: an SQLite file but not an arena ledger (no trades table)")
        rows = db.execute("SELECT seq, trade FROM trades ORDER BY seq").fetchall()
        columns = {row[1] for row in db.execute("PRAGMA table_info(agents)")} if "agents" in tables else set()
        reacted = "reacted_to" if "reacted_to" in columns else "NULL"
        agent_rows = db.execute(f"SELECT name, {reacted} FROM agents ORDER BY rowid").fetchall() if columns else []
    except sqlite3.Error as exc:
        raise ReportError(f"{path}: cannot read the ledger: {exc}") from exc
    finally:
        db.close()
    names: dict[str, datetime | None] = {}
    for name, at in agent_rows:
        try:
            names[name] = datetime.fromisoformat(at) if at else None
        except (TypeError, ValueError):
            names[name] = None
        if names[name] is not None and names[name].tzinfo is None:
            names[name] = None  # a time without a zone is not one we wrote
    trades = []
    for seq, raw in rows:
        try:
            trades.append(parse_outcome(raw))
        except ValidationError as exc:
            log.warning("%s: skipped trade row %s that does not parse (%s)", path, seq, exc.errors()[0]["msg"])
    return trades, names


class _Marks(BaseModel):
    """The part of a recorded MarketSnapshot the report needs (candles are skipped, not kept)."""

    published_at: datetime
    quotes: dict[str, Quote]


def read_market(path: Path) -> list[PriceSample]:
    """A connector --record file (one MarketSnapshot JSON per line) as price samples, in time order.
    Malformed lines are logged and skipped."""
    samples: list[PriceSample] = []
    try:
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    m = _Marks.model_validate_json(line)
                except ValidationError as exc:
                    log.warning("%s:%d: skipped a malformed snapshot line (%s)", path, n, exc.errors()[0]["msg"])
                    continue
                samples.append((m.published_at, m.quotes))
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path}: cannot read the market recording: {exc}") from exc
    if not samples:
        raise ReportError(f"{path}: no market snapshots in it (expected one MarketSnapshot JSON per line)")
    return sorted(samples, key=lambda s: s[0])


def ledger_leaderboard(
    trades: Sequence[Fill | Rejection],
    *,
    source: str,
    agents: Sequence[str] | Mapping[str, datetime | None] = (),
    prices: Mapping[str, float] | None = None,
    market: Sequence[PriceSample] = (),
    fee_bps: float | None = None,
    interval_s: float | None = None,
    initial_cash: float = INITIAL_CASH,
) -> dict:
    """Leaderboard JSON from a trade log. Marks for open positions, by precedence: `prices`, the last
    bid in `market`, the last fill price of the product. The baseline needs `market`. fee_bps (for
    the baseline) defaults to the fee rate of the log's first fill with a nonzero notional."""
    # "notional": not a live quote's bid (a fill's top of book, or a quote the feed marked stale).
    marks: dict[str, dict] = {}
    for t in trades:
        if isinstance(t, Fill):
            marks[t.product_id] = {
                "price": t.top_price or t.price,  # the book it traded at, without its own impact
                "from": f"last fill: a {t.side} at {t.executed_at:%Y-%m-%d %H:%M:%S}",
                "notional": True,
            }
    for t, quotes in market:
        for pid, q in quotes.items():
            if (m := mark_of(q)) is not None and m > 0:
                stale = isinstance(q, Quote) and q.stale
                marks[pid] = {
                    "price": m,
                    "from": f"--market: {'stale quote, ' if stale else ''}bid at {t:%Y-%m-%d %H:%M:%S}",
                    "notional": stale,
                }
    for pid, p in (prices or {}).items():
        marks[pid] = {"price": p, "from": "--prices", "notional": False}
    if fee_bps is None:
        fills = [t for t in trades if isinstance(t, Fill)]
        fee_bps = fills[0].fee / fills[0].notional * 10_000 if fills else 0.0
    rows = compute(
        trades,
        market,
        initial_cash=initial_cash,
        interval_s=interval_s,
        fee_bps=fee_bps,
        baseline=bool(market),
        marks={pid: m["price"] for pid, m in marks.items()},
        agents=agents,
    )
    accounts = replay(trades)
    held = {pid for acc in accounts.values() for pid in acc.positions}  # the marks that matter
    for row in rows.values():
        acc = accounts.get(row.name)
        for pid in sorted(acc.positions) if acc else ():
            if marks.get(pid, {}).get("notional"):
                row.notional_marks[pid] = marks[pid]["from"]
    return {
        "generated_at": utcnow().isoformat(),
        "source": source,
        "marks": {pid: m for pid, m in sorted(marks.items()) if pid in held or market},
        "notes": (
            []
            if market
            else [
                "max DD, Sharpe, time in market and the buy-and-hold baseline need the price history: "
                "pass --market FILE (a coinbase_connector.py --record file)"
            ]
        )
        + ["a ledger has no tokens: model tokens and cost per agent are in the tools process's export (--export)"],
        "agents": [r.model_dump(mode="json") for r in rows.values()],
    }


def load(path: str | Path, **ledger_options: Any) -> list[dict]:
    """One input file as a list of leaderboard dicts (an export may hold several runs)."""
    path = Path(path)
    if not path.is_file():
        raise ReportError(f"{path}: no such file")
    with path.open("rb") as f:
        head = f.read(len(SQLITE_MAGIC))
    if head == SQLITE_MAGIC:
        trades, agents = read_ledger(path)
        return [ledger_leaderboard(trades, agents=agents, source=str(path), **ledger_options)]
    if any(v for k, v in ledger_options.items() if k in ("prices", "market")):
        log.warning("%s is an export: its values are used as exported (--prices/--market apply to ledger files)", path)
    return _export_runs(path, _read_json(path))


# -- printing -------------------------------------------------------------------------------------


def _notes(board: dict, indent: str = "") -> list[Text]:
    """What a reader must know to trust the numbers: the marks used and what is missing."""
    lines = []
    if marks := board.get("marks"):
        lines.append("open positions valued at:")
        lines += [
            f"  {pid} {fmt.price(m['price'])} ({m['from']}){' - notional' if m.get('notional') else ''}"
            for pid, m in marks.items()
        ]
    lines += board.get("notes", [])
    return [Text(indent + line, style="dim") for line in lines]


def render_boards(boards: Sequence[dict], width: int | None = None) -> Group:
    """One table for one run; several runs side by side in one table with a run column."""
    if len(boards) == 1:
        b = boards[0]
        parts: list[Any] = [leaderboard_table(b["agents"], title=f"Leaderboard — {b['source']}", width=width)]
        parts += _notes(b)
        if "generated_at" in b:
            parts.append(Text(f"generated at {b['generated_at']}", style="dim"))
        return Group(*parts)
    labels = _run_labels([b["source"] for b in boards])
    rows = [{**a, "run": label} for b, label in zip(boards, labels) for a in b["agents"]]
    parts = [leaderboard_table(rows, title="Leaderboard — runs compared", width=width, run_column=True)]
    for b, label in zip(boards, labels):
        line = f"{label}: {b['source']}" + (f", generated at {b['generated_at']}" if "generated_at" in b else "")
        parts.append(Text(line, style="dim"))
        parts += _notes(b, indent="  ")
    return Group(*parts)


def _run_labels(sources: Sequence[str]) -> list[str]:
    stems = [Path(s).stem for s in sources]
    labels = []
    for i, stem in enumerate(stems):
        clash = stems.count(stem) > 1
        labels.append(f"{stem}#{stems[: i + 1].count(stem)}" if clash else stem)
    return labels


def print_export(data: dict, console: Console | None = None, *, source: str = "final standings") -> None:
    """Print the leaderboard of a tools-process export dict (used by `arena demo`)."""
    console = console or Console()
    console.print(render_boards(_export_runs(Path(source), data), width=console.width))


# -- command line ---------------------------------------------------------------------------------


def _parse_prices(text: str) -> dict[str, float]:
    prices = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        pid, sep, value = item.partition("=")
        try:
            price = float(value)
        except ValueError:
            price = math.nan
        if not sep or not pid.strip() or not (math.isfinite(price) and price > 0):
            raise argparse.ArgumentTypeError(f"expected PRODUCT=PRICE with a positive price, got {item!r}")
        prices[pid.strip().upper()] = price
    return prices


def _number(low: float, *, inclusive: bool, kind=float):
    """An argparse type: a finite number above `low` (or equal to it when inclusive)."""

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            v = math.nan
        if not (math.isfinite(v) and (v >= low if inclusive else v > low)):
            raise argparse.ArgumentTypeError(f"expected a number {'>=' if inclusive else '>'} {low:g}, got {text!r}")
        return v

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="arena report",
        description="Print the leaderboard from tools-process exports (--export JSON) or ledger files (SQLite). "
        "Several files are compared in one table with a run column. Metric definitions: docs/METRICS.md.",
    )
    p.add_argument(
        "paths", nargs="+", metavar="PATH", help="export JSON or ledger SQLite file(s); the format is detected"
    )
    p.add_argument("--json", action="store_true", help="print the computed leaderboard as JSON instead of a table")
    p.add_argument(
        "--prices",
        type=_parse_prices,
        default=None,
        metavar="P=X,...",
        help="ledger files: value open positions at these prices, e.g. BTC-USD=95000,SOL-USD=180 "
        "(default: the last bid in --market, else each product's last fill price)",
    )
    p.add_argument(
        "--market",
        type=Path,
        default=None,
        metavar="FILE",
        help="ledger files: a market recording (coinbase_connector.py --record) for the price history: "
        "enables drawdown, Sharpe, time in market and the buy-and-hold baseline (default: none)",
    )
    p.add_argument(
        "--fee-bps",
        type=_number(0, inclusive=True),
        default=None,
        help="the baseline's fee in basis points (default: the ledger's own fee rate, from its first fill)",
    )
    p.add_argument(
        "--interval",
        type=_number(0, inclusive=False),
        default=None,
        metavar="SECONDS",
        help="sampling interval used to annualize Sharpe (default: the mean spacing of the samples)",
    )
    p.add_argument(
        "--width",
        type=_number(40, inclusive=True, kind=int),
        default=None,
        help="table width in columns, at least 40 (default: the terminal's)",
    )
    p.add_argument(
        "--html",
        type=Path,
        default=None,
        metavar="OUT",
        help="also write the run as one self-contained HTML page (leaderboard, value curves, positions, trades; "
        "opens with no network) from an export, a ledger (curves need --market), or an export and its ledger",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="arena report: %(message)s")
    args = parse_args(argv)
    try:
        market = read_market(args.market) if args.market else []
        options = dict(prices=args.prices, market=market, fee_bps=args.fee_bps, interval_s=args.interval)
        boards = [board for path in args.paths for board in load(path, **options)]
        if args.html:
            from arena.web.report import write as write_html

            print(f"HTML report written to {write_html(args.html, args.paths, **options)}", file=sys.stderr)
        if args.json:
            out = boards[0] if len(boards) == 1 else {"generated_at": utcnow().isoformat(), "runs": boards}
            print(json.dumps(out, indent=2, default=str))
        else:
            console = Console(width=args.width) if args.width else Console()
            console.print(render_boards(boards, width=console.width))
    except ReportError as exc:
        print(f"arena report: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # `arena report ... | head`: the reader left, nothing is wrong
        sys.stdout = open(os.devnull, "w")
    return 0


if __name__ == "__main__":
    sys.exit(main())
