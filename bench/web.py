"""web: `arena web` with a big run: the page's first render, and the server's CPU with many open pages.

    uv run python -m bench web [--agents 50] [--fills 10000] [--pages 20] [--seconds 30]

Publishes a synthetic but realistic hour of a run to a fresh broker, as the arena's processes would:
the tools process's leaderboard and value samples (from the dashboard's own state and metrics), every
fill and rejection, each agent's turns (decisions, and the mirrored conversations with their tool
calls), the market. Then starts `arena web` and measures

- catch-up: the web process reading the whole run (start -> every record read);
- first render in Debian's chromium at 1440x900: navigation -> leaderboard, curves, fills and chat drawn
  (the page's own clock), and the size of the first push;
- the server's CPU with no page and with --pages open pages (plain SSE streams, so that the browsers'
  own CPU does not crowd the server on a small machine) while a fill, a snapshot and a leaderboard
  arrive every second, and how long a new fill takes to reach every page.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from datetime import datetime, timedelta, timezone

from arena import kafka as k
from arena.broker import free_port
from arena.config import ACTIVITY_TOPIC, DECISIONS_TOPIC, LEADERBOARD_TOPIC, MARKET_TOPIC, TRADES_TOPIC
from arena.dashboard import ArenaState
from arena.decisions import Decision
from arena.market import MarketSnapshot, Quote
from arena.metrics import MetricsTracker
from arena.portfolio import Account, Fill, Rejection
from arena.publish import BOARD_KEY, LeaderboardPublisher
from bench.harness import Arena, Report, dist_ms, target

PRICES = {"BTC-USD": 97_000.0, "SOL-USD": 236.0, "FARTCOIN-USD": 1.42}
STEPS = 720  # an hour of snapshots, one per 5 s


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--agents", type=int, default=50, help="agents in the run (default %(default)s)")
    p.add_argument("--fills", type=int, default=10_000, help="fills in the run (default %(default)s)")
    p.add_argument(
        "--turns", type=int, default=20, help="model turns per agent, with their conversations (default %(default)s)"
    )
    p.add_argument("--pages", type=int, default=20, help="open pages for the CPU measurement (default %(default)s)")
    p.add_argument("--seconds", type=float, default=30.0, help="length of each CPU measurement (default %(default)s)")
    p.add_argument("--renders", type=int, default=3, help="first renders measured in chromium (default %(default)s)")
    p.add_argument("--seed", type=int, default=5, help="random seed (default %(default)s)")


def quotes_at(prices: dict[str, float], now: datetime) -> dict[str, Quote]:
    out = {}
    for pid, px in prices.items():
        half = px * (0.00004 if pid == "BTC-USD" else 0.0004)
        out[pid] = Quote(product_id=pid, price=px, best_bid=px - half, best_ask=px + half, received_at=now)
    return out


def envelope(agent: str, seq: int, trade: dict | None, final: bool) -> bytes:
    """A router's mirrored conversation (calfkit 0.13 wire JSON): get_portfolio, maybe execute_trade, a text."""
    t = "2026-01-01T00:00:00+00:00"
    history = [
        {
            "kind": "request",
            "parts": [{"part_kind": "user-prompt", "content": f"Time: ... (snapshot #{seq})", "timestamp": t}],
        },
        {
            "kind": "response",
            "parts": [{"part_kind": "tool-call", "tool_name": "get_portfolio", "args": "{}", "tool_call_id": "c1"}],
            "timestamp": t,
        },
        {
            "kind": "request",
            "parts": [
                {
                    "part_kind": "tool-return",
                    "tool_name": "get_portfolio",
                    "tool_call_id": "c1",
                    "timestamp": t,
                    "content": {"cash": 90000.0, "positions": [], "total_value": 100000.0, "return_pct": 0.0},
                }
            ],
        },
    ]
    if trade:
        history.append(
            {
                "kind": "response",
                "timestamp": t,
                "parts": [
                    {
                        "part_kind": "text",
                        "content": f"{agent}: the trend is up on {trade['product_id']}, buying a slice.",
                    },
                    {
                        "part_kind": "tool-call",
                        "tool_name": "execute_trade",
                        "tool_call_id": "c2",
                        "args": {
                            "product_id": trade["product_id"],
                            "side": trade["side"],
                            "quantity": trade["quantity"],
                        },
                    },
                ],
            }
        )
        history.append(
            {
                "kind": "request",
                "parts": [
                    {
                        "part_kind": "tool-return",
                        "tool_name": "execute_trade",
                        "tool_call_id": "c2",
                        "timestamp": t,
                        "content": trade,
                    }
                ],
            }
        )
    history.append(
        {
            "kind": "response",
            "parts": [{"part_kind": "text", "content": f"{agent}: done for tick {seq}."}],
            "timestamp": t,
        }
    )
    reply = (
        {
            "kind": "return",
            "in_reply_to": "f1",
            "tag": None,
            "marker": None,
            "parts": [{"kind": "text", "text": "done"}],
        }
        if final
        else None
    )
    return json.dumps(
        {
            "context": {"state": {"message_history": history, "uncommitted_message": None}, "deps": {}},
            "internal_workflow_state": {"call_stack": {"_internal_list": []}},
            "reply": reply,
        }
    ).encode()


