"""What the tools process tells the web page (`arena web`): its leaderboard, on LEADERBOARD_TOPIC.

The metrics and accounts live only in the tools process (the ledger is its store of record), so it
publishes what a reader needs; the web process only reads topics. Records, JSON values:

- key "leaderboard": the export dict (arena.dashboard.leaderboard(): standings, metrics, baseline row,
  positions, quotes, feed status, process health) with an empty value_history.samples list. Published
  when it changed (a fill, a snapshot, a turn), checked every `every_s` (a board over 16 KiB, i.e. many
  agents, at most once per every_s per 16 KiB, and at least once per 5 s), at least every
  `heartbeat_s` (so a reader can tell the tools process is alive), and once more when it stops.
- key "sample:<ISO time>": one value-history sample {"t", "values": {agent: total value}} (the
  baseline's value at publication added), once each: a reader collects the whole run's curves from
  these, at the dashboard's own sampling cadence.

The topic is created compacted: the last "leaderboard" and every sample (each has its own key) survive.
`LeaderboardRecord` / `ValueSample` validate what a reader takes off the topic.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from arena import kafka as k
from arena.config import LEADERBOARD_TOPIC, KafkaSettings
from arena.metrics import BASELINE_NAME
from arena.supervisor import ProcessStatus

log = logging.getLogger("arena.publish")

BOARD_KEY = b"leaderboard"
SAMPLE_PREFIX = "sample:"


# -- the record shapes (validation for readers; extra fields pass through) ------------------------


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


class ExportPosition(_Loose):
    product_id: str
    quantity: float
    avg_cost: float
    mark: float | None = None
    market_value: float
    unrealized_pnl: float
    opened_at: datetime | None = None


class ExportAgent(_Loose):
    rank: int | None = None
    name: str
    baseline: bool = False
    total_value: float
    return_pct: float
    cash: float
    realized_pnl: float
    unrealized_pnl: float
    fees: float = 0.0
    trades: int = 0
    rejected: int = 0
    positions: list[ExportPosition] = []
    # drawdown, Sharpe, slippage, ...; notional_marks: {product: why its mark is notional} (docs/METRICS.md)
    metrics: dict[str, float | int | bool | str | dict[str, str] | None] = {}


class ExportProduct(_Loose):
    price: float
    bid: float | None = None
    ask: float | None = None
    spread: float | None = None
    age_s: float
    stale: bool


class ExportFeed(_Loose):
    status: str
    problems: list[str] = []
    age_s: float | None = None
    snapshot_seq: int | None = None


class ValueSample(BaseModel):
    t: datetime
    values: dict[str, float]


class ValueHistoryOut(_Loose):
    interval_s: float
    samples: list[ValueSample] = []


class LeaderboardRecord(_Loose):
    """The export dict (arena.dashboard.leaderboard()) as published on LEADERBOARD_TOPIC."""

    generated_at: datetime
    started_at: datetime
    starting_cash: float
    fee_bps: float
    feed: ExportFeed
    processes: list[ProcessStatus] = []
    agents: list[ExportAgent]
    products: dict[str, ExportProduct] = {}
    value_history: ValueHistoryOut


# -- publishing -----------------------------------------------------------------------------------


def _signature(board: dict) -> str:
    """The board without what changes by itself with the clock: a new signature means news."""
    volatile = {k_: v for k_, v in board.items() if k_ not in ("generated_at", "products", "feed")}
    products = {pid: {k_: v for k_, v in p.items() if k_ != "age_s"} for pid, p in board.get("products", {}).items()}
    feed = {k_: v for k_, v in board.get("feed", {}).items() if k_ != "age_s"}
    return json.dumps([volatile, products, feed], sort_keys=True, default=str)


async def ensure_topic(kafka: KafkaSettings) -> None:
    """Create LEADERBOARD_TOPIC compacted, if it is not there yet (best effort: a broker that auto-creates
    topics takes the records anyway)."""
    await k.ensure_compacted_topic(kafka, LEADERBOARD_TOPIC)


class LeaderboardPublisher:
    """Publishes the dashboard state's leaderboard and value samples (see the module docstring).

    `state` is the tools process's arena.dashboard.ArenaState, `accounts` returns the ledger's accounts.
    """

    def __init__(
        self,
        producer,
        state,
        accounts: Callable[[], dict],
        *,
        kafka: KafkaSettings | None = None,
        every_s: float = 0.5,
        heartbeat_s: float = 10.0,
    ):
        self.producer = producer
        self.kafka = kafka  # to create the topic compacted before the first record
        self.state = state
        self.accounts = accounts
        self.every_s = every_s
        self.heartbeat_s = heartbeat_s
        self.published = 0  # leaderboard records sent
        self._signature: str | None = None
        self._last_sent = 0.0
        self._next_allowed = 0.0
        self._last_sample: datetime | None = None
        self._too_big_logged = False

    def records(self, now_s: float, *, force: bool = False) -> list[tuple[bytes, bytes]]:
        """(key, value) records due now: new samples, then the board if it changed or is due."""
        from arena.dashboard import leaderboard

        board = leaderboard(self.state, self.accounts())
        out: list[tuple[bytes, bytes]] = []
        baseline = next(
            (a["total_value"] for a in board["agents"] if a["baseline"] and a["name"] == BASELINE_NAME), None
        )
        for sample in board["value_history"]["samples"]:
            at, values = datetime.fromisoformat(sample["t"]), sample["values"]
            if self._last_sample is not None and at <= self._last_sample:
                continue
            vals = dict(values)
            if baseline is not None:
                vals[BASELINE_NAME] = baseline
            out.append(
                ((SAMPLE_PREFIX + at.isoformat()).encode(), json.dumps({"t": at.isoformat(), "values": vals}).encode())
            )
            self._last_sample = at
        board["value_history"]["samples"] = []
        signature = _signature(board)
        due = now_s >= self._next_allowed and (
            signature != self._signature or now_s - self._last_sent >= self.heartbeat_s
        )
        if force or due:
            raw = json.dumps(board, default=str).encode()
            if len(raw) > k.MAX_MESSAGE_BYTES:
                if not self._too_big_logged:
                    log.warning(
                        "leaderboard record of %d bytes is over the %d-byte limit: not published",
                        len(raw),
                        k.MAX_MESSAGE_BYTES,
                    )
                    self._too_big_logged = True
            else:
                out.append((BOARD_KEY, raw))
                self._signature, self._last_sent = signature, now_s
                # The broker keeps every record (Tansu's memory storage does not compact): a big board (many
                # agents) goes out less often, one per every_s per 16 KiB, at most one per 5 s.
                self._next_allowed = now_s + min(5.0, max(self.every_s, self.every_s * len(raw) / 16384))
        return out

    async def publish(self, *, force: bool = False) -> None:
        loop = asyncio.get_running_loop()
        for key, value in self.records(loop.time(), force=force):
            await self.producer.send(LEADERBOARD_TOPIC, value, key=key)
            self.published += key == BOARD_KEY

    async def run(self) -> None:
        """Publish until cancelled; then once more (the final standings) with the producer still open."""
        if self.kafka is not None:
            try:
                await asyncio.wait_for(ensure_topic(self.kafka), 10)
            except asyncio.TimeoutError:
                log.warning("could not create %s within 10 s; publishing anyway", LEADERBOARD_TOPIC)
        try:
            while True:
                try:
                    await self.publish()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the broker is away: the next round tries again
                    log.warning("could not publish the leaderboard to %s: %r", LEADERBOARD_TOPIC, exc)
                await asyncio.sleep(self.every_s)
        except asyncio.CancelledError:
            try:
                await asyncio.wait_for(self._final(), 3)
            except Exception as exc:
                log.debug("final leaderboard not published: %r", exc)
            raise

    async def _final(self) -> None:
        await self.publish(force=True)
        await self.producer.flush()
