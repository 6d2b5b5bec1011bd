"""`arena tournament arena.toml --replay REC --runs K --out DIR`: every agent of an arena file on the
same recorded market, K times, and a comparison per agent with 95% bootstrap confidence intervals.

A single live run's ranking is mostly luck; a tournament replays one recording for everyone, K runs
(run k gives the offline policies seed `seed + k - 1`, so a random model draws differently each run),
and compares return, Sharpe and max drawdown across runs: the mean and a 95% percentile-bootstrap
interval, the paired difference against buy-and-hold and between agents (paired: the same run, the
same market), and how stable the ranking is (each agent's ranks; Kendall's W over all runs).

Each run is a fresh arena (broker, policy server, chat nodes, routers, tools on a new ledger), warmed
up with turns on a snapshot whose quotes are stale (no policy trades on those), then the recording at
a pace the models can follow: unless --speed says otherwise, the recording's spacing holds
TURNS_OF_ROOM warm turns. Routers are latest-only, so a turn still running when the next snapshot
comes makes that agent skip it: such a run is flagged (and redone once, twice as slow, when the speed
was chosen automatically), since it would not be the same market for everyone.

The results go to --out: run-K/ (every process's log, ledger, leaderboard.json), summary.json,
summary.csv, index.html, and a table on the terminal. It runs on arena/service.py: Ctrl-C at any moment
ends it quietly (exit code 0), the run in progress stopped with every process of it.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import html
import json
import logging
import math
import random
import shutil
import signal
import statistics
import time
from dataclasses import replace
from itertools import combinations
from pathlib import Path

from arena import service
from arena.up import (
    Arena,
    Console,
    Market,
    _chat_args,
    _chat_env,
    _router_args,
    fetch_wait_for,
    load_or_say,
    status,
)

log = logging.getLogger("arena.tournament")

METRICS = ("return_pct", "sharpe", "max_drawdown_pct")
TURNS_OF_ROOM = 4  # a snapshot's gap holds this many warm turns (a trading turn takes more calls)
MIN_SPEED, MAX_SPEED = 0.05, 2.0
BOOTSTRAP_SAMPLES = 4000


# -- statistics (pure) ------------------------------------------------------------------------------


def bootstrap_ci(
    values: list[float], *, samples: int = BOOTSTRAP_SAMPLES, level: float = 0.95, seed: int = 0
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean; None without values. Seeded: the same runs give the
    same interval. Identical values give a zero-width interval at that value."""
    if not values:
        return None
    if len(values) == 1 or max(values) == min(values):
        return (values[0], values[0])
    rng = random.Random(seed)
    n = len(values)
    means = sorted(math.fsum(rng.choice(values) for _ in range(n)) / n for _ in range(samples))
    lo = means[int((1 - level) / 2 * (samples - 1))]
    hi = means[int(math.ceil((1 + level) / 2 * (samples - 1)))]
    return (min(lo, statistics.fmean(values)), max(hi, statistics.fmean(values)))


def describe(values: list[float]) -> dict:
    """Mean, 95% bootstrap interval, spread and count of the values that exist (None ones are left out)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    ci = bootstrap_ci(vals)
    return {
        "mean": statistics.fmean(vals) if vals else None,
        "ci95": list(ci) if ci else None,
        "min": min(vals) if vals else None,
        "max": max(vals) if vals else None,
        "n": len(vals),
    }


def _value(row: dict, metric: str) -> float | None:
    v = row.get(metric) if metric == "return_pct" else (row.get("metrics") or {}).get(metric)
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def ranks(board: dict) -> dict[str, int]:
    """1 = best return among the agents (the baseline not ranked); ties share the better rank."""
    rows = [r for r in board["agents"] if not r.get("baseline")]
    ordered = sorted(rows, key=lambda r: -r["return_pct"])
    return {r["name"]: 1 + sum(o["return_pct"] > r["return_pct"] for o in ordered) for r in rows}


def kendalls_w(rank_table: list[dict[str, int]]) -> float | None:
    """Agreement of the runs' rankings: 1 = the same order every run, 0 = no agreement at all."""
    names = sorted({n for r in rank_table for n in r})
    m, n = len(rank_table), len(names)
    if m < 2 or n < 2 or any(set(r) != set(names) for r in rank_table):
        return None
    totals = [sum(r[name] for r in rank_table) for name in names]
    mean = m * (n + 1) / 2
    s = sum((t - mean) ** 2 for t in totals)
    return 12 * s / (m * m * (n**3 - n))