def synthetic_run(n_agents: int, n_fills: int, n_turns: int, seed: int):
    """(records [(topic, key, value, headers)], ArenaState, accounts, counts): an hour of a run ending now."""
    rnd = random.Random(seed)
    end = datetime.now(timezone.utc).replace(microsecond=0)
    start = end - timedelta(seconds=5 * STEPS)
    names = [f"agent-{i:02d}" for i in range(n_agents)]
    st = ArenaState(max_quote_age_s=30, fee_bps=10, metrics=MetricsTracker(fee_bps=10))
    st.started_at = start
    prices = dict(PRICES)
    accounts: dict[str, Account] = {}
    records: list[tuple[str, bytes | None, bytes, list]] = []
    fills = rejections = 0
    per_step = n_fills / STEPS
    owed = 0.0
    for step in range(STEPS):
        now = start + timedelta(seconds=5 * step)
        for pid in prices:
            prices[pid] *= 1 + rnd.gauss(0, 0.0012)
        snap = MarketSnapshot(seq=step + 1, published_at=now, quotes=quotes_at(prices, now))
        st.on_snapshot(snap, now=now)
        owed += per_step
        while owed >= 1 and fills < n_fills:
            owed -= 1
            n = rnd.choice(names)
            acc = accounts.setdefault(n, Account(agent=n))
            pid = rnd.choice(list(prices))
            q = snap.quotes[pid]
            held = acc.positions[pid].quantity if pid in acc.positions else 0.0
            side = "sell" if held and rnd.random() < 0.5 else "buy"
            qty = round(rnd.choice([200, 500, 1000]) / q.price, 6) if side == "buy" else held * rnd.choice([0.5, 1.0])
            px = q.best_ask if side == "buy" else q.best_bid
            t = Fill(
                trade_id=f"{n}|t{step}|{fills}",
                agent=n,
                product_id=pid,
                side=side,
                quantity=qty,
                price=px,
                fee=qty * px * 0.001,
                executed_at=now,
                latency_ms=rnd.uniform(1, 5),
                quote_age_s=rnd.uniform(0.1, 2),
            )
            fills += 1
            batch: list[Fill | Rejection] = [t]
            if rnd.random() < 0.01:  # and now and then a rejection besides
                batch.append(
                    Rejection(
                        trade_id=t.trade_id + "r",
                        agent=n,
                        product_id=pid,
                        side="buy",
                        quantity=50.0,
                        status="rejected",
                        reason="insufficient cash: need $485,120.00, have $61,204.18",
                        executed_at=now,
                        latency_ms=t.latency_ms,
                    )
                )
                rejections += 1
            for t in batch:
                acc.fold(t)
                st.on_trade(t)
                records.append((TRADES_TOPIC, n.encode(), k.encode(t), []))
        st.sample(accounts, now=now)
    # each agent's latest turns: decisions and the mirrored conversation (three hops each)
    for n in names:
        for i in range(n_turns):
            seq = STEPS - n_turns + i + 1
            at = start + timedelta(seconds=5 * (seq - 1))
            run_id = f"{n}-run-{seq}"
            base = dict(
                agent=n,
                run_id=run_id,
                tick_seq=seq,
                tick_published_at=at,
                started_at=at,
                summary=f"#{seq} BTC 97,000.00 · SOL 236.0000",
            )
            records.append((DECISIONS_TOPIC, n.encode(), k.encode(Decision(status="started", **base)), []))
            trade = (
                {
                    "status": "filled",
                    "product_id": "SOL-USD",
                    "side": "buy",
                    "quantity": 2.1,
                    "price": 236.1,
                    "fee": 0.5,
                    "cash_after": 89_500.0,
                }
                if i % 2
                else None
            )
            headers = [
                ("correlation_id", run_id.encode()),
                ("x-calf-emitter", n.encode()),
                ("x-calf-wire", b"envelope"),
            ]
            for hop in range(3):
                records.append((ACTIVITY_TOPIC, None, envelope(n, seq, trade, final=hop == 2), headers))
            records.append(
                (
                    DECISIONS_TOPIC,
                    n.encode(),
                    k.encode(
                        Decision(
                            status="done",
                            finished_at=at + timedelta(seconds=1.5),
                            output=f"{n}: done for tick {seq}.",
                            **base,
                        )
                    ),
                    [],
                )
            )
    records.append(
        (
            MARKET_TOPIC,
            None,
            k.encode(MarketSnapshot(seq=STEPS + 1, published_at=end, quotes=quotes_at(prices, end))),
            [],
        )
    )
    pub = LeaderboardPublisher(None, st, lambda: accounts)
    records += [(LEADERBOARD_TOPIC, key, value, []) for key, value in pub.records(0.0)]
    return (
        records,
        st,
        accounts,
        prices,
        {"fills": fills, "rejections": rejections, "trades": fills + rejections, "records": len(records)},
    )


