"""`arena web` and `arena report --html`: the page's state and JSON API from topic records, the tools
process's leaderboard records, and the page itself in Debian's chromium (playwright-python pointed at the
system browser) against a running offline arena."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pytest
from starlette.testclient import TestClient
from test_viewer import REJECTED, headers, refused_call, run_records

from arena.config import ACTIVITY_TOPIC, DECISIONS_TOPIC, HEALTH_TOPIC, LEADERBOARD_TOPIC, MARKET_TOPIC, TRADES_TOPIC
from arena.dashboard import ArenaState, leaderboard, write_export
from arena.decisions import Decision
from arena.metrics import BASELINE_NAME
from arena.portfolio import replay
from arena.publish import BOARD_KEY, LeaderboardPublisher, LeaderboardRecord, ValueSample
from arena.supervisor import ProcessStatus
from arena.web.server import Reader, build_app
from arena.web.state import WebState
from tests.support.procs import Proc
from tests.support.records import T0, chromium, fill, rejection, snap, tools_state


@dataclass
class Rec:
    """An aiokafka ConsumerRecord's fields the reader uses."""

    topic: str
    value: bytes | None
    key: bytes | None = None
    headers: list = field(default_factory=list)
    timestamp: int = 0


def board_records(st: ArenaState, accounts: dict) -> list[Rec]:
    pub = LeaderboardPublisher(None, st, lambda: accounts)
    return [Rec(LEADERBOARD_TOPIC, v, k) for k, v in pub.records(0.0)]


def fed_state() -> tuple[WebState, Reader, dict]:
    """A WebState fed through the reader with one record of every kind, as they come off the topics."""
    st, accounts = tools_state()
    state = WebState()
    reader = Reader(None, state)
    records = board_records(st, accounts)
    records += [
        Rec(TRADES_TOPIC, t.model_dump_json().encode(), t.agent.encode())
        for t in [
            fill(1, "alice"),
            fill(2, "bob", qty=0.2),
            rejection(3, "bob", qty=0.1),
        ]
    ]
    records.append(Rec(MARKET_TOPIC, snap(2, btc=96_000.0, at=datetime.now(timezone.utc)).model_dump_json().encode()))
    started = Decision(
        agent="alice",
        run_id="run-a",
        tick_seq=2,
        tick_published_at=T0,
        status="started",
        summary="#2 BTC 96,000.00",
        started_at=T0,
    )
    done = started.model_copy(
        update={
            "status": "done",
            "output": "alice: bought BTC on the uptrend.",
            "finished_at": T0 + timedelta(seconds=1),
        }
    )
    records.append(Rec(DECISIONS_TOPIC, started.model_dump_json().encode()))
    records += [Rec(ACTIVITY_TOPIC, raw, None, h) for raw, h in run_records("alice", "run-a", 2)]
    records.append(Rec(DECISIONS_TOPIC, done.model_dump_json().encode()))
    records += [Rec(ACTIVITY_TOPIC, raw, None, h) for raw, h in run_records("bob", "run-b", 2, trade_result=REJECTED)]
    records.append(Rec(HEALTH_TOPIC, ProcessStatus(name="router alice", status="ready").model_dump_json().encode()))
    records.append(
        Rec(
            HEALTH_TOPIC,
            ProcessStatus(name="router bob", status="exited", detail="code 1, log x.log").model_dump_json().encode(),
        )
    )
    reader.take(records)
    return state, reader, leaderboard(st, accounts)


# -- the tools process's records -------------------------------------------------------------------


