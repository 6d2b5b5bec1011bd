"""`arena recording cut|join|make`: market recordings (coinbase_connector.py --record) for replays and
tournaments.

- cut: the snapshots within a time range, given as times (ISO 8601) or as seconds from the first one.
- join: several recordings one after the other. Each following one is moved in time so its first
  snapshot comes one usual spacing after the previous last one (a replay paces itself by these
  times: a day's gap would be a day's wait); candle starts move by whole candle periods, so every
  granularity stays aligned.
- make: a recording of the offline market simulator (embedded broker, simulator, connector --record),
  N snapshots with a seed: the same seed gives the same prices.

Every output is re-sequenced 1..N and checked by the same model the connector writes with.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from arena.market import CANDLE_WINDOWS, MarketSnapshot


class RecordingError(Exception):
    pass


def read(path: Path) -> list[MarketSnapshot]:
    from arena.feed import load_recording

    try:
        snaps = load_recording(path)
    except OSError as exc:
        raise RecordingError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not snaps:
        raise RecordingError(f"no snapshots in {path}")
    return snaps


def write(snaps: list[MarketSnapshot], path: Path) -> None:
    """Re-sequenced 1..N, one JSON line each (the connector's --record format)."""
    if not snaps:
        raise RecordingError("nothing to write: no snapshot left")
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for i, s in enumerate(snaps, 1):
            f.write(s.model_copy(update={"seq": i}).model_dump_json() + "\n")
    tmp.replace(path)


def _when(text: str, first: datetime) -> datetime:
    """An ISO 8601 time (zone-less = UTC), or seconds after the recording's first snapshot."""
    try:
        return first + timedelta(seconds=float(text))
    except ValueError:
        pass
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise RecordingError(
            f"{text!r}: expected a time like 2026-11-25T20:48:40Z or seconds from the start like 30"
        ) from None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def cut(snaps: list[MarketSnapshot], start: str | None, end: str | None) -> list[MarketSnapshot]:
    first = snaps[0].published_at
    lo = _when(start, first) if start else None
    hi = _when(end, first) if end else None
    if lo and hi and hi < lo:
        raise RecordingError(f"the range ends ({hi.isoformat()}) before it starts ({lo.isoformat()})")
    out = [s for s in snaps if (lo is None or s.published_at >= lo) and (hi is None or s.published_at <= hi)]
    if not out:
        raise RecordingError(
            f"no snapshot between {lo or 'the start'} and {hi or 'the end'} "
            f"(the recording runs {first.isoformat()} to {snaps[-1].published_at.isoformat()})"
        )
    return out


def spacing(snaps: list[MarketSnapshot]) -> timedelta:
    gaps = [b.published_at - a.published_at for a, b in zip(snaps, snaps[1:])]
    return statistics.median(gaps) if gaps else timedelta(seconds=1)


def shift(snap: MarketSnapshot, delta: timedelta) -> MarketSnapshot:
    """The snapshot moved by `delta` in time; candle starts by `delta` rounded to the largest candle period."""
    step = max(secs for secs, _ in CANDLE_WINDOWS.values())
    candle_shift = round(delta.total_seconds() / step) * step
    quotes = {
        pid: q.model_copy(
            update={
                "received_at": q.received_at + delta,
                "exchange_time": q.exchange_time + delta if q.exchange_time else None,
            }
        )
        for pid, q in snap.quotes.items()
    }
    candles = {
        pid: {g: [c.model_copy(update={"start": c.start + candle_shift}) for c in cs] for g, cs in by.items()}
        for pid, by in snap.candles.items()
    }
    return snap.model_copy(update={"published_at": snap.published_at + delta, "quotes": quotes, "candles": candles})


def join(parts: list[list[MarketSnapshot]]) -> list[MarketSnapshot]:
    out = list(parts[0])
    for part in parts[1:]:
        gap = spacing(out) if len(out) > 1 else spacing(part)
        delta = out[-1].published_at + gap - part[0].published_at
        out += [shift(s, delta) for s in part]
    return out


async def make(path: Path, *, snapshots: int, interval: float, seed: int, products: list[str], run_dir: Path) -> int:
    """Record `snapshots` snapshots of the simulator (seeded) into `path`."""
    from arena.broker import EmbeddedBroker, free_port
    from arena.supervisor import Supervisor

    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".recording")
    tmp.unlink(missing_ok=True)
    broker = EmbeddedBroker("127.0.0.1", free_port(), log=open(run_dir / "broker.log", "ab")).start()
    sup = Supervisor(run_dir)
    try:
        await broker.wait_ready()
        port = free_port()
        sim = sup.start(
            "market-sim",
            ["-m", "arena.cli", "market-sim", "--port", str(port), "--seed", str(seed), "--products", *products],
        )
        await sup.wait_ready(sim)
        conn = sup.start(
            "connector",
            [
                "coinbase_connector.py",
                "--bootstrap-servers",
                broker.bootstrap,
                "--ws-url",
                f"ws://127.0.0.1:{port}",
                "--rest-url",
                f"http://127.0.0.1:{port}",
                "--interval",
                f"{interval:g}",
                "--products",
                *products,
                "--record",
                str(tmp),
            ],
        )
        await sup.wait_ready(conn, timeout=90)
        while not tmp.exists() or sum(1 for _ in open(tmp)) < snapshots:
            if conn.proc.poll() is not None:
                raise RecordingError(
                    f"the connector exited (code {conn.proc.returncode}); log {conn.log_path}:\n{conn.log_tail(5)}"
                )
            await asyncio.sleep(interval / 4)
    finally:
        sup.stop_all()
        broker.stop()
    snaps = read(tmp)[:snapshots]
    write(snaps, path)
    tmp.unlink()
    return len(snaps)


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="arena recording",
        description="Cut, join or make market recordings (coinbase_connector.py --record files) for replays and tournaments.",
    )
    sub = p.add_subparsers(dest="action", required=True, metavar="{cut,join,make}")
    c = sub.add_parser("cut", help="keep the snapshots within a time range")
    c.add_argument("recording", type=Path)
    c.add_argument(
        "--start",
        default=None,
        help="first time kept: ISO 8601 (zone-less = UTC) or seconds from the recording's start",
    )
    c.add_argument("--end", default=None, help="last time kept, the same way")
    c.add_argument("-o", "--output", type=Path, required=True)
    j = sub.add_parser(
        "join", help="recordings one after the other, each moved to follow the previous at the usual spacing"
    )
    j.add_argument("recordings", type=Path, nargs="+")
    j.add_argument("-o", "--output", type=Path, required=True)
    m = sub.add_parser("make", help="record the offline market simulator")
    m.add_argument("-o", "--output", type=Path, required=True)
    m.add_argument("--snapshots", type=int, default=120, help="how many snapshots (default %(default)s)")
    m.add_argument("--interval", type=float, default=2.0, help="seconds between snapshots (default %(default)s)")
    m.add_argument("--seed", type=int, default=7, help="the simulator's seed (default %(default)s)")
    m.add_argument(
        "--products",
        nargs="+",
        default=["BTC-USD", "SOL-USD", "FARTCOIN-USD"],
        help="product ids (default %(default)s)",
    )
    m.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="folder for the broker's, simulator's and connector's logs (default: beside the output)",
    )
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.action == "cut":
            snaps = cut(read(args.recording), args.start, args.end)
        elif args.action == "join":
            snaps = join([read(p) for p in args.recordings])
        else:
            if args.snapshots < 2 or not args.interval > 0:
                raise RecordingError("--snapshots must be at least 2 and --interval positive")
            run_dir = args.run_dir or args.output.with_name(args.output.stem + "-logs")
            n = asyncio.run(
                make(
                    args.output,
                    snapshots=args.snapshots,
                    interval=args.interval,
                    seed=args.seed,
                    products=args.products,
                    run_dir=run_dir,
                )
            )
            print(f"{args.output}: {n} snapshots of the simulator (seed {args.seed}, every {args.interval:g}s)")
            return 0
        write(snaps, args.output)
    except RecordingError as exc:
        print(f"arena recording {args.action}: {exc}", file=sys.stderr)
        return 2
    print(
        f"{args.output}: {len(snaps)} snapshots, {snaps[0].published_at.isoformat()} to {snaps[-1].published_at.isoformat()}"
    )
    return 0