def compare(boards: list[dict]) -> dict:
    """The per-agent comparison over runs (each a tools-process export)."""
    from arena.metrics import BASELINE_NAME

    names = [r["name"] for r in boards[0]["agents"] if not r.get("baseline")]
    by_run = [{r["name"]: r for r in b["agents"]} for b in boards]
    agents = {}
    for name in names:
        rows = [run.get(name) for run in by_run]
        entry = {m: describe([_value(r, m) if r else None for r in rows]) for m in METRICS}
        entry["trades"] = describe([r.get("trades") if r else None for r in rows])
        diffs = [
            r["return_pct"] - run[BASELINE_NAME]["return_pct"]
            for r, run in zip(rows, by_run)
            if r and BASELINE_NAME in run
        ]
        entry["vs_buy_and_hold"] = {**describe(diffs), "wins": sum(d > 0 for d in diffs)}
        agents[name] = entry
    rank_table = [ranks(b) for b in boards]
    for name in names:
        rs = [r[name] for r in rank_table if name in r]
        agents[name]["rank"] = {
            "mean": statistics.fmean(rs),
            "best": min(rs),
            "worst": max(rs),
            "each_run": rs,
            "modal_share": max(rs.count(x) for x in set(rs)) / len(rs),
        }
    pairs = []
    for a, b in combinations(names, 2):
        diffs = [run[a]["return_pct"] - run[b]["return_pct"] for run in by_run if a in run and b in run]
        pairs.append(
            {
                "a": a,
                "b": b,
                "return_diff": describe(diffs),
                "a_wins": sum(d > 0 for d in diffs),
                "b_wins": sum(d < 0 for d in diffs),
            }
        )
    baseline = describe([run[BASELINE_NAME]["return_pct"] for run in by_run if BASELINE_NAME in run])
    order = sorted(names, key=lambda n: -(agents[n]["return_pct"]["mean"] or -math.inf))
    return {
        "runs": len(boards),
        "agents": {n: agents[n] for n in order},
        "pairs": pairs,
        "buy_and_hold": {"return_pct": baseline},
        "ranking": {
            "order_by_mean_return": order,
            "kendalls_w": kendalls_w(rank_table),
            "same_order_every_run": len({tuple(sorted(r, key=r.get)) for r in rank_table}) == 1,
        },
    }


# -- output -----------------------------------------------------------------------------------------


def _fmt(d: dict | None, digits: int = 3, pct: bool = False, signed: bool = False) -> str:
    """'mean [low, high]' of a describe() result."""
    if not d or d.get("mean") is None:
        return "—"
    unit, sign = "%" if pct else "", "+" if signed else ""
    lo, hi = d["ci95"]
    return f"{d['mean']:{sign}.{digits}f}{unit} [{lo:{sign}.{digits}f}, {hi:{sign}.{digits}f}]"


CSV_FIELDS = [
    "agent",
    "runs",
    "mean_rank",
    "best_rank",
    "worst_rank",
    *(f"{m}_{s}" for m in (*METRICS, "vs_buy_and_hold") for s in ("mean", "ci_low", "ci_high", "n")),
]