def test_publisher_sends_each_sample_once_and_the_board_when_it_changes():
    st, accounts = tools_state()
    pub = LeaderboardPublisher(None, st, lambda: accounts, heartbeat_s=10)
    first = pub.records(0.0)
    keys = [k for k, _ in first]
    assert keys[-1] == BOARD_KEY and len(keys) == 2, keys  # one value sample, then the board
    sample = ValueSample.model_validate_json(first[0][1])
    assert set(sample.values) == {"alice", "bob", BASELINE_NAME}  # the baseline's value is added
    board = LeaderboardRecord.model_validate_json(first[-1][1])
    assert board.value_history.samples == []  # the samples travel once each, not in every board
    assert {a.name for a in board.agents} == {"alice", "bob", BASELINE_NAME}
    assert pub.records(0.5) == []  # nothing changed: nothing sent
    st.on_trade(fill(4, "alice", side="sell", qty=0.05, price=95_995.0))
    accounts.update(
        replay(
            [
                fill(1, "alice"),
                fill(2, "bob", qty=0.2),
                rejection(3, "bob", "", qty=0.1),
                fill(4, "alice", side="sell", qty=0.05, price=95_995.0),
            ]
        )
    )
    again = pub.records(1.0)
    assert [k for k, _ in again] == [BOARD_KEY]  # a fill: the board again, the sample not again
    assert pub.records(5.0) == []
    assert [k for k, _ in pub.records(11.5)] == [BOARD_KEY]  # the heartbeat
    st.sample(accounts, now=T0 + timedelta(seconds=40))
    assert [k[:7] for k, _ in pub.records(12.0)] == [b"sample:"]  # the next sample, once


# -- the state and the JSON API --------------------------------------------------------------------


def test_api_shapes_from_topic_records():
    state, reader, export = fed_state()
    client = TestClient(build_app(state))
    board = client.get("/api/leaderboard").json()
    # the export's shape and numbers (only the clock's fields differ)
    assert set(board) == set(export)
    for mine, theirs in zip(board["agents"], export["agents"]):
        assert {k: v for k, v in mine.items() if k != "last_reply_at"} == {
            k: v for k, v in theirs.items() if k != "last_reply_at"
        }
    assert [s["values"] for s in board["value_history"]["samples"]][0]["alice"] == export["value_history"]["samples"][
        0
    ]["values"]["alice"]

    trades = client.get("/api/trades").json()
    assert trades["count"] == 3 and {t["agent"] for t in trades["trades"]} == {"alice", "bob"}
    assert client.get("/api/trades?agent=bob&status=rejected").json()["trades"][0]["reason"] == "insufficient cash"
    assert client.get("/api/trades?limit=1").json()["trades"][0]["trade_id"] == "bob|run|3"
    assert client.get("/api/trades?limit=x").status_code == 400
    assert client.get("/api/trades?status=maybe").status_code == 400

    positions = client.get("/api/positions").json()["positions"]
    assert {(p["agent"], p["product_id"]) for p in positions if not p["baseline"]} == {
        ("alice", "BTC-USD"),
        ("bob", "BTC-USD"),
    }
    assert all({"quantity", "avg_cost", "mark", "market_value", "unrealized_pnl"} <= set(p) for p in positions)

    turns = client.get("/api/decisions?agent=alice").json()["turns"]
    assert len(turns) == 1
    t = turns[0]
    assert (
        t["status"] == "done"
        and t["summary"] == "#2 BTC 96,000.00"
        and t["output"] == "alice: bought BTC on the uptrend."
    )
    calls = [s for s in t["steps"] if s["kind"] == "call"]
    assert [c["tool"] for c in calls] == ["get_portfolio", "execute_trade"]
    assert calls[1]["summary"] == "product_id=BTC-USD, side=buy, quantity=0.0822"
    assert calls[1]["result_summary"].startswith("filled buy 0.0822 BTC @ 97,323.70") and not calls[1]["failed"]
    assert json.loads(calls[1]["result"])["cash_after"] == 92000.0  # the whole result, not only the summary
    assert [s["text"] for s in t["steps"] if s["kind"] == "text"] == ["alice buys BTC"]
    bob = client.get("/api/decisions?agent=bob").json()["turns"][0]
    assert bob["status"] == "running"  # its activity came, its Decision not (yet)
    assert [s for s in bob["steps"] if s["kind"] == "call"][1]["failed"] is True
    assert client.get("/api/decisions").json()["count"] == 2

    eq = client.get("/api/equity").json()
    assert eq["baseline"] == BASELINE_NAME
    for a in board["agents"]:  # every curve ends at the leaderboard's number
        assert eq["series"][a["name"]][-1][1] == a["total_value"]

    market = client.get("/api/market").json()
    assert market["feed"]["status"] == "ok" and market["products"]["BTC-USD"]["bid"] == 95_995.0
    health = client.get("/api/health").json()
    assert [p["name"] for p in health["processes"]] == ["router alice", "router bob"] and health["skipped_records"] == 0

    page = client.get("/").text
    assert "static/app.js" in page and not re.search(r"""(src|href)=["']https?:""", page)  # no CDN
    assert client.get("/static/uplot/uPlot.iife.min.js").status_code == 200
    assert client.get("/static/uplot/LICENSE").status_code == 200


