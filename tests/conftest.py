"""Shared fixtures: a real embedded broker per test session."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from arena.broker import EmbeddedBroker, free_port  # noqa: E402
from arena.config import KafkaSettings  # noqa: E402


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


# Tests that need a real broker (or start the arena's processes) are marked `processes`, so
# `pytest -m "not processes"` is a fast lane of pure logic; `pytest` runs both.
PROCESS_FIXTURES = {"broker", "kafka"}


def pytest_configure(config):
    config.addinivalue_line("markers", "processes: starts a broker or the arena's processes (slow lane)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.processes)
