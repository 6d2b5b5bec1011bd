"""The shared Kafka flags: --fetch-wait-ms (env ARENA_FETCH_WAIT_MS) reaches every consumer the process makes."""

from __future__ import annotations

import argparse

import pytest

from arena import config
from arena import kafka as k
from arena.demo import parse_args as demo_args


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    config.add_kafka_args(p)
    return p


@pytest.fixture(autouse=True)
def restore_tuning():
    before = dict(config.CONSUMER_TUNING)
    yield
    config.CONSUMER_TUNING.clear()
    config.CONSUMER_TUNING.update(before)


async def test_fetch_wait_flag_reaches_every_consumer_made_afterwards(monkeypatch):
    monkeypatch.delenv("ARENA_FETCH_WAIT_MS", raising=False)
    assert parser().parse_args([]).fetch_wait_ms == config.DEFAULT_FETCH_WAIT_MS == 10
    settings = config.kafka_settings(parser().parse_args(["--fetch-wait-ms", "40"]))
    assert config.CONSUMER_TUNING["fetch_max_wait_ms"] == 40  # calfkit's subscribers take it from here
    assert k.consumer(settings, "t", group_id="g")._fetch_max_wait_ms == 40


def test_fetch_wait_from_the_environment_and_bad_values(monkeypatch, capsys):
    monkeypatch.setenv("ARENA_FETCH_WAIT_MS", "25")
    assert parser().parse_args([]).fetch_wait_ms == 25
    assert parser().parse_args(["--fetch-wait-ms", "7"]).fetch_wait_ms == 7  # the flag wins
    for bad in ("0", "1001", "abc", "1.5"):
        with pytest.raises(SystemExit):
            parser().parse_args(["--fetch-wait-ms", bad])
        assert "--fetch-wait-ms" in capsys.readouterr().err
    monkeypatch.setenv("ARENA_FETCH_WAIT_MS", "nope")
    with pytest.raises(SystemExit):
        parser().parse_args([])
    assert "not a whole number" in capsys.readouterr().err


def test_demo_scales_the_fetch_wait_with_the_agents(monkeypatch, capsys):
    monkeypatch.delenv("ARENA_FETCH_WAIT_MS", raising=False)
    assert [demo_args(["--agents", str(n)]).fetch_wait_ms for n in (1, 3, 10, 50)] == [10, 12, 40, 100]
    assert demo_args(["--agents", "50", "--fetch-wait-ms", "10"]).fetch_wait_ms == 10
    monkeypatch.setenv("ARENA_FETCH_WAIT_MS", "33")
    assert demo_args(["--agents", "50"]).fetch_wait_ms == 33
    monkeypatch.setenv("ARENA_FETCH_WAIT_MS", "0")
    with pytest.raises(SystemExit):
        demo_args([])
    assert "ARENA_FETCH_WAIT_MS" in capsys.readouterr().err


def test_kafka_settings_never_show_the_sasl_password():
    s = config.KafkaSettings(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username="arena",
        sasl_password="hunter2-secret",
    )
    for text in (repr(s), str(s), f"{s}", f"{s!r}", repr([s]), repr({"kafka": s})):
        assert "hunter2" not in text and "sasl_password=<hidden>" in text and "sasl_username='arena'" in text, text
    assert s.aiokafka_kwargs()["sasl_plain_password"] == "hunter2-secret"  # still used, only not shown
    assert "sasl_password=None" in repr(config.KafkaSettings())