def test_a_call_calfkit_refused_is_a_refused_step_with_its_reason():
    """The same reading of the envelopes as the response viewer's (arena/conversation.py)."""
    state = WebState()
    assert state.on_activity(refused_call(), headers("bob", "r10"), now=T0)
    (turn,) = state.decisions("bob")
    assert [(s["kind"], s.get("tool")) for s in turn["steps"]] == [
        ("call", "execute_trade"),
        ("refused", "execute_trade"),
    ]
    assert turn["steps"][1]["text"] == "'quantity' is a required property" and turn["steps"][1]["failed"]


def test_malformed_records_are_counted_and_skipped_never_raised():
    state, reader, _ = fed_state()
    before = (
        json.dumps(state.leaderboard(), sort_keys=True),
        len(state.trades),
        len(state.turns),
        state.skipped_records,
    )
    reader.take(
        [
            Rec(TRADES_TOPIC, b"{not json"),
            Rec(TRADES_TOPIC, b'{"agent": "mallory"}'),
            Rec(DECISIONS_TOPIC, b"[]"),
            Rec(HEALTH_TOPIC, None),
            Rec(MARKET_TOPIC, b'{"seq": "x"}'),
            Rec(LEADERBOARD_TOPIC, b'{"agents": "none"}', BOARD_KEY),  # well-formed JSON, not a leaderboard
            Rec(LEADERBOARD_TOPIC, b'{"t": 3}', b"sample:x"),
            Rec(
                ACTIVITY_TOPIC,
                b"garbage",
                None,
                [("x-calf-emitter", b"alice"), ("correlation_id", b"run-z"), ("x-calf-wire", b"envelope")],
            ),
        ]
    )
    after = (
        json.dumps(state.leaderboard(), sort_keys=True),
        len(state.trades),
        len(state.turns),
        state.skipped_records,
    )
    assert after[:3] == before[:3]
    assert after[3] == before[3] + 8


def test_pushes_carry_only_what_changed():
    state, reader, _ = fed_state()
    first = state.snapshot_json()
    assert first["trade_count"] == 3 and len(first["turns"]) == 2 and first["board"]["value_history"]["samples"] == []
    v = first["version"]
    quiet = state.delta(v)
    assert "trades" not in quiet and "turns" not in quiet and "board" not in quiet and "market" in quiet  # ages only
    reader.take([Rec(TRADES_TOPIC, fill(9, "alice", side="sell", qty=0.05).model_dump_json().encode())])
    reader.take([Rec(TRADES_TOPIC, fill(9, "alice", side="sell", qty=0.05).model_dump_json().encode())])  # a redelivery
    d = state.delta(v)
    assert [t["trade_id"] for t in d["trades"]] == ["alice|run|9"] and d["trade_count"] == 4 and "turns" not in d


