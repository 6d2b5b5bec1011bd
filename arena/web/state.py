"""What the web page shows, folded from the arena's topics. Pure logic, no Kafka, no HTTP.

`WebState` takes each record as it comes off a topic (already validated by the caller with the arena's
pydantic models, or parsed here for the calfkit activity envelopes, which arena.web.turns reads into
turns), keeps the run so far, and answers:
the JSON API (`leaderboard()`, `trades()`, `positions()`, `decisions()`, `equity()`, `market()`,
`health()`) and the page's first picture (`snapshot()`) and pushes (`delta()`).

Every change is appended to a journal of (kind, key); a page's push is "what the journal says changed
since the entry it last saw", so any number of pages share one state and a slow page misses nothing.
"""

from __future__ import annotations

import bisect
import logging
from collections import OrderedDict
from datetime import datetime, timezone
from typing import Any

from arena.conversation import header
from arena.decisions import Decision
from arena.market import MarketSnapshot, stale_status
from arena.metrics import BASELINE_NAME
from arena.portfolio import Fill, Rejection
from arena.supervisor import ProcessStatus
from arena.web.turns import Turn

log = logging.getLogger("arena.web")

MAX_TURNS_PER_AGENT = 1000  # turns remembered per agent (oldest forgotten first)
PAGE_TRADES = 300  # trades in the page's first picture (the API has them all)
PAGE_TURNS_PER_AGENT = 25  # turns per agent in the page's first picture (older ones: /api/decisions) ...
PAGE_TURNS = 400  # ... fewer with many agents: about this many in all, at least 5 each
TOOLS_SILENT_S = 30.0  # a leaderboard older than this: the tools process is not publishing


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class WebState:
    """The arena as the page shows it. Not thread-safe: feed and read it from one event loop."""

    def __init__(self, *, max_quote_age_s: float = 30.0, max_turns_per_agent: int = MAX_TURNS_PER_AGENT):
        self.max_quote_age_s = max_quote_age_s
        self.max_turns_per_agent = max_turns_per_agent
        self.started_at = utcnow()
        self.journal: list[tuple[str, Any]] = []  # (kind, key) per change, in order
        self.board: dict | None = None  # the tools process's last leaderboard record
        self.board_received_at: datetime | None = None
        self._sample_times: list[datetime] = []  # sorted
        self._samples: dict[datetime, dict[str, float]] = {}
        self.trades: list[dict] = []  # every fill and rejection, in arrival order
        self._trade_keys: set[tuple[str, str]] = set()
        self.turns: OrderedDict[tuple[str, str], Turn] = OrderedDict()
        self._agent_turns: dict[str, list[tuple[str, str]]] = {}
        self._skipped: dict[str, int] = {}
        self.skipped_total: dict[str, int] = {}
        self.snapshot: MarketSnapshot | None = None
        self.snapshot_received_at: datetime | None = None
        self.snapshots = 0
        self._intervals: list[float] = []  # recent spacing of snapshots, for "silent" on a slow feed
        self.processes: dict[str, ProcessStatus] = {}
        self.records = 0
        self.skipped_records = 0  # malformed records (counted, never raised)
        self.listeners: list = []  # callables run after each change (the server's push wake-up)

    # -- feeding ----------------------------------------------------------------------------------

    def _changed(self, kind: str, key: Any = None) -> None:
        self.journal.append((kind, key))
        for wake in self.listeners:
            wake()

    def on_board(self, board: dict, *, now: datetime | None = None) -> None:
        """A validated leaderboard record (arena.publish.LeaderboardRecord, as a plain dict)."""
        if self.board is not None and board.get("generated_at", "") < self.board.get("generated_at", ""):
            return  # an older one (e.g. out of order after a restart)
        self.board = board
        self.board_received_at = now or utcnow()
        self._changed("board")

    def on_sample(self, t: datetime, values: dict[str, float]) -> None:
        if t in self._samples:
            return
        self._samples[t] = dict(values)
        bisect.insort(self._sample_times, t)
        self._changed("sample", t)

    def on_trade(self, trade: Fill | Rejection) -> None:
        key = (trade.agent, trade.trade_id)
        if key in self._trade_keys:
            return
        self._trade_keys.add(key)
        self.trades.append(trade.model_dump(mode="json"))
        self._changed("trade", len(self.trades) - 1)

    def _turn(self, agent: str, run_id: str, now: datetime) -> Turn:
        key = (agent, run_id)
        turn = self.turns.get(key)
        if turn is None:
            turn = self.turns[key] = Turn(agent, run_id, now)
            keys = self._agent_turns.setdefault(agent, [])
            keys.append(key)
            if len(keys) > self.max_turns_per_agent:
                self.turns.pop(keys.pop(0), None)
        return turn

    def on_decision(self, d: Decision, *, now: datetime | None = None) -> None:
        if d.status == "skipped" or not d.run_id:
            self._skipped[d.agent] = self._skipped.get(d.agent, 0) + 1
            self.skipped_total[d.agent] = self.skipped_total.get(d.agent, 0) + 1
            return
        turn = self._turn(d.agent, d.run_id, now or utcnow())
        turn.tick_seq = d.tick_seq
        turn.summary = d.summary or turn.summary
        turn.strategy, turn.chat_node = d.strategy or turn.strategy, d.chat_node or turn.chat_node
        turn.started_at = d.started_at
        if d.status == "started":
            turn.skipped_before = self._skipped.pop(d.agent, 0)
            if turn.status == "running" or turn.status == "started":
                turn.status = "running"
        else:
            turn.status, turn.reason, turn.output, turn.finished_at = d.status, d.reason, d.output, d.finished_at
        self._changed("turn", (d.agent, d.run_id))

    def on_activity(self, raw: bytes | None, headers: Any, *, now: datetime | None = None) -> bool:
        """One record of the activity topic (a calfkit envelope mirrored by a router). A record that is not
        a conversation mirror is ignored; a malformed one is counted and skipped. True if it added steps."""
        from calfkit.models.envelope import Envelope
        from pydantic import ValidationError

        if header(headers, "x-calf-wire") not in ("", "envelope"):
            return False
        agent, run_id = header(headers, "x-calf-emitter"), header(headers, "correlation_id")
        if not agent or not run_id:
            return False
        try:
            envelope = Envelope.model_validate_json(raw or b"")
        except ValidationError as exc:
            self.skipped_records += 1
            log.warning("skipping malformed activity record from %s: %s", agent, str(exc).splitlines()[0])
            return False
        turn = self._turn(agent, run_id, now or utcnow())
        try:
            new = turn.take_envelope(envelope)
        except Exception as exc:  # a conversation shape this reader does not know: skip, never crash
            self.skipped_records += 1
            log.warning("skipping an activity record of %s it cannot read: %r", agent, exc)
            return False
        if new:
            self._changed("turn", (agent, run_id))
        return new

    def on_snapshot(self, s: MarketSnapshot, *, now: datetime | None = None) -> None:
        if self.snapshot is not None:
            if s.published_at <= self.snapshot.published_at:
                return
            gap = (s.published_at - self.snapshot.published_at).total_seconds()
            self._intervals = (self._intervals + [gap])[-20:]
        self.snapshot, self.snapshot_received_at = s, now or utcnow()
        self.snapshots += 1
        self._changed("market")

    def on_process(self, st: ProcessStatus) -> None:
        known = self.processes.get(st.name)
        if known is None or st.at >= known.at:
            self.processes[st.name] = st
            self._changed("process", st.name)

    # -- reading: the JSON API --------------------------------------------------------------------

    def samples(self) -> list[dict]:
        return [{"t": t.isoformat(), "values": self._samples[t]} for t in self._sample_times]

    def leaderboard(self) -> dict | None:
        """The tools process's export dict (arena.dashboard.leaderboard()), value-history samples included."""
        if self.board is None:
            return None
        history = dict(self.board.get("value_history") or {})
        history["samples"] = self.samples()
        return {**self.board, "value_history": history}

    def trades_json(
        self, *, agent: str | None = None, status: str | None = None, limit: int | None = None
    ) -> list[dict]:
        rows = [
            t
            for t in self.trades
            if (agent is None or t["agent"] == agent) and (status is None or t["status"] == status)
        ]
        return rows[-limit:] if limit else rows

    def positions(self) -> list[dict]:
        out = []
        for a in (self.board or {}).get("agents", []):
            for p in a.get("positions", []):
                out.append({"agent": a["name"], "baseline": a.get("baseline", False), **p})
        return out

    def agents(self) -> list[str]:
        """Every agent seen anywhere, leaderboard order first."""
        names = [a["name"] for a in (self.board or {}).get("agents", []) if not a.get("baseline")]
        for name in [*self._agent_turns, *(t["agent"] for t in self.trades)]:
            if name not in names and name != BASELINE_NAME:
                names.append(name)
        return names

    def decisions(self, agent: str | None = None, *, limit: int | None = None, before: str | None = None) -> list[dict]:
        """Turns, oldest first: one agent's or everyone's; `before`: only turns started before this ISO time."""
        keys = self._agent_turns.get(agent, []) if agent else list(self.turns)
        turns = [self.turns[k] for k in keys if k in self.turns]
        out = [t.to_json() for t in turns]
        if before:
            out = [t for t in out if t["started_at"] < before]
        out.sort(key=lambda t: t["started_at"])
        return out[-limit:] if limit else out

    def equity(self) -> dict:
        """Each agent's value over time [[ISO time, value], ...] from the samples, ending with the
        leaderboard's current value (so a curve's last point is the leaderboard's number)."""
        series: dict[str, list[list]] = {}
        for t in self._sample_times:
            for name, v in self._samples[t].items():
                series.setdefault(name, []).append([t.isoformat(), v])
        if self.board is not None:
            at = self.board.get("generated_at")
            for a in self.board.get("agents", []):
                pts = series.setdefault(a["name"], [])
                if not pts or pts[-1][0] < at:
                    pts.append([at, a["total_value"]])
        return {"baseline": BASELINE_NAME, "starting_cash": (self.board or {}).get("starting_cash"), "series": series}

    def interval_s(self) -> float | None:
        if not self._intervals:
            return None
        gaps = sorted(self._intervals)
        return gaps[len(gaps) // 2]

    def feed(self, now: datetime | None = None) -> dict:
        """Is the market feed live, from the market topic itself (not from the tools process)?"""
        now = now or utcnow()
        s = self.snapshot
        if s is None:
            return {
                "status": "waiting",
                "problems": ["no market data yet"],
                "age_s": None,
                "snapshot_seq": None,
                "published_at": None,
                "interval_s": None,
                "silent_after_s": None,
            }
        age = max(0.0, (now - s.published_at).total_seconds())
        interval = self.interval_s()
        silent_after = max(self.max_quote_age_s, 3 * interval) if interval else self.max_quote_age_s
        problems: list[str] = []
        status = "ok"
        if age > silent_after:
            status = "down"
            problems.append(f"feed silent for {_ago(age)}: no snapshot since #{s.seq}")
        elif stale := stale_status(s.quotes, now, self.max_quote_age_s):
            status = stale[0]
            problems.append(stale[1])
        return {
            "status": status,
            "problems": problems,
            "age_s": age,
            "snapshot_seq": s.seq,
            "published_at": s.published_at.isoformat(),
            "interval_s": interval,
            "silent_after_s": silent_after,
        }

    def _stale(self, q, now: datetime) -> bool:
        return q.stale or q.age_s(now) > self.max_quote_age_s

    def market(self, now: datetime | None = None) -> dict:
        now = now or utcnow()
        s = self.snapshot
        products = {}
        if s is not None:
            for pid, q in sorted(s.quotes.items()):
                products[pid] = {
                    "price": q.price,
                    "bid": q.best_bid,
                    "ask": q.best_ask,
                    "spread": q.spread,
                    "received_at": q.received_at.isoformat(),
                    "age_s": q.age_s(now),
                    "stale": self._stale(q, now),
                    "source": s.source,
                }
        return {"feed": self.feed(now), "max_quote_age_s": self.max_quote_age_s, "products": products}

    def health(self, now: datetime | None = None) -> dict:
        """Feed, tools process (is it publishing?) and every supervised process's last report."""
        now = now or utcnow()
        tools_age = (now - self.board_received_at).total_seconds() if self.board_received_at else None
        board_at = (self.board or {}).get("generated_at")
        if board_at:  # the tools process's own clock: a record read late from the topic is old, not live
            tools_age = max(0.0, (now - datetime.fromisoformat(board_at)).total_seconds())
        tools = {
            "status": "waiting" if tools_age is None else ("silent" if tools_age > TOOLS_SILENT_S else "ok"),
            "last_leaderboard_age_s": tools_age,
        }
        procs = [p.model_dump(mode="json") for _, p in sorted(self.processes.items())]
        return {
            "feed": self.feed(now),
            "tools": tools,
            "processes": procs,
            "records": self.records,
            "skipped_records": self.skipped_records,
        }

    # -- reading: the page ------------------------------------------------------------------------

    def snapshot_json(self, now: datetime | None = None) -> dict:
        """Everything the page draws, for a page that just opened (the run so far)."""
        now = now or utcnow()
        board = None
        if self.board is not None:
            board = {**self.board, "value_history": {**(self.board.get("value_history") or {}), "samples": []}}
        turns = []
        per_agent = min(PAGE_TURNS_PER_AGENT, max(5, PAGE_TURNS // max(1, len(self._agent_turns))))
        for agent, keys in self._agent_turns.items():
            turns += [self.turns[k].to_json() for k in keys[-per_agent:] if k in self.turns]
        return {
            "now": now.isoformat(),
            "version": len(self.journal),
            "board": board,
            "samples": self.samples(),
            "trades": self.trades[-PAGE_TRADES:],
            "trade_count": len(self.trades),
            "turns": turns,
            "turn_counts": {a: len(k) for a, k in self._agent_turns.items()},
            "market": self.market(now),
            "health": self.health(now),
            "agents": self.agents(),
        }

    def delta(self, since: int, now: datetime | None = None) -> dict:
        """What changed after journal entry `since`: new trades and samples, changed turns, and the board,
        market and health when they changed (health's ages always)."""
        now = now or utcnow()
        entries = self.journal[since:]
        kinds = {kind for kind, _ in entries}
        out: dict[str, Any] = {"now": now.isoformat(), "version": len(self.journal), "health": self.health(now)}
        if "trade" in kinds:
            out["trades"] = [self.trades[i] for kind, i in entries if kind == "trade"]
            out["trade_count"] = len(self.trades)
        if "sample" in kinds:
            ts = sorted({t for kind, t in entries if kind == "sample"})
            out["samples"] = [{"t": t.isoformat(), "values": self._samples[t]} for t in ts]
        if "turn" in kinds:
            keys = list(OrderedDict.fromkeys(key for kind, key in entries if kind == "turn"))
            out["turns"] = [self.turns[k].to_json() for k in keys if k in self.turns]
            out["turn_counts"] = {a: len(k) for a, k in self._agent_turns.items()}
        if "board" in kinds and self.board is not None:
            out["board"] = {**self.board, "value_history": {**(self.board.get("value_history") or {}), "samples": []}}
        if kinds & {"market", "board", "trade", "turn"}:
            out["agents"] = self.agents()
        out["market"] = self.market(now)  # ages move with the clock
        return out


def _ago(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"