async def produce(kafka, records) -> None:
    prod = k.producer(kafka)
    await prod.start()
    try:
        for topic, key, value, headers in records:
            await prod.send(topic, value, key=key, headers=headers or None)
        await prod.flush()
    finally:
        await prod.stop()


async def get_json(client, url: str) -> dict:
    r = await client.get(url)
    r.raise_for_status()
    return r.json()


async def page_stream(
    client, url: str, seen: dict[str, float], stop: asyncio.Event, opened: asyncio.Event, counter: list[int]
) -> None:
    """One open page's push stream: the receipt time of every new trade."""
    async with client.stream("GET", url + "events", timeout=None) as r:
        event = None
        async for line in r.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                if event == "full":
                    counter[0] += 1
                    if counter[0] >= counter[1]:
                        opened.set()
                elif event == "delta":
                    now = time.monotonic()
                    for t in json.loads(line[6:]).get("trades", ()):
                        seen.setdefault(t["trade_id"], now)
            if stop.is_set():
                return


async def load(
    kafka, board: dict, prices: dict[str, float], stop: asyncio.Event, sent: dict[str, float], tag: str = ""
) -> None:
    """What a live run adds every second: a snapshot, a fill, the tools process's leaderboard."""
    prod = k.producer(kafka)
    await prod.start()
    i = 0
    try:
        while not stop.is_set():
            now = datetime.now(timezone.utc)
            await prod.send(
                MARKET_TOPIC, k.encode(MarketSnapshot(seq=10_000 + i, published_at=now, quotes=quotes_at(prices, now)))
            )
            t = Fill(
                trade_id=f"live{tag}-{i}",
                agent="agent-00",
                product_id="SOL-USD",
                side="buy",
                quantity=1.0,
                price=prices["SOL-USD"],
                executed_at=now,
            )
            sent[t.trade_id] = time.monotonic()
            await prod.send(TRADES_TOPIC, k.encode(t), key=b"agent-00")
            board["generated_at"] = now.isoformat()
            await prod.send(LEADERBOARD_TOPIC, json.dumps(board).encode(), key=BOARD_KEY)
            i += 1
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except asyncio.TimeoutError:
                pass
    finally:
        await prod.stop()


def first_render(url: str, n: int, agents: int) -> list[dict]:
    from playwright.sync_api import sync_playwright

    out = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium")
        for _ in range(n):
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.goto(url)
            page.wait_for_function(
                f"document.querySelectorAll('#board tbody tr[data-agent]').length >= {agents} && document.querySelector('#chart canvas')"
                " && document.querySelectorAll('#trades tr[data-trade-id]').length > 0 && document.querySelectorAll('.turn').length > 0",
                timeout=120_000,
                polling="raf",
            )
            ms = page.evaluate("performance.now()")
            nav = page.evaluate("JSON.stringify(performance.getEntriesByType('navigation')[0])")
            out.append(
                {
                    "drawn_ms": ms,
                    "dom_content_loaded_ms": json.loads(nav)["domContentLoadedEventEnd"],
                    "rows": page.evaluate("document.querySelectorAll('#trades tr[data-trade-id]').length"),
                }
            )
            page.close()
        browser.close()
    return out