def test_feed_is_reported_down_when_silent_and_stale_quotes_are_flagged():
    state = WebState(max_quote_age_s=5)
    assert state.feed()["status"] == "waiting"
    now = datetime.now(timezone.utc)
    state.on_snapshot(snap(1, at=now - timedelta(seconds=2)))
    state.on_snapshot(snap(2, at=now - timedelta(seconds=1), stale=True))
    assert state.feed(now)["status"] == "degraded" and state.market(now)["products"]["SOL-USD"]["stale"]
    later = now + timedelta(seconds=6)
    feed = state.feed(later)
    assert feed["status"] == "down" and feed["problems"][0].startswith("feed silent for 7s")


# -- arena report --html ---------------------------------------------------------------------------


def test_report_html_from_an_export_and_its_ledger(tmp_path):
    from arena.ledger import Ledger
    from arena.report import main as report_main

    st, accounts = tools_state()
    export = tmp_path / "leaderboard.json"
    write_export(export, leaderboard(st, accounts))
    ledger = tmp_path / "ledger.db"
    with Ledger(ledger) as lg:
        for t in [
            fill(1, "alice"),
            fill(2, "bob", qty=0.2),
            rejection(3, "bob", qty=0.1),
        ]:
            lg.record(t.trade_id, t, {})
    out = tmp_path / "run.html"
    assert report_main(["--html", str(out), str(export), str(ledger)]) == 0
    html = out.read_text()
    assert not re.search(r"""(src|href)=["']https?:""", html) and "<script src" not in html  # nothing to fetch
    data = json.loads(re.search(r"window.ARENA_STATIC = (.*?);</script>", html).group(1))
    assert [a["name"] for a in data["board"]["agents"]] == [a["name"] for a in leaderboard(st, accounts)["agents"]]
    assert len(data["trades"]) == 3 and len(data["samples"]) == 1
    # a ledger alone: trades and the computed leaderboard, curves from a market recording
    rec = tmp_path / "market.jsonl"
    rec.write_text("\n".join(snap(i, btc=95_000 + 100 * i).model_dump_json() for i in range(5)) + "\n")
    out2 = tmp_path / "ledger.html"
    assert report_main(["--html", str(out2), str(ledger), "--market", str(rec)]) == 0
    data2 = json.loads(re.search(r"window.ARENA_STATIC = (.*?);</script>", out2.read_text()).group(1))
    names = {a["name"] for a in data2["board"]["agents"]}
    assert {"alice", "bob", BASELINE_NAME} <= names and len(data2["samples"]) == 5
    assert all("metrics" in a and "positions" in a for a in data2["board"]["agents"])
    assert report_main(["--html", str(out2), str(ledger), str(ledger)]) == 1  # one run per page


# -- the page in a real browser --------------------------------------------------------------------


def test_report_html_opens_offline_in_chromium(tmp_path):
    from playwright.sync_api import sync_playwright

    from arena.web.report import write

    st, accounts = tools_state()
    export = tmp_path / "leaderboard.json"
    write_export(export, leaderboard(st, accounts))
    out = write(tmp_path / "run.html", [export])
    with sync_playwright() as p:
        browser = chromium(p)
        ctx = browser.new_context(viewport={"width": 1440, "height": 900}, offline=True)
        requests, errors = [], []
        ctx.on("request", lambda r: requests.append(r.url))
        page = ctx.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(out.as_uri())
        page.wait_for_selector("body[data-rendered]")
        assert [r for r in requests if not r.startswith("file:")] == [] and errors == []
        cells = page.eval_on_selector_all("#board td[data-k=total_value]", "tds => tds.map(t => +t.dataset.v)")
        assert cells == [a["total_value"] for a in leaderboard(st, accounts)["agents"]]
        assert page.locator("#chart canvas").count() == 1
        assert "pass the run's ledger" in page.inner_text("#trades")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()


