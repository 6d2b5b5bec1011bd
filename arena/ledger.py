"""The store of record for money: an append-only SQLite trade log, and the accounts derived from it.

Every execute_trade outcome (fill or rejection) is one row, keyed by the tool call's idempotency key
(UNIQUE), together with the exact result the model was given — so a redelivered call is answered
from the log and trades once. Accounts are never stored: they are `arena.portfolio.replay` of the
log, folded once at open and then one trade at a time in memory, so a restarted process shows the
same accounts it had.

Durability: WAL journal, one transaction per call, committed before the model hears the result.
synchronous=NORMAL by default: a commit is in the WAL file before the call returns, so it survives
the tools process being killed (kill -9, OOM, Ctrl-C) — the failure this arena meets; only an OS crash
or power cut can lose the last few commits, and even then the file stays consistent. FULL adds an fsync
per commit, which also covers power loss, at a price: measured through Desk.execute_trade on the
2-core dev box (`python -m bench tools`, other jobs running) ~7,000 fills/s with NORMAL against ~2,500
with FULL, and raw FULL commits swing 1,500-4,900/s with disk contention: too close to the arena's
>= 2,000 trades/s target to be the default. `Ledger(path, synchronous="FULL")` (tools_and_dashboard.py
--sync full) chooses the other trade-off.

One writer per file: a Ledger holds an exclusive flock on `<ledger>.lock` for as long as it is open
(the kernel drops it when the process dies, however it dies), and notes its pid and host in that file.
A second Ledger on the same file, in this process or another, raises LedgerLocked naming the holder:
two writers would each fold only their own trades into memory and spend the same cash twice. Readers
are untouched (arena report opens the SQLite file read-only; WAL lets it read while the writer writes).

Besides money the ledger keeps what must survive a restart of the tools process: the turn each fill
belongs to (the orders-per-turn limit counts from it; the cooldown from each account's last fill) and
every finished agent turn's model usage (tokens and dollars, table `usage`). Columns added over time are
added to an older ledger when it is opened, and its rows filled in from the trade JSON; a row that no
longer parses (e.g. an agent name the wire rules now refuse) is skipped with one log line naming it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError

from arena.decisions import Usage
from arena.market import utcnow
from arena.portfolio import Account, Fill, Rejection, parse_outcome, replay

log = logging.getLogger(__name__)

MAX_TURNS_TRACKED = 4096  # (agent, turn) fill counts kept in memory for the orders-per-turn limit

SCHEMA = """
CREATE TABLE IF NOT EXISTS agents (
    name TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    reacted_to TEXT                  -- publication time of the snapshot its first call decided on
);
CREATE TABLE IF NOT EXISTS trades (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    call_key TEXT NOT NULL UNIQUE,   -- idempotency key of the tool call
    agent TEXT NOT NULL,
    status TEXT NOT NULL,            -- filled | rejected
    trade TEXT NOT NULL,             -- arena.portfolio.Fill or Rejection as JSON (status tells which)
    result TEXT NOT NULL             -- the JSON result the model was given
    -- and the columns of TRADE_COLUMNS, added by Ledger() to a ledger from before them
);
CREATE INDEX IF NOT EXISTS trades_agent ON trades(agent);
CREATE TABLE IF NOT EXISTS usage (   -- one row per finished agent turn that called a model
    agent TEXT NOT NULL,
    run_id TEXT NOT NULL,            -- the turn's correlation id (arena.decisions.Decision.run_id)
    model_calls INTEGER NOT NULL,
    tokens_in INTEGER NOT NULL,
    tokens_out INTEGER NOT NULL,
    tokens_reasoning INTEGER NOT NULL,
    tokens_cached INTEGER NOT NULL,
    cost_usd REAL,                   -- NULL: some call of the turn had no known price
    finished_at TEXT,
    PRIMARY KEY (agent, run_id)
);
"""

# Columns of `trades` beside the JSON, for readers that query SQL (name, type, from the Fill). Fills only;
# NULL on rejections. A ledger from before a column gets it on open, its old fills filled in.
TRADE_COLUMNS = {
    "turn": "TEXT",  # the agent run (correlation id) the call belonged to; NULL when unknown
    "price": "REAL",  # average fill price
    "top_price": "REAL",  # the best ask / bid it walked from
    "fee": "REAL",
    "slippage": "REAL",  # quote currency paid beyond the top of book
    "slippage_bps": "REAL",
}


class DuplicateCall(Exception):
    """A trade with this idempotency key is already in the log."""


class LedgerLocked(Exception):
    """Another open Ledger (in this process or another) already writes this file."""

    def __init__(self, path: str, holder: str):
        self.path, self.holder = path, holder
        super().__init__(f"ledger {path} is already open for writing by {holder} (lock file {path}.lock)")


def _take_lock(path: str):
    """The open lock file, exclusively flocked, with our pid and host written in it; LedgerLocked if held."""
    f = open(path + ".lock", "a+", encoding="utf-8")  # a+: never truncate the holder's note before we hold the lock
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = " ".join(f.read(300).split()) or "another process (it has not written its pid yet)"
        f.close()
        raise LedgerLocked(path, holder) from None
    except BaseException:
        f.close()
        raise
    f.truncate(0)
    f.write(f"pid {os.getpid()} on host {socket.gethostname()} since {utcnow():%Y-%m-%d %H:%M:%S} UTC\n")
    f.flush()
    return f


@dataclass(frozen=True)
class Recorded:
    """A logged tool call: its outcome and the result that was returned for it."""

    outcome: Fill | Rejection
    result: dict


class Ledger:
    """The trade log on disk plus the accounts folded from it, kept in memory.

    Thread-safe; callers that check-then-record (the desk) hold `lock` across both steps. The only
    writer of its file while open (see LedgerLocked).
    """

    def __init__(self, path: str | Path, *, synchronous: str = "NORMAL"):
        if synchronous.upper() not in ("NORMAL", "FULL"):
            raise ValueError("synchronous must be NORMAL or FULL")
        self.path = str(path)
        self._lockfile = None
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._lockfile = _take_lock(self.path)
        self.lock = threading.RLock()
        self._synchronous = synchronous.upper()
        # record_usage writes through a connection of its own, under a lock of its own: a turn's usage
        # waiting on a busy disk never holds up the desk (which needs `lock`) or its caller's thread.
        self._usage_lock = threading.Lock()
        self._usage_db: sqlite3.Connection | None = None
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per call.
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(SCHEMA)
            if "reacted_to" not in {row[1] for row in self._db.execute("PRAGMA table_info(agents)")}:
                self._db.execute("ALTER TABLE agents ADD COLUMN reacted_to TEXT")  # a ledger from before it
            self._skipped: set[int] = set()  # seqs of rows that do not parse (logged once each)
            self._migrate()
            self._accounts: dict[str, Account] = replay(self.trades())
            for (name,) in self._db.execute("SELECT name FROM agents ORDER BY rowid"):
                self._accounts.setdefault(name, Account(agent=name))
            self._n_trades = self._db.execute("SELECT count(*) FROM trades").fetchone()[0]
            self._turn_fills: OrderedDict[tuple[str, str], int] = OrderedDict()  # oldest turn first
            for agent, turn, n in reversed(
                self._db.execute(
                    "SELECT agent, turn, count(*) FROM trades WHERE status = 'filled' AND turn IS NOT NULL "
                    "GROUP BY agent, turn ORDER BY max(seq) DESC LIMIT ?",
                    (MAX_TURNS_TRACKED,),
                ).fetchall()
            ):
                self._turn_fills[(agent, turn)] = n
        except BaseException:
            if self._lockfile is not None:
                self._lockfile.close()
            raise

    # -- reading ---------------------------------------------------------------------------------

    def accounts(self) -> dict[str, Account]:
        """Every account, by agent name (a snapshot of the dict; the Account objects are live)."""
        with self.lock:
            return dict(self._accounts)

    def account(self, agent: str) -> Account | None:
        with self.lock:
            return self._accounts.get(agent)

    def __len__(self) -> int:
        """Rows in the log (fills and rejections)."""
        return self._n_trades

    def trades(self, agent: str | None = None) -> list[Fill | Rejection]:
        """The log in order, optionally for one agent."""
        sql, args = "SELECT seq, call_key, trade FROM trades ORDER BY seq", ()
        if agent is not None:
            sql, args = "SELECT seq, call_key, trade FROM trades WHERE agent = ? ORDER BY seq", (agent,)
        with self.lock:
            rows = self._db.execute(sql, args).fetchall()
        return [t for t in (self._parse(*row) for row in rows) if t is not None]

    def _parse(self, seq: int, call_key: str, raw: str) -> Fill | Rejection | None:
        """The row's outcome, or None (logged once per row) if it no longer parses."""
        try:
            return parse_outcome(raw)
        except ValidationError as exc:
            if seq not in self._skipped:
                self._skipped.add(seq)
                err = exc.errors()[0]
                log.warning(
                    "%s: skipped trade row %d (call %s): %s %s",
                    self.path,
                    seq,
                    call_key[:120],
                    ".".join(map(str, err["loc"])),
                    err["msg"],
                )
            return None

    def fills_in_turn(self, agent: str, turn: str) -> int:
        """Fills the agent has had in this turn (for the latest MAX_TURNS_TRACKED turns; older ones are over)."""
        with self.lock:
            return self._turn_fills.get((agent, turn), 0)

    def usage(self) -> dict[str, Usage]:
        """Each agent's model usage over the turns recorded with record_usage, in order of first use."""
        with self.lock:
            rows = self._db.execute(
                "SELECT agent, sum(model_calls), sum(tokens_in), sum(tokens_out), sum(tokens_reasoning), "
                "sum(tokens_cached), sum(coalesce(cost_usd, 0)), sum(CASE WHEN cost_usd IS NULL THEN model_calls "
                "ELSE 0 END) FROM usage GROUP BY agent ORDER BY min(rowid)"
            ).fetchall()
        return {agent: Usage(*totals) for agent, *totals in rows}

    def find(self, call_key: str) -> Recorded | None:
        """The logged outcome of a tool call, if it was already executed."""
        with self.lock:
            row = self._db.execute("SELECT trade, result FROM trades WHERE call_key = ?", (call_key,)).fetchone()
        if row is None:
            return None
        return Recorded(parse_outcome(row[0]), json.loads(row[1]))

    # -- writing ---------------------------------------------------------------------------------

    def open_account(
        self, agent: str, at: datetime | None = None, reacted_to: datetime | None = None
    ) -> tuple[Account, bool]:
        """The agent's account, created (durably, with INITIAL_CASH) on first use. Returns (account, created).

        reacted_to: the snapshot its first call decided on, kept so that `arena report` starts the
        agent's value series where the live tracker did."""
        with self.lock:
            acct = self._accounts.get(agent)
            if acct is not None:
                return acct, False
            with self._transaction():
                self._db.execute(
                    "INSERT OR IGNORE INTO agents(name, created_at, reacted_to) VALUES (?, ?, ?)",
                    (agent, (at or utcnow()).isoformat(), reacted_to.isoformat() if reacted_to else None),
                )
            acct = self._accounts[agent] = Account(agent=agent)
            return acct, True

    def record(self, call_key: str, outcome: Fill | Rejection, result: dict, *, turn: str | None = None) -> Account:
        """Append one outcome durably, then fold it into the agent's account.

        turn: the agent run the call belongs to (counted by fills_in_turn). Raises DuplicateCall (and
        changes nothing) if `call_key` is already logged.
        """
        with self.lock:
            try:
                with self._transaction():
                    if outcome.agent not in self._accounts:
                        self._db.execute(
                            "INSERT OR IGNORE INTO agents(name, created_at) VALUES (?, ?)",
                            (outcome.agent, outcome.executed_at.isoformat()),
                        )
                    self._db.execute(
                        "INSERT INTO trades(call_key, agent, status, trade, result, turn, price, top_price, fee, "
                        "slippage, slippage_bps) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (call_key, outcome.agent, outcome.status, outcome.model_dump_json(), json.dumps(result), turn,
                         *_columns(outcome)),
                    )  # fmt: skip
            except sqlite3.IntegrityError as exc:
                if "UNIQUE" in str(exc) and "call_key" in str(exc):
                    raise DuplicateCall(call_key) from None
                raise
            self._n_trades += 1
            acct = self._accounts.setdefault(outcome.agent, Account(agent=outcome.agent))
            acct.fold(outcome)  # only after the commit: memory never runs ahead of the disk
            if isinstance(outcome, Fill) and turn is not None:
                key = (outcome.agent, turn)
                self._turn_fills[key] = self._turn_fills.get(key, 0) + 1
                self._turn_fills.move_to_end(key)
                while len(self._turn_fills) > MAX_TURNS_TRACKED:
                    self._turn_fills.popitem(last=False)
            return acct

    def record_usage(self, decision) -> bool:
        """Keep a finished turn's model usage (an arena.decisions.Decision) durably; False if that turn
        (agent, run_id) is already kept or it called no model. Thread-safe; may wait for a busy disk
        (busy_timeout), so a caller on an event loop runs it in a thread."""
        if decision.status == "started" or not decision.model_calls:
            return False
        run_id = decision.run_id or f"tick {decision.tick_seq} at {decision.started_at.isoformat()}"
        row = (decision.agent, run_id, decision.model_calls, decision.tokens_in, decision.tokens_out,
               decision.tokens_reasoning, decision.tokens_cached, decision.cost_usd,
               decision.finished_at.isoformat() if decision.finished_at else None)  # fmt: skip
        sql = (
            "INSERT OR IGNORE INTO usage(agent, run_id, model_calls, tokens_in, tokens_out, tokens_reasoning, "
            "tokens_cached, cost_usd, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        if self.path == ":memory:":  # one database per connection: the main one
            with self.lock, self._transaction():
                return self._db.execute(sql, row).rowcount == 1
        with self._usage_lock:
            if self._usage_db is None:
                self._usage_db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                self._usage_db.execute(f"PRAGMA synchronous={self._synchronous}")
                self._usage_db.execute("PRAGMA busy_timeout=5000")
            db = self._usage_db
            db.execute("BEGIN IMMEDIATE")
            try:
                n = db.execute(sql, row).rowcount
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return n == 1

    def _migrate(self) -> None:
        """Add the TRADE_COLUMNS a ledger from before them lacks, and fill them in for its fills."""
        have = {row[1] for row in self._db.execute("PRAGMA table_info(trades)")}
        missing = [c for c in TRADE_COLUMNS if c not in have]
        if not missing:
            return
        with self._transaction():
            for c in missing:
                self._db.execute(f"ALTER TABLE trades ADD COLUMN {c} {TRADE_COLUMNS[c]}")
            rows = self._db.execute("SELECT seq, call_key, trade FROM trades WHERE status = 'filled'").fetchall()
            for seq, call_key, raw in rows:
                if (t := self._parse(seq, call_key, raw)) is not None:
                    self._db.execute(
                        "UPDATE trades SET price = ?, top_price = ?, fee = ?, slippage = ?, slippage_bps = ? "
                        "WHERE seq = ?",
                        (*_columns(t), seq),
                    )
        if rows:
            log.info("%s: added columns %s to its trades, %d fills filled in", self.path, ", ".join(missing), len(rows))

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        with self._usage_lock:
            if self._usage_db is not None:
                self._usage_db.close()
                self._usage_db = None
        with self.lock:
            self._db.close()
            if self._lockfile is not None:  # closing the file releases the flock
                self._lockfile.close()
                self._lockfile = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _columns(t: Fill | Rejection) -> tuple:
    """(price, top_price, fee, slippage, slippage_bps) of a fill; NULLs for a rejection. A fill from before
    the impact model filled at the top of book: its top price is its price."""
    if not isinstance(t, Fill):
        return (None,) * 5
    return (t.price, t.top_price or t.price, t.fee, t.slippage, t.slippage_bps)
