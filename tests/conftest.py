"""Shared fixtures: a real embedded broker per test session."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from arena.broker import EmbeddedBroker, free_port  # noqa: E402
from arena.config import KafkaSettings  # noqa: E402
from tests.support.desks import make  # noqa: E402, F401  (a fixture: a desk with limits, for test_limits and test_desk_fills)


@pytest.fixture(scope="session")
def broker():
    """A real Tansu broker on a free port for the whole test session."""
    b = EmbeddedBroker("127.0.0.1", free_port()).start()
    asyncio.run(b.wait_ready())
    os.environ["KAFKA_BOOTSTRAP_SERVERS"] = b.bootstrap  # child processes inherit it
    yield b
    b.stop()


@pytest.fixture
def kafka(broker) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=broker.bootstrap)


# The slow lane: a test that starts a process (an arena script, a broker, a browser, uv) is marked
# `processes`, so `pytest -m "not processes"` is a fast lane of in-process logic; `pytest` runs both.
# A test is marked when it uses a broker fixture, carries the mark itself, or is listed below (modules
# this file marks without editing them: a test name, or "*" for every test of the module). The guard in
# pytest_runtest_protocol fails an unmarked test that starts a process, so the lane stays honest.
PROCESS_FIXTURES = {"broker", "kafka"}
PROCESS_TESTS: dict[str, set[str]] = {
    "test_chat.py": {"test_chat_node_without_a_key_for_openai_says_so"},
    "test_cli_reference.py": {"test_reference_matches_argparse"},
    "test_coinbase_sdk.py": {"*"},
    "test_compat.py": {
        "test_lazy_providers_keep_the_provider_sdks_out_of_an_agent_process",
        "test_canary_calfkit_nodes_still_imports_every_provider_without_the_workaround",
        "test_importing_arena_first_silences_calfkits_pydantic_graph_warnings",
    },
    "test_demo.py": {"*"},
    "test_demo_lifetime.py": {"*"},
    "test_recording.py": {
        "test_cut_by_seconds_and_by_time",
        "test_cut_errors_name_the_problem",
        "test_join_follows_at_the_usual_spacing_and_keeps_candles_aligned",
    },
    "test_requirements.py": {"*"},
    "test_service_restart.py": {"*"},
    "test_startup.py": {
        "test_a_signal_before_the_event_loop_ends_a_part_quietly",
        "test_ctrl_c_while_a_script_still_imports_ends_it_quietly",
    },
    "test_tools.py": {"test_tools_are_advertised_only_once_a_call_cannot_be_missed"},
    "test_tokens.py": {"test_the_web_page_shows_tokens_dollars_and_pnl_per_dollar"},
    "test_tournament.py": {
        "test_two_runs_of_deterministic_policies_are_identical_and_their_intervals_contain_them",
        "test_ctrl_c_during_a_tournament_exits_0_and_leaves_no_process_behind",
    },
    "test_up.py": {
        "test_a_bad_file_starts_nothing",
        "test_up_runs_the_offline_example_every_agent_trades_and_ctrl_c_stops_every_part",
        "test_a_broker_that_dies_is_started_again_and_the_arena_trades_on",
        "test_kill_9_of_up_ends_every_child",
    },
    "test_web.py": {"test_report_html_opens_offline_in_chromium", "test_live_page_in_chromium"},
}
# Programs a library runs on its own behalf, not the test: platform.processor() runs `uname -p`.
INCIDENTAL = {"uname"}


def pytest_configure(config):
    config.addinivalue_line("markers", "processes: starts a broker or another process (the slow lane)")


def starts_processes(item) -> bool:
    listed = PROCESS_TESTS.get(Path(str(item.fspath)).name, set())
    return (bool(PROCESS_FIXTURES & set(getattr(item, "fixturenames", ()))) or "*" in listed
            or getattr(item, "originalname", item.name) in listed)  # fmt: skip


def pytest_collection_modifyitems(config, items):
    for item in items:
        if starts_processes(item):
            item.add_marker(pytest.mark.processes)


_running: list = []  # the test now running, when it is not marked `processes`
_popen_init = subprocess.Popen.__init__


def _guarded_popen_init(self, args, *rest, **kw):
    program = Path(str(args if isinstance(args, (str, bytes, os.PathLike)) else args[0])).name
    if _running and program not in INCIDENTAL:
        pytest.fail(f"{_running[0].nodeid} starts a process ({program}) but is not marked `processes`: "
                    "mark it (pytest.mark.processes, or PROCESS_TESTS in tests/conftest.py)", pytrace=False)  # fmt: skip
    _popen_init(self, args, *rest, **kw)


subprocess.Popen.__init__ = _guarded_popen_init


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if item.get_closest_marker("processes") is None:
        _running.append(item)
    try:
        yield
    finally:
        _running.clear()