def _produce_garbage(bootstrap: str) -> None:
    """Malformed records on the topics the page reads: the web process must skip them and go on."""
    from arena import kafka as k
    from arena.config import KafkaSettings

    async def go() -> None:
        prod = k.producer(KafkaSettings(bootstrap_servers=bootstrap))
        await prod.start()
        try:
            await prod.send_and_wait(TRADES_TOPIC, b"{not json")
            await prod.send_and_wait(LEADERBOARD_TOPIC, b'{"agents": 1}', key=BOARD_KEY)
            await prod.send_and_wait(
                ACTIVITY_TOPIC, b"garbage", headers=[("x-calf-emitter", b"alice"), ("correlation_id", b"zz")]
            )
        finally:
            await prod.stop()

    t = threading.Thread(target=lambda: asyncio.run(go()))
    t.start()
    t.join(30)


SEEN_ROWS = """
window.__seen = {};
window.__loadedAt = Date.now();
new MutationObserver(() => {
  document.querySelectorAll('#trades tr[data-trade-id]').forEach(tr => {
    const id = tr.dataset.tradeId;
    if (!(id in window.__seen)) window.__seen[id] = Date.now();
  });
}).observe(document, {subtree: true, childList: true});
"""

BOARD_CELLS = """() => {
  const rows = [...document.querySelectorAll('#board tbody tr[data-agent]')];
  return {generated_at: document.getElementById('board').dataset.generatedAt,
          rows: rows.map(r => Object.fromEntries([['name', r.dataset.agent],
            ...[...r.querySelectorAll('td[data-v]')].map(td => [td.dataset.k, +td.dataset.v])]))};
}"""


def _board_equals_api(page, timeout_s: float = 20.0) -> dict:
    """The page's leaderboard numbers equal /api/leaderboard's at the same generated_at (retried while
    a newer board is on its way to the page)."""
    deadline = time.monotonic() + timeout_s
    while True:
        shown = page.evaluate(BOARD_CELLS)
        api = page.evaluate("() => fetch('api/leaderboard').then(r => r.json())")
        if shown["generated_at"] == api["generated_at"] or time.monotonic() > deadline:
            break
        page.wait_for_timeout(100)
    assert shown["generated_at"] == api["generated_at"], "the page never showed the API's board"
    assert [r["name"] for r in shown["rows"]] == [a["name"] for a in api["agents"]]
    for row, a in zip(shown["rows"], api["agents"]):
        for key in (
            "total_value",
            "return_pct",
            "cash",
            "realized_pnl",
            "unrealized_pnl",
            "fees",
            "trades",
            "rejected",
        ):
            assert row[key] == a[key], (a["name"], key)
    return api


def _ledger_trades(ledger) -> int:
    try:
        with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("SELECT count(*) FROM trades").fetchone()[0]
    except sqlite3.Error:  # not created yet, or busy for a moment
        return 0