async def run(args: argparse.Namespace, report: Report) -> int:
    import httpx

    t0 = time.monotonic()
    records, st, accounts, prices, counts = synthetic_run(args.agents, args.fills, args.turns, args.seed)
    report.log(f"synthetic run: {counts} in {time.monotonic() - t0:.1f}s")
    results: dict = {"run": counts}
    async with Arena(report) as arena:
        t0 = time.monotonic()
        await produce(arena.kafka, records)
        report.log(f"produced {len(records)} records in {time.monotonic() - t0:.1f}s")
        port = free_port()
        url = f"http://127.0.0.1:{port}/"
        web = await arena.launch("web", "-m", "arena.cli", "web", "--port", str(port)).ready(120)
        async with httpx.AsyncClient() as client:
            while (await get_json(client, url + "api/health"))["records"] < len(records):
                await asyncio.sleep(0.05)
            results["catch_up_s"] = round(time.monotonic() - web.launched_at, 2)
            results["web_ready_s"] = round(web.startup_s, 2)
            state = (await client.get(url + "api/state")).content
            results["first_push_kb"] = round(len(state) / 1024, 1)
            report.line(
                f"web process: READY in {web.startup_s:.1f}s, whole run read {results['catch_up_s']:.1f}s after launch; "
                f"first push {results['first_push_kb']:.0f} KiB"
            )
            renders = await asyncio.to_thread(first_render, url, args.renders, args.agents + 1)
            drawn = [r["drawn_ms"] for r in renders]
            results["first_render_ms"] = {
                "median": round(statistics.median(drawn)),
                "all": [round(x) for x in drawn],
                "dom_content_loaded_ms": round(statistics.median(r["dom_content_loaded_ms"] for r in renders)),
            }
            report.line(
                f"first render in chromium (1440x900, {args.agents} agents, {counts['trades']} trades): "
                f"median {results['first_render_ms']['median']} ms ({', '.join(str(round(x)) for x in drawn)})"
            )

            board = await get_json(client, url + "api/leaderboard")
            board["value_history"]["samples"] = []
            cpu = {}
            for pages in (0, args.pages):
                stop, opened = asyncio.Event(), asyncio.Event()
                sent: dict[str, float] = {}
                seen = [dict() for _ in range(pages)]
                counter = [0, pages]
                streams = [
                    asyncio.create_task(page_stream(client, url, seen[i], stop, opened, counter)) for i in range(pages)
                ]
                if pages:
                    await asyncio.wait_for(opened.wait(), 120)
                feeder = asyncio.create_task(load(arena.kafka, board, prices, stop, sent, tag=str(pages)))
                await asyncio.sleep(2)  # the first pushes are behind us
                c0, w0 = web.cpu_s(), time.monotonic()
                await asyncio.sleep(args.seconds)
                c1, w1 = web.cpu_s(), time.monotonic()
                stop.set()
                await feeder
                for s in streams:
                    s.cancel()
                await asyncio.gather(*streams, return_exceptions=True)
                share = (c1 - c0) / (w1 - w0) * 100
                lat = [page[tid] - sent[tid] for page in seen for tid in page if tid in sent]
                cpu[pages] = {"cpu_pct_of_a_core": round(share, 1), "fill_to_page": dist_ms(lat) if lat else None}
                report.line(
                    f"{pages:>2} open pages: web process {share:.1f}% of a core"
                    + (
                        f"; new fill -> every page p50 {statistics.median(lat) * 1e3:.0f} ms, max {max(lat) * 1e3:.0f} ms"
                        if lat
                        else ""
                    )
                )
            results["server"] = {f"{p}_pages": v for p, v in cpu.items()}
            results["web_rss_mb"] = round(web.rss_mb() or 0, 1)
    worst = cpu[args.pages]["fill_to_page"]
    report.emit(
        results,
        {
            "first_render_ms": target(results["first_render_ms"]["median"], 3000),
            "fill_to_every_page_max_ms": target(worst["max"] if worst else None, 1000),
        },
    )
    return 0
