"""`arena report --html OUT`: a finished run as one self-contained HTML page (leaderboard, value curves,
positions and trades; no network needed to open it), from an export, a ledger, or both.

- an export (tools_and_dashboard.py --export / arena demo's leaderboard.json): the leaderboard, positions and
  value curves as the dashboard had them; it holds no trade list;
- a ledger: every trade, and the leaderboard computed by `arena report` (curves need --market);
- both (a run folder's leaderboard.json and ledger.db): the export's leaderboard and curves, the ledger's trades.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from arena import fmt
from arena.leaderboard import ROW_KEYS
from arena.metrics import BASELINE_NAME, value_series
from arena.portfolio import INITIAL_CASH, Fill, Rejection, replay
from arena.report import SQLITE_MAGIC, ReportError, _export_runs, _read_json, ledger_leaderboard, read_ledger
from arena.web.html import report_html


def _is_ledger(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC


def _ledger_board(
    trades: Sequence[Fill | Rejection], names: Sequence[str], source: str, *, market, prices, fee_bps, interval_s
) -> tuple[dict, list[dict]]:
    """The leaderboard of a ledger in the export's shape (ranks, positions, metrics nested), and its value samples."""
    board = ledger_leaderboard(
        trades, agents=names, source=source, prices=prices, market=market, fee_bps=fee_bps, interval_s=interval_s
    )
    marks = {pid: m["price"] for pid, m in board.get("marks", {}).items()}
    accounts = replay(list(trades))
    agents, rank = [], 0
    for row in board["agents"]:
        rank += not row.get("baseline")
        acc = accounts.get(row["name"])
        positions = []
        for pid, p in sorted((acc.positions if acc else {}).items()):
            mark = marks.get(pid)
            value = p.quantity * (mark if mark is not None else p.avg_cost)
            positions.append(
                {
                    "product_id": pid,
                    "quantity": p.quantity,
                    "avg_cost": p.avg_cost,
                    "mark": mark,
                    "market_value": value,
                    "unrealized_pnl": value - p.quantity * p.avg_cost,
                    "opened_at": p.opened_at.isoformat() if p.opened_at else None,
                }
            )
        agents.append(
            {
                **{k: v for k, v in row.items() if k in ROW_KEYS},
                "rank": None if row.get("baseline") else rank,
                "positions": positions,
                "metrics": {k: v for k, v in row.items() if k not in ROW_KEYS},
            }
        )
    fills = [t for t in trades if isinstance(t, Fill)]
    out = {
        "generated_at": board["generated_at"],
        "source": source,
        "starting_cash": INITIAL_CASH,
        "positions_marked_at": "best bid",
        "fee_bps": fee_bps if fee_bps is not None else (fills[0].fee / fills[0].notional * 10_000 if fills else 0.0),
        "agents": agents,
        "notes": board.get("notes", []),
        "marks": board.get("marks", {}),
    }
    samples: list[dict] = []
    if market:
        by_time: dict[str, dict[str, float]] = {}
        for name, series in value_series(list(trades), market, fee_bps=out["fee_bps"]).items():
            for t, v in series:
                by_time.setdefault(t.isoformat(), {})[name] = v
        samples = [{"t": t, "values": v} for t, v in sorted(by_time.items())]
    return out, samples


def build(
    paths: Sequence[str | Path],
    *,
    market: Sequence = (),
    prices: Mapping[str, float] | None = None,
    fee_bps: float | None = None,
    interval_s: float | None = None,
) -> dict:
    """The page's data (report_html's `data`) from one export and/or one ledger."""
    exports, ledgers = [], []
    for p in map(Path, paths):
        if not p.is_file():
            raise ReportError(f"{p}: no such file")
        (ledgers if _is_ledger(p) else exports).append(p)
    if len(exports) > 1 or len(ledgers) > 1:
        raise ReportError("--html takes one run: an export, a ledger, or an export and its ledger")
    notes: list[str] = []
    trades: list[Fill | Rejection] = []
    if ledgers:
        trades, names = read_ledger(ledgers[0])
    if exports:
        runs = _export_runs(exports[0], _read_json(exports[0]))
        if len(runs) != 1:
            raise ReportError(f"{exports[0]}: holds {len(runs)} runs; --html takes one")
        board = runs[0]
        for a in board["agents"]:  # this command's own --json rows are flat: the page reads metrics nested
            a.setdefault("metrics", {k: v for k, v in a.items() if k not in ROW_KEYS})
        samples = list(board.get("value_history", {}).get("samples", []))
        source = str(exports[0]) + (f" + {ledgers[0]}" if ledgers else "")
        if not ledgers:
            notes.append("an export holds no trade list: pass the run's ledger too for the trades")
    else:
        board, samples = _ledger_board(
            trades, names, str(ledgers[0]), market=market, prices=prices, fee_bps=fee_bps, interval_s=interval_s
        )
        source = str(ledgers[0])
        notes += board.get("notes", [])
        if board.get("marks"):
            notes.append(
                "open positions valued at: "
                + ", ".join(f"{pid} {fmt.price(m['price'])} ({m['from']})" for pid, m in board["marks"].items())
            )
    if not samples:
        notes.append("no value history: curves need an export or --market")
    return {
        "board": board,
        "samples": samples,
        "trades": [t.model_dump(mode="json") for t in trades],
        "source": source,
        "notes": notes,
        "trades_note": "no trade list in an export: pass the run's ledger too (arena report --html OUT leaderboard.json ledger.db)"
        if not ledgers
        else "no trades in this run",
        "baseline": BASELINE_NAME,
    }


def write(out: str | Path, paths: Sequence[str | Path], **options: Any) -> Path:
    """Write the page atomically (a reader never sees half a file); returns its path."""
    out = Path(out)
    text = report_html(build(paths, **options))
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a report is for sharing
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out