def test_live_page_in_chromium(tmp_path):
    from playwright.sync_api import sync_playwright

    run = tmp_path / "run"
    # --no-web: the page under test is an `arena web` of the test's own, opened mid-run
    demo = Proc("-m", "arena.cli", "demo", "--duration", "75", "--interval", "1", "--run-dir", str(run),
                "--no-dashboard", "--no-web")  # fmt: skip
    web = None
    try:
        bootstrap = demo.wait_for("broker ready on", timeout=120).split("broker ready on ")[1].split(";")[0].strip()
        demo.wait_for("tools ready", timeout=240)
        deadline = time.monotonic() + 60  # the page opens mid-run, once a trade was made: it must still show it
        while not _ledger_trades(run / "ledger.db"):
            assert demo.proc.poll() is None and time.monotonic() < deadline, demo.output
            time.sleep(0.2)
        web = Proc("-m", "arena.cli", "web", "--port", "0", "--bootstrap-servers", bootstrap, "--max-quote-age", "5")
        url = re.search(r"http://\S+/", web.wait_for("READY", timeout=60)).group(0)
        shots = {}
        with sync_playwright() as p:
            browser = chromium(p)
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.add_init_script(SEEN_ROWS)
            page.goto(url)
            page.wait_for_function(
                "document.querySelectorAll('#board tbody tr[data-agent]').length >= 4", timeout=30_000
            )
            assert page.inner_text("#pill") == "● LIVE"

            # the model chat: a tool call with its result, readable
            page.wait_for_selector(".turn .step.call[data-tool=execute_trade] .res.ok", timeout=30_000)
            # (the one with its result: a newer call may still be waiting for its own)
            call = page.locator(".turn .step.call[data-tool=execute_trade]:has(.res.ok)").first
            assert call.locator(".sig").inner_text().startswith("→ execute_trade(product_id=")
            assert re.match(r"← filled (buy|sell) ", call.locator(".res").inner_text())
            page.select_option("#agent-filter", "carol")
            assert set(page.eval_on_selector_all(".turn", "ts => ts.map(t => t.dataset.agent)")) == {"carol"}
            page.select_option("#agent-filter", "")

            _board_equals_api(page)

            # a fill made after the page opened shows up within 2 s, without a reload
            page.wait_for_function(
                "Object.keys(window.__seen).some(id => window.__seen[id] > window.__loadedAt + 1000)", timeout=30_000
            )
            page.wait_for_timeout(3000)
            trades = page.evaluate("() => fetch('api/trades').then(r => r.json())")["trades"]
            seen = page.evaluate("window.__seen")
            loaded = page.evaluate("window.__loadedAt")
            late = [
                (seen[t["trade_id"]] - datetime.fromisoformat(t["executed_at"]).timestamp() * 1000)
                for t in trades
                if t["trade_id"] in seen and seen[t["trade_id"]] > loaded + 1000
            ]
            assert late and max(late) <= 2000, late

            # malformed records: skipped and counted, the page goes on
            _produce_garbage(bootstrap)
            page.wait_for_function(
                "fetch('api/health').then(r => r.json()).then(h => h.skipped_records >= 3)", timeout=15_000
            )
            _board_equals_api(page)

            shots["1440x900"] = tmp_path / "web-1440x900.png"
            page.screenshot(path=str(shots["1440x900"]))
            phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
            phone.on("pageerror", lambda e: errors.append(str(e)))
            phone.goto(url)
            phone.wait_for_function(
                "document.querySelectorAll('#board tbody tr[data-agent]').length >= 4", timeout=30_000
            )
            phone.wait_for_selector("#chart canvas")
            shots["390x844"] = tmp_path / "web-390x844.png"
            phone.screenshot(path=str(shots["390x844"]))
            assert (
                phone.evaluate("document.documentElement.scrollWidth") <= 390
            )  # no sideways page: wide tables scroll inside

            # the run ends (Ctrl-C, as a user ends it; --duration is only the bound): the tools process's
            # last board equals its export, and the page says the feed is down
            assert demo.stop(signal.SIGINT, timeout=60) == 0, demo.output
            export = json.loads((run / "leaderboard.json").read_text())
            page.wait_for_function("document.getElementById('pill').textContent.includes('FEED DOWN')", timeout=30_000)
            assert "feed silent" in page.inner_text("#problems")
            api = _board_equals_api(page)
            assert [a["name"] for a in api["agents"]] == [a["name"] for a in export["agents"]]
            for mine, theirs in zip(api["agents"], export["agents"]):
                for key in ("total_value", "cash", "realized_pnl", "unrealized_pnl", "fees", "trades", "rejected"):
                    assert mine[key] == theirs[key], (mine["name"], key)
            # opened mid-run, it has the whole run: every trade in the ledger
            with sqlite3.connect(f"file:{run / 'ledger.db'}?mode=ro", uri=True) as db:
                (n_ledger,) = db.execute("SELECT count(*) FROM trades").fetchone()
            assert page.evaluate("() => fetch('api/trades').then(r => r.json())")["count"] == n_ledger > 0
            assert errors == [], errors
            browser.close()
        for size, path in shots.items():
            w, h = map(int, size.split("x"))
            head = path.read_bytes()[:24]
            assert (
                head[:8] == b"\x89PNG\r\n\x1a\n"
                and int.from_bytes(head[16:20], "big") == w
                and int.from_bytes(head[20:24], "big") == h
            )
        assert web.stop() == 0, web.output
    finally:
        if web is not None:
            web.stop(signal.SIGKILL)
        demo.stop()


