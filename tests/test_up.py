"""`arena up arena.toml`: the file is checked whole before anything starts (a matrix of mistakes, each
with the message that names it), and a whole offline arena runs from examples/offline.toml."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from arena import service, up
from arena.demo import demo_arena
from arena.demo import parse_args as demo_args
from tests.support.commands import run_script
from tests.support.procs import Proc

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

VALID = """
seed = 3
[market]
source = "simulator"
interval = 2
[[chat_nodes]]
name = "quant"
model = "momentum"
base_url = "offline"
[[chat_nodes]]
name = "gpt"
model = "gpt-4o-mini"
base_url = "https://api.example.com/v1"
api_key_env = "ARENA_TEST_KEY"
[[agents]]
name = "alice"
strategy = "momentum"
chat_node = "quant"
[[agents]]
name = "bob"
prompt_file = "bob.md"
chat_node = "gpt"
"""


def load(tmp_path: Path, text: str, env: dict | None = None) -> up.Arena:
    (tmp_path / "bob.md").write_text("You are a careful trader.\n")
    (tmp_path / "empty.md").write_text("  \n")
    (tmp_path / "rec.jsonl").write_text("{}\n")
    path = tmp_path / "arena.toml"
    path.write_text(text)
    return up.load(path, env={"ARENA_TEST_KEY": "sk-secret"} if env is None else env)


def test_a_valid_file_loads_with_its_paths_resolved(tmp_path):
    arena = load(tmp_path, VALID)
    assert [a.name for a in arena.agents] == ["alice", "bob"]
    assert arena.agents[1].prompt_file == (tmp_path / "bob.md").resolve() and arena.agents[1].strategy is None
    assert arena.agents[0].strategy == "momentum" and arena.seed == 3 and arena.market.interval == 2.0
    assert arena.chat_node("gpt").api_key_env == "ARENA_TEST_KEY"
    assert "sk-secret" not in json.dumps(arena.describe())  # what the run folder keeps: the variable's name only


def test_the_examples_load(tmp_path):
    offline = up.load(EXAMPLES / "offline.toml", env={})
    assert (
        offline.web is not None
        and up.load(EXAMPLES / "openai.toml", env={"OPENAI_API_KEY": "k", "GROQ_API_KEY": "k"}).web
    )
    assert all(c.offline for c in offline.chat_nodes) and len(offline.agents) >= 3
    assert any(a.prompt_file for a in offline.agents)
    real = up.load(EXAMPLES / "openai.toml", env={"OPENAI_API_KEY": "k1", "GROQ_API_KEY": "k2"})
    assert not any(c.offline for c in real.chat_nodes) and all(c.price_in_per_mtok is not None for c in real.chat_nodes)


def test_the_demo_is_an_arena_of_the_same_format():
    arena = demo_arena(demo_args(["--agents", "3", "--seed", "11"]))
    assert isinstance(arena, up.Arena) and arena.seed == 11 and arena.market.source == "simulator"
    assert [(a.name, a.strategy, a.chat_node) for a in arena.agents] == [
        ("alice", "momentum", "quant"),
        ("bob", "scalper", "degen"),
        ("carol", "brainrot", "quant"),
    ]
    assert {a.chat_node for a in arena.agents} <= {c.name for c in arena.chat_nodes}
    # the demo trades under the tools' own fee and impact defaults, not free fills
    from arena.desk import DEFAULT_FEE_BPS, DEFAULT_IMPACT_BPS

    assert (arena.tools.fee_bps, arena.tools.impact_bps) == (DEFAULT_FEE_BPS, DEFAULT_IMPACT_BPS) != (0, 0)
    assert {a.turn_timeout for a in arena.agents} == {10.0}  # a stalled turn costs 10 s, not the default 60


def test_the_key_reaches_its_chat_node_through_the_environment_only(tmp_path, monkeypatch):
    monkeypatch.setenv("ARENA_TEST_KEY", "sk-secret")
    arena = load(tmp_path, VALID)
    gpt = arena.chat_node("gpt")
    assert up._chat_env(gpt) == {"OPENAI_API_KEY": "sk-secret"}
    assert "sk-secret" not in " ".join(up._chat_args(gpt, ["--bootstrap-servers", "x:1"], None))
    gpt.price_in_per_mtok, gpt.price_out_per_mtok = 0.15, 0.6
    assert up._chat_args(gpt, [], None)[-4:] == ["--price-in", "0.15", "--price-out", "0.6"]
    assert up._router_args(arena.agents[1], [])[-2:] == ["--strategy-file", str((tmp_path / "bob.md").resolve())]


# (what is changed in VALID, a fragment of the message that must name the mistake)
MISTAKES = [
    (
        ('chat_node = "gpt"', 'chat_node = "claude"'),
        "agent 'bob': unknown chat node 'claude' (the file defines: quant, gpt)",
    ),
    (('name = "bob"', 'name = "alice"'), "agent 'alice': two agents with this name"),
    (('name = "gpt"', 'name = "quant"'), "chat node 'quant': two chat nodes with this name"),
    (
        ('api_key_env = "ARENA_TEST_KEY"', 'api_key_env = "ARENA_UNSET_KEY"'),
        "the environment variable ARENA_UNSET_KEY (api_key_env) is not set",
    ),
    (
        ('api_key_env = "ARENA_TEST_KEY"', 'api_key_env = "sk-live-1234"'),
        "api_key_env is the NAME of an environment variable",
    ),
    (('api_key_env = "ARENA_TEST_KEY"\n', ""), "chat node 'gpt': name the environment variable that holds its API key"),
    (('prompt_file = "bob.md"', 'prompt_file = "missing.md"'), "agent 'bob': cannot read prompt_file"),
    (('prompt_file = "bob.md"', 'prompt_file = "empty.md"'), "agent 'bob': prompt_file"),
    (
        ('prompt_file = "bob.md"', 'prompt_file = "bob.md"\nstrategy = "momentum"'),
        "give strategy or prompt_file, not both",
    ),
    (('strategy = "momentum"', 'strategy = "yolo"'), "agent 'alice': unknown strategy 'yolo'"),
    (("seed = 3", 'seed = 3\ncolour = "red"'), "the file: unknown key 'colour'"),
    (("interval = 2", "interval = 2\ntick = 1"), "[market]: unknown key 'tick'"),
    (('chat_node = "quant"', 'chat_node = "quant"\nmodel = "x"'), "[[agents]] #1: unknown key 'model'"),
    (("interval = 2", 'interval = "fast"'), "[market].interval: expected a number, got 'fast'"),
    (("interval = 2", "interval = 0"), "[market].interval must be positive"),
    (
        ('source = "simulator"', 'source = "binance"'),
        "[market].source: 'binance' is not one of simulator, live, recording",
    ),
    (('source = "simulator"', 'source = "recording"'), 'source = "recording" needs recording = "PATH"'),
    (('source = "simulator"', 'source = "recording"\nrecording = "nope.jsonl"'), "[market].recording: no such file"),
    (("interval = 2", 'products = ["btc"]'), "[market].products: expected product ids"),
    (('name = "alice"', 'name = "al ice"'), "agent 'al ice': a name is 1-64 letters"),
    (('name = "alice"', 'name = "buy-and-hold (baseline)"'), "that name is the baseline's"),
    (('base_url = "https://api.example.com/v1"', 'base_url = "api.example.com"'), "base_url must be an http(s) URL"),
    (
        ('api_key_env = "ARENA_TEST_KEY"', 'api_key_env = "ARENA_TEST_KEY"\nreasoning_effort = "max"'),
        "reasoning_effort must be one of",
    ),
    (
        (
            'api_key_env = "ARENA_TEST_KEY"',
            'api_key_env = "ARENA_TEST_KEY"\nprice_in_per_mtok = -1\nprice_out_per_mtok = 1',
        ),
        "price_in_per_mtok must be >= 0",
    ),
    (
        ('api_key_env = "ARENA_TEST_KEY"', 'api_key_env = "ARENA_TEST_KEY"\nprice_in_per_mtok = 1'),
        "give both price_in_per_mtok and price_out_per_mtok",
    ),
    (("seed = 3", "seed = 3\n[tools]\nfee_bps = -2"), "[tools].fee_bps must be >= 0"),
    (("seed = 3", "seed = 3\n[tools]\nimpact_bps = -1"), "[tools].impact_bps must be >= 0"),
    (("seed = 3", "seed = 3\n[broker]\nfetch_wait_ms = 5000"), "[broker].fetch_wait_ms must be 1-1000"),
    (("seed = 3", "seed = 3\n[web]\nport = 70000"), "[web].port must be 0-65535"),
    (("seed = 3", 'seed = 3\n[web]\nhost = "0.0.0.0"'), "[web]: unknown key 'host'"),
    (("seed = 3", "seed = [3"), "not valid TOML"),
]


@pytest.mark.parametrize("change,message", MISTAKES, ids=[m[1][:50] for m in MISTAKES])
def test_each_mistake_is_named(tmp_path, change, message):
    old, new = change
    assert old in VALID
    with pytest.raises(up.ConfigError) as err:
        load(tmp_path, VALID.replace(old, new, 1))
    assert message in str(err.value), str(err.value)


def test_no_agents_and_no_chat_nodes(tmp_path):
    with pytest.raises(up.ConfigError) as err:
        load(tmp_path, '[market]\nsource = "live"\n')
    assert "no chat nodes" in str(err.value) and "no agents" in str(err.value)


def test_every_problem_is_listed_at_once(tmp_path):
    text = VALID.replace('chat_node = "gpt"', 'chat_node = "claude"').replace(
        'strategy = "momentum"', 'strategy = "yolo"'
    )
    with pytest.raises(up.ConfigError) as err:
        load(tmp_path, text, env={})
    assert len(err.value.problems) == 3, err.value  # unknown chat node, unknown strategy, key variable not set
    assert str(err.value).startswith(f"{tmp_path / 'arena.toml'}: 3 problems:")


def test_a_bad_file_starts_nothing(tmp_path):
    path = tmp_path / "arena.toml"
    path.write_text(VALID.replace('chat_node = "gpt"', 'chat_node = "claude"'))
    out = run_script("-m", "arena.cli", "up", str(path), "--run-dir", str(tmp_path / "run"))
    assert out.returncode == 2 and "unknown chat node 'claude'" in out.stderr, out
    assert not (tmp_path / "run").exists()


# -- a whole arena from examples/offline.toml ---------------------------------------------------------


def _procs_with_marker(marker: str) -> list[int]:
    from test_demo import _procs_with_marker as find

    return find(marker)


def _up_offline(marker: str, *args: str) -> subprocess.Popen:
    """`arena up examples/offline.toml` in a session of its own; every process it starts carries `marker`."""
    return subprocess.Popen(
        [sys.executable, "-m", "arena.cli", "up", str(EXAMPLES / "offline.toml"), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", marker: "1"},
        start_new_session=True,
    )


def _trades_by_agent(ledger: Path) -> dict[str, int]:
    if not ledger.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=1) as db:
            return dict(db.execute("SELECT agent, count(*) FROM trades GROUP BY agent").fetchall())
    except sqlite3.Error:  # not created yet, or busy for a moment
        return {}


@pytest.mark.processes
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_ctrl_c_while_the_arena_comes_up_stops_it_quietly_and_leaves_no_part(tmp_path, sig):
    """A stop while the broker is still starting: exit 0, no traceback, and the broker stopped with it."""
    marker = f"ARENA_TEST_{uuid.uuid4().hex}"
    proc = _up_offline(marker, "--run-dir", str(tmp_path / "run"))
    lines = []
    try:
        for line in proc.stdout:  # the line before the broker starts
            lines.append(line)
            if "run folder:" in line:
                break
        while len(_procs_with_marker(marker)) < 2:  # the broker process is there: stop in the middle of it
            time.sleep(0.01)
        proc.send_signal(sig)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        output = "".join(lines) + proc.stdout.read()
        left = _procs_with_marker(marker)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
    assert "Traceback" not in output and "stopping ..." in output and "agents online" not in output, output
    assert not left, "the broker outlived the stop"


def _broker_of(pid: int) -> int:
    """The embedded broker among the children of `pid`."""
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        if b"--storage-engine" in Path(f"/proc/{child}/cmdline").read_bytes():
            return int(child)
    raise AssertionError(f"no broker among the children of {pid}")


def _up(marker: str, *args: str) -> Proc:
    """`arena up examples/offline.toml` headless, in a session of its own; every process carries `marker`."""
    return Proc("-m", "arena.cli", "up", str(EXAMPLES / "offline.toml"), "--no-dashboard", *args,
                env={marker: "1"}, new_session=True)  # fmt: skip


def _nothing_left(marker: str, within: float = 15.0) -> list[int]:
    deadline = time.monotonic() + within
    while (left := _procs_with_marker(marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return left


class OfflineUp:
    """`arena up examples/offline.toml` (headless: its stdout is a pipe) in a session of its own."""

    def __init__(self, tmp: Path):
        self.marker = f"ARENA_TEST_{uuid.uuid4().hex}"
        self.run_dir, self.export = tmp / "run", tmp / "board.json"
        self.proc = Proc("-m", "arena.cli", "up", str(EXAMPLES / "offline.toml"), "--run-dir", str(self.run_dir),
                         "--export", str(self.export), env={self.marker: "1"}, new_session=True)  # fmt: skip

    def trades(self) -> dict[str, int]:
        return _trades_by_agent(self.run_dir / "ledger.db")


@pytest.fixture(scope="module")
def offline_up(tmp_path_factory):
    """One whole offline arena for the two tests below, in file order: its broker is killed (and started
    again), then every agent has traded and Ctrl-C stops it. Starting an arena is most of their time."""
    arena = OfflineUp(tmp_path_factory.mktemp("up"))
    try:
        yield arena
    finally:
        arena.proc.stop(signal.SIGKILL)
        _nothing_left(arena.marker, within=0)


@pytest.mark.timeout(400)
def test_a_broker_that_dies_is_started_again_and_the_arena_trades_on(offline_up):
    """`arena up` watches the broker it owns: killed, a fresh one starts on the same address, every part
    restarts in place on it, and the agents trade again (Ctrl-C then stops everything: the next test)."""
    up_ = offline_up.proc
    up_.wait_for("READY arena: 3 agents trading", 240)  # every part READY, its broker watch running
    before = sum(offline_up.trades().values())
    os.kill(_broker_of(up_.pid), signal.SIGKILL)
    up_.wait_for("broker ready again on", 30)
    deadline = time.monotonic() + 240
    while sum(offline_up.trades().values()) <= before:
        assert up_.proc.poll() is None, up_.output
        assert time.monotonic() < deadline, f"no trade after the broker restart:\n{up_.output}"
        time.sleep(1)
    assert "exited (code -9): starting a fresh one on the same address" in up_.output, up_.output
    assert "Traceback" not in up_.output and "aiokafka" not in up_.output, up_.output


@pytest.mark.timeout(600)
def test_up_runs_the_offline_example_every_agent_trades_and_ctrl_c_stops_every_part(offline_up):
    proc, marker, run_dir = offline_up.proc, offline_up.marker, offline_up.run_dir
    agents = [a.name for a in up.load(EXAMPLES / "offline.toml").agents]
    deadline = time.monotonic() + 400
    while set(trades := offline_up.trades()) < set(agents):
        assert proc.proc.poll() is None, proc.output
        assert time.monotonic() < deadline, f"not every agent traded: {trades}"
        time.sleep(1)
    assert (
        len(_procs_with_marker(marker)) >= 2 + 2 + 3 + len(agents) + 1
    )  # up, broker, sim, policy, connector, chats, routers, tools
    assert proc.stop(timeout=120) == 0, proc.output
    output = proc.output
    left = _nothing_left(marker, within=0)
    assert "agents online: alice, bob, carol" in output and "stopping" in output, output
    assert "READY arena: 3 agents trading" in output, output  # headless: stdout is not a terminal
    assert "web page: http://" in output, output  # the example has a [web] table
    assert "Traceback" not in output and "aiokafka" not in output, output
    assert not left, "a part outlived Ctrl-C"
    rows = {a["name"]: a for a in json.loads(offline_up.export.read_text())["agents"]}
    assert all(rows[name]["trades"] >= 1 for name in agents), rows
    assert json.loads((run_dir / "arena.json").read_text())["source"].endswith("offline.toml")


@pytest.mark.timeout(300)
def test_kill_9_of_up_ends_every_child(tmp_path):
    """However `arena up` ends, no part outlives it: the broker by PR_SET_PDEATHSIG, the others by their
    lifeline (arena/lifeline.py)."""
    marker = f"ARENA_TEST_{uuid.uuid4().hex}"
    up_ = _up(marker, "--run-dir", str(tmp_path / "run"))
    try:
        up_.wait_for("agents online", 240)
        assert len(_procs_with_marker(marker)) >= 2 + 2 + 3 + 3  # up, broker, sim, policy, connector, chats, routers
        up_.stop(signal.SIGKILL)
    finally:
        up_.stop(signal.SIGKILL)
        left = _nothing_left(marker)
    assert not left, f"{len(left)} process(es) outlived kill -9 of arena up"


# -- the supervisor's sequence on arena.service (no broker: what happens around `launch`) -------------


class _Launching(service.Service):
    """A supervisor-shaped part without a broker, recording what the runner does with it."""

    what = "the test arena"
    watches_broker = False

    def __init__(self, launch):
        super().__init__(None, 5.0)
        self._launch = launch
        self.events: list[str] = []

    def say(self, msg: str) -> None:
        self.events.append(msg)

    def connecting(self) -> None:
        return None

    async def start(self) -> None:
        self.events.append("start")

    async def launch(self) -> None:
        self.events.append("launch")
        try:
            await self._launch(self)
        except asyncio.CancelledError:
            self.events.append("launch cancelled")
            raise

    def ready(self, elapsed_s: float) -> str:
        return "READY"

    def launch_failed(self, exc: Exception) -> None:
        self.events.append(f"failed: {exc}")

    def stopping(self) -> str:
        return "stopping"

    async def stop(self) -> None:
        self.events.append("stop")

    async def finish(self, code: int, *, served: bool) -> int:
        self.events.append(f"finish {code}{' served' if served else ''}")
        return code


def _run(part: _Launching) -> int:
    async def main() -> int:
        return await asyncio.wait_for(service.run(part), 10)

    return asyncio.run(main())


def test_a_stop_while_a_supervisor_launches_its_parts_cancels_the_launch_and_stops_them():
    async def stopped_midway(part):  # Ctrl-C while the parts come up
        asyncio.get_running_loop().call_soon(part.stop_requested.set)
        await asyncio.Event().wait()

    part = _Launching(stopped_midway)
    assert _run(part) == 0
    assert part.events == ["start", "launch", "launch cancelled", "stopping", "stop", "finish 0"]


def test_a_part_that_fails_to_come_up_stops_what_was_started_and_exits_1():
    async def fails(part):
        raise RuntimeError("chat quant exited with code 1")

    part = _Launching(fails)
    assert _run(part) == 1
    assert part.events == ["start", "launch", "failed: chat quant exited with code 1", "stopping", "stop", "finish 1"]


def test_once_launched_a_supervisor_says_ready_and_serves_until_stopped():
    async def launched(part):
        asyncio.get_running_loop().call_later(0.05, part.stop_requested.set)

    part = _Launching(launched)
    assert _run(part) == 0
    assert part.events == ["start", "launch", "READY", "stopping", "stop", "finish 0 served"]