def write_results(out: Path, summary: dict) -> None:
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    comp = summary["comparison"]
    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, CSV_FIELDS)
        w.writeheader()
        for name, a in comp["agents"].items():
            row = {
                "agent": name,
                "runs": comp["runs"],
                "mean_rank": a["rank"]["mean"],
                "best_rank": a["rank"]["best"],
                "worst_rank": a["rank"]["worst"],
            }
            for m in (*METRICS, "vs_buy_and_hold"):
                d = a[m]
                row.update(
                    {
                        f"{m}_mean": d["mean"],
                        f"{m}_ci_low": d["ci95"][0] if d["ci95"] else None,
                        f"{m}_ci_high": d["ci95"][1] if d["ci95"] else None,
                        f"{m}_n": d["n"],
                    }
                )
            w.writerow(row)
    (out / "index.html").write_text(render_html(summary))


def render_html(summary: dict) -> str:
    comp, e = summary["comparison"], html.escape
    rows = "".join(
        f"<tr><td>{e(n)}</td><td>{a['rank']['mean']:.2f} ({a['rank']['best']}-{a['rank']['worst']})</td>"
        f"<td>{e(_fmt(a['return_pct'], pct=True, signed=True))}</td><td>{e(_fmt(a['vs_buy_and_hold'], pct=True, signed=True))}</td>"
        f"<td>{e(_fmt(a['sharpe'], 2))}</td><td>{e(_fmt(a['max_drawdown_pct'], pct=True))}</td><td>{e(_fmt(a['trades'], 1))}</td></tr>"
        for n, a in comp["agents"].items()
    )
    pairs = "".join(
        f"<tr><td>{e(p['a'])} − {e(p['b'])}</td><td>{e(_fmt(p['return_diff'], pct=True, signed=True))}</td>"
        f"<td>{p['a_wins']} : {p['b_wins']}</td></tr>"
        for p in comp["pairs"]
    )
    runs = "".join(
        f'<tr><td><a href="{e(r["dir"])}/leaderboard.json">{e(r["dir"])}</a></td><td>{r["seed"]}</td>'
        f"<td>{r['speed']:.2f}</td><td>{e('; '.join(map(str, r['not_in_time'])) or 'every turn in time')}</td></tr>"
        for r in summary["runs"]
    )
    w = comp["ranking"]["kendalls_w"]
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Arena tournament</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child,th:first-child{{text-align:left}}</style></head>
<body><h1>Arena tournament</h1>
<p>{e(summary["arena"])} on {e(summary["recording"])}: {comp["runs"]} runs. Mean [95% bootstrap interval] over runs.
Buy-and-hold return {e(_fmt(comp["buy_and_hold"]["return_pct"], pct=True, signed=True))}.
Ranking agreement (Kendall's W): {"—" if w is None else f"{w:.2f}"}.</p>
<table><tr><th>agent</th><th>rank mean (best-worst)</th><th>return</th><th>vs buy-and-hold</th><th>Sharpe</th><th>max drawdown</th><th>trades</th></tr>{rows}</table>
<h2>Paired differences of return</h2>
<table><tr><th>pair</th><th>difference</th><th>runs won</th></tr>{pairs}</table>
<h2>Runs</h2>
<table><tr><th>run</th><th>seed</th><th>speed</th><th>turns</th></tr>{runs}</table>
</body></html>
"""


def print_table(summary: dict) -> None:
    from rich.console import Console as RichConsole
    from rich.table import Table

    comp = summary["comparison"]
    t = Table(title=f"Tournament: {comp['runs']} runs on {summary['recording']} (mean [95% bootstrap CI])")
    for col in ("agent", "rank", "return", "vs buy-and-hold", "Sharpe", "max DD", "trades"):
        t.add_column(col, justify="left" if col == "agent" else "right")
    for n, a in comp["agents"].items():
        t.add_row(
            n,
            f"{a['rank']['mean']:.2f} ({a['rank']['best']}-{a['rank']['worst']})",
            _fmt(a["return_pct"], pct=True, signed=True),
            _fmt(a["vs_buy_and_hold"], pct=True, signed=True),
            _fmt(a["sharpe"], 2),
            _fmt(a["max_drawdown_pct"], pct=True),
            _fmt(a["trades"], 1),
        )
    console = RichConsole(width=160)
    console.print(t)
    w = comp["ranking"]["kendalls_w"]
    console.print(
        f"buy-and-hold: {_fmt(comp['buy_and_hold']['return_pct'], pct=True, signed=True)}; ranking agreement (Kendall's W): "
        f"{'—' if w is None else f'{w:.2f}'}; same order every run: {comp['ranking']['same_order_every_run']}"
    )
    for p in comp["pairs"]:
        console.print(
            f"  {p['a']} − {p['b']}: {_fmt(p['return_diff'], pct=True, signed=True)}, runs won {p['a_wins']}:{p['b_wins']}"
        )


# -- one run ----------------------------------------------------------------------------------------


async def one_run(arena: Arena, recording: Path, run_dir: Path, *, seed: int, speed: float | None) -> dict:
    """A fresh arena on the recording: warm-up, replay, stop. Returns the run's facts and its export."""
    from arena import kafka as k
    from arena.broker import free_port
    from arena.config import DECISIONS_TOPIC
    from arena.decisions import Decision
    from arena.feed import SnapshotSink, load_recording
    from arena.market import MarketSnapshot, utcnow
    from arena.supervisor import Supervisor
    from arena.tools_service import SERVED

    if run_dir.exists():  # a run redone: nothing of the first attempt may count
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    snaps = load_recording(recording)
    gaps = [(b.published_at - a.published_at).total_seconds() for a, b in zip(snaps, snaps[1:])]
    spacing = statistics.median(gaps) if gaps else 1.0
    names = [a.name for a in arena.agents]
    export = run_dir / "leaderboard.json"
    own = service.OwnBroker(run_dir / "broker.log")  # started, not watched: a run on a broker that died is void
    await own.start()
    settings = own.kafka
    kafka = ["--bootstrap-servers", settings.bootstrap_servers]
    sup = Supervisor(
        run_dir,
        env={"KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers, "ARENA_FETCH_WAIT_MS": str(fetch_wait_for(arena))},
    )
    producer = k.producer(settings)
    reader = k.consumer(settings, DECISIONS_TOPIC, group_id=None, latest=False)
    decisions: list[Decision] = []

    async def until(done, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not within {timeout:g}s (logs in {run_dir})")
            for records in (await reader.getmany(timeout_ms=200)).values():
                decisions.extend(d for d in (k.decode(Decision, r.value) for r in records) if d is not None)
            for c in sup.dead():
                if c.name == "connector" and c.proc.returncode == 0:
                    continue  # the recording is over
                raise RuntimeError(f"{c.name} exited (code {c.proc.returncode}); log {c.log_path}:\n{c.log_tail(5)}")

    def finished(tick: int, since: int) -> set[str]:
        return {d.agent for d in decisions[since:] if d.tick_seq == tick and d.status != "started"}

    try:
        await asyncio.gather(producer.start(), reader.start())
        children = []
        if any(c.offline for c in arena.chat_nodes):
            port = free_port()
            children.append(
                sup.start(
                    "policy-server", ["-m", "arena.cli", "policy-server", "--port", str(port), "--seed", str(seed)]
                )
            )
        else:
            port = None
        children += [
            sup.start(f"chat {c.name}", _chat_args(c, kafka, port if c.offline else None), env=_chat_env(c))
            for c in arena.chat_nodes
        ]
        children += [sup.start(f"router {a.name}", _router_args(a, kafka)) for a in arena.agents]
        tools = sup.start(
            "tools",
            [
                "tools_and_dashboard.py",
                *kafka,
                "--no-dashboard",
                "--ledger",
                str(run_dir / "ledger.db"),
                "--export",
                str(export),
                "--log-file",
                str(run_dir / "tools.log"),
                "--status-every",
                "3600",
                "--fee-bps",
                f"{arena.tools.fee_bps:g}",
                "--max-quote-age",
                f"{arena.tools.max_quote_age:g}",
            ],
        )
        for c in children:
            await sup.wait_ready(c, timeout=180)
        await sup.wait_ready(tools, timeout=180, marker=SERVED)

        warm = 0.0
        for _ in range(2):  # the first pays every process's first-call costs; the second is a warm turn
            now, since = utcnow(), len(decisions)
            quotes = {
                pid: q.model_copy(update={"stale": True, "received_at": now}) for pid, q in snaps[0].quotes.items()
            }
            # as the connector publishes (its partition key; signed when ARENA_FEED_KEY is set)
            if not await SnapshotSink(producer).publish(
                MarketSnapshot(seq=0, published_at=now, quotes=quotes, candles=snaps[0].candles)
            ):
                raise RuntimeError("could not publish the warm-up snapshot")
            await until(lambda: finished(0, since) >= set(names), 180, "the warm-up turns")
            warm = max(d.latency_s or 0.0 for d in decisions[since:] if d.tick_seq == 0 and d.status != "started")
        if speed is None:
            speed = min(MAX_SPEED, max(MIN_SPEED, spacing / (TURNS_OF_ROOM * max(warm, 0.05))))
        status(
            f"{run_dir.name}: warm turn {warm:.2f}s; replaying {len(snaps)} snapshots at {speed:.2f}x "
            f"(one every {spacing / speed:.1f}s)"
        )
        since = len(decisions)
        feed = sup.start(
            "connector", ["coinbase_connector.py", *kafka, "--replay", str(recording), "--speed", f"{speed:.4f}"]
        )
        await until(
            lambda: finished(len(snaps), since) >= set(names),
            len(snaps) * spacing / speed + 180,
            "the last snapshot's turns",
        )
        feed.stopping = True
        sup.stop_all(order=["router", "chat", "tools", "connector"])  # the tools write the export on the way out
    finally:
        sup.stop_all()
        await asyncio.gather(producer.stop(), reader.stop(), return_exceptions=True)
        own.close()
    turns = [d for d in decisions[since:] if d.status != "started"]
    published = {d.tick_seq: d.tick_published_at for d in turns}
    not_in_time = [f"{d.agent} #{d.tick_seq} {d.status}" for d in turns if d.status != "done"]
    for d in turns:  # finished after the next snapshot was out: may have filled at its prices
        nxt = published.get(d.tick_seq + 1)
        if d.status == "done" and nxt is not None and d.finished_at and d.finished_at > nxt:
            not_in_time.append(f"{d.agent} #{d.tick_seq} late")
    return {
        "dir": run_dir.name,
        "seed": seed,
        "speed": speed,
        "warm_turn_s": warm,
        "not_in_time": not_in_time,
        "board": json.loads(export.read_text()),
    }


async def tournament(
    arena: Arena, recording: Path, runs: int, out: Path, speed: float | None, results: list | None = None
) -> dict:
    """K runs, then their summary (written to `out`). `results` collects each finished run as it ends,
    so a tournament stopped part-way can still summarise the runs it finished."""
    results = [] if results is None else results
    for i in range(1, runs + 1):
        if Console.lost:
            break
        seed = arena.seed + i - 1
        status(f"run {i} of {runs} (seed {seed})")
        result = await one_run(arena, recording, out / f"run-{i}", seed=seed, speed=speed)
        if result["not_in_time"] and speed is None:
            status(
                f"run {i}: turns not in time at {result['speed']:.2f}x ({', '.join(result['not_in_time'][:5])}); again, twice as slow"
            )
            result = await one_run(arena, recording, out / f"run-{i}", seed=seed, speed=result["speed"] / 2)
        if result["not_in_time"]:
            status(
                f"run {i}: not every turn in time: {', '.join(result['not_in_time'][:8])} (kept, flagged in the summary)"
            )
        results.append(result)
    return summarize(arena, recording, results, out)


def summarize(arena: Arena, recording: Path, results: list[dict], out: Path) -> dict:
    """The comparison of the finished runs, written to `out` (summary.json, summary.csv, index.html)."""
    runs = [{k: v for k, v in r.items() if k != "board"} for r in results]
    summary = {
        "arena": arena.source,
        "recording": str(recording),
        "runs": runs,
        "comparison": compare([r["board"] for r in results]),
    }
    write_results(out, summary)
    return summary


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="arena tournament",
        description="Every agent of an arena file on the same recorded market, K runs, and a comparison per agent: mean and "
        "95%% bootstrap interval of return, Sharpe and max drawdown, the paired difference against buy-and-hold and "
        "between agents, and how stable the ranking is. A table here, and JSON, CSV and an HTML page in --out.",
    )
    p.add_argument("file", type=Path, help="the arena file (TOML); its [market] is replaced by --replay")
    p.add_argument(
        "--replay",
        type=Path,
        required=True,
        metavar="REC",
        help="the market recording every run replays (coinbase_connector.py --record; e.g. assets/sample_recording.jsonl)",
    )
    p.add_argument(
        "--runs",
        type=int,
        default=5,
        help="how many runs (default %(default)s); run k gives the offline policies seed SEED+k-1",
    )
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help="folder for every run's logs, ledger and leaderboard, and summary.json, summary.csv, index.html",
    )
    p.add_argument(
        "--speed",
        type=float,
        default=None,
        help="replay pace (2 = twice the recorded pace; default: chosen per run so the recording's spacing holds several warm turns)",
    )
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    if args.speed is not None and not args.speed > 0:
        p.error("--speed must be positive")
    if not args.replay.is_file():
        p.error(f"--replay: no such file {args.replay}")
    return args


class TournamentService(service.Service):
    """The tournament on arena/service.py, for its signals and stop: Ctrl-C (or SIGTERM, SIGHUP) at any
    moment ends it quietly with exit code 0, the run in progress and every process of it stopped.

    Not a supervisor of one arena: each run starts its own broker and parts and stops them again
    (`one_run`), so there is no broker to connect to or watch, and no READY; the K runs are `serve`."""

    what = "the tournament"
    stop_signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    watches_broker = False  # each run owns its broker, from start to stop

    def __init__(self, arena: Arena, args: argparse.Namespace):
        super().__init__(None)
        self.arena, self.args = arena, args

    def say(self, msg: str) -> None:
        status(msg)

    def connecting(self) -> None:
        return None

    def ready(self, elapsed_s: float) -> None:
        return None

    def serve_failed(self, exc: Exception) -> None:
        status(f"error: {exc}")

    async def serve(self, stop: asyncio.Event) -> int:
        a = self.args
        finished: list[dict] = []
        work = asyncio.ensure_future(tournament(self.arena, a.replay.resolve(), a.runs, a.out, a.speed, finished))
        # A stop cancels the run in progress: its `finally` stops its processes and its broker.
        if await service.unless_stopped(work, stop):
            summary = work.result()
        elif finished:  # the runs that ended before the stop still compare
            summary = summarize(self.arena, a.replay.resolve(), finished, a.out)
            status(f"stopped after {len(finished)} of {a.runs} runs; the summary is of those")
        else:
            status("stopped")
            return 0
        if not Console.lost:
            print_table(summary)
        status(f"results in {a.out}: summary.json, summary.csv, index.html")
        return 0


def build(argv) -> TournamentService | int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = parse_args(argv)
    arena = load_or_say(args.file, "arena tournament")
    if isinstance(arena, int):
        return arena
    arena = replace(arena, market=Market(source="recording", recording=args.replay.resolve(), speed=args.speed or 1.0))
    args.out.mkdir(parents=True, exist_ok=True)
    return TournamentService(arena, args)


def main(argv=None) -> int:
    return service.main(lambda: build(argv))