def test_demo_helpers_pick_a_free_port_when_taken_and_read_the_url():
    import socket

    from arena.web import web_command, web_url

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        assert web_command(taken, ["--bootstrap-servers", "b:9092"])[-2:] == ["--port", "0"]
    assert web_command(taken, [])[-2:] == ["--port", str(taken)]  # free again
    log = "Connecting to Kafka at b:9092 ...\nREADY web arena on http://127.0.0.1:8123/ (reading b:9092; Ctrl-C to stop)\n"
    assert web_url(log) == "http://127.0.0.1:8123/"


@pytest.mark.processes
async def test_arena_web_keeps_its_page_without_a_broker_and_restarts_in_place_when_one_answers():
    """The broker goes away: the page keeps what it has (a finished run stays readable). A broker answers
    again (an in-memory one comes back empty): the page's process restarts itself in place (same pid,
    same port) and reads what the new broker carries."""
    import urllib.request

    from arena import kafka as k
    from arena.broker import EmbeddedBroker, free_port
    from arena.config import KafkaSettings

    port, web_port = free_port(), free_port()
    broker = EmbeddedBroker("127.0.0.1", port).start()
    web = None

    async def publish(seq: int) -> None:
        producer = k.producer(KafkaSettings(bootstrap_servers=broker.bootstrap))
        await producer.start()
        try:
            await producer.send_and_wait(MARKET_TOPIC, k.encode(snap(seq, at=datetime.now(timezone.utc))))
        finally:
            await producer.stop()

    async def shown_seq(seq: int, timeout: float = 60) -> None:
        url = f"http://127.0.0.1:{web_port}/api/market"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
                if json.loads(body)["feed"]["snapshot_seq"] == seq:
                    return
            except OSError:
                pass  # restarting: nobody listens for a moment
            await asyncio.sleep(0.2)
        raise AssertionError(f"snapshot #{seq} not shown within {timeout}s:\n{web.output}")

    async def readies(n: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while sum("READY" in line for line in list(web.lines)) < n:
            assert web.proc.poll() is None and time.monotonic() < deadline, web.output
            await asyncio.sleep(0.1)

    try:
        await broker.wait_ready()
        web = Proc("-m", "arena.cli", "web", "--port", str(web_port), "--bootstrap-servers", broker.bootstrap)
        await readies(1)
        pid = web.proc.pid
        await publish(7)
        await shown_seq(7)
        broker.proc.kill()
        broker.proc.wait()
        await asyncio.to_thread(web.wait_for, "the web arena serves on with what it has", 30)
        await shown_seq(7)  # the run so far stays on the page while no broker is there
        assert "restarting" not in web.output
        broker = EmbeddedBroker("127.0.0.1", port).start()
        await broker.wait_ready()
        await asyncio.to_thread(web.wait_for, "again: restarting the web arena in place", 30)
        await readies(2)
        await publish(1)  # the new broker's first snapshot: read by the fresh process from the new topic
        await shown_seq(1)
        assert web.proc.pid == pid
        assert web.stop() == 0 and "Traceback" not in web.output, web.output
        assert web.output.rstrip().endswith("web arena stopped"), web.output
    finally:
        if web is not None:
            web.stop(signal.SIGKILL)
        broker.stop()
