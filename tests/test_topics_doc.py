"""docs/TOPICS.md documents every topic and every field of its payload, exactly as the wire models are now."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

from arena import config, topics_doc
from arena.market import Candle, MarketSnapshot, Quote
from arena.portfolio import Fill, Rejection

DOC = Path(__file__).resolve().parent.parent / "docs" / "TOPICS.md"


def test_topics_md_is_generated_from_the_models():
    assert DOC.read_text() == topics_doc.render(), f"docs/TOPICS.md is out of date: run `{topics_doc.COMMAND}`"


def test_every_topic_in_config_is_documented():
    names = {getattr(config, n) for n in dir(config) if n.endswith("_TOPIC")}
    names |= {config.chat_request_topic("{chat_node}"), config.chat_reply_topic("{instance_id}")}
    names.add("arena.accounts")  # arena.accounts.ACCOUNTS_TOPIC, named in its own module
    assert names == {t.name for t in topics_doc.TOPICS}


def test_units_and_map_keys_name_real_fields():
    models = topics_doc.arena_models()
    for model, field in [*topics_doc.UNITS, *topics_doc.MAP_KEYS]:
        assert model in models and field in models[model].model_fields, (
            f"{model}.{field} in arena/topics_doc.py is no field"
        )


def _paths(value, prefix=""):
    """Field paths of a JSON value in the doc's notation, map keys replaced by the doc's `{name}`."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, f"{prefix}{k}.") if isinstance(v, (dict, list)) else [f"{prefix}{k}"]
            yield f"{prefix}{k}"
    elif isinstance(value, list):
        for v in value:
            yield from _paths(v, prefix.rstrip(".") + "[].")


def test_a_real_record_has_only_documented_fields():
    now = datetime.now(timezone.utc)
    snap = MarketSnapshot(
        seq=3,
        published_at=now,
        quotes={
            "BTC-USD": Quote(product_id="BTC-USD", price=95000.0, best_bid=94999.0, best_ask=95001.0, received_at=now)
        },
        candles={
            "BTC-USD": {"ONE_MINUTE": [Candle(start=1_700_000_040, open=1.0, high=2.0, low=0.5, close=1.5, volume=3.0)]}
        },
    )
    fill = Fill(
        trade_id="t1", agent="a", product_id="BTC-USD", side="buy", quantity=0.1, price=95001.0, executed_at=now
    )
    no = Rejection(
        trade_id="t2", agent="a", product_id="BTC-USD", side="buy", quantity=9.0, status="rejected", reason="x"
    )
    doc = DOC.read_text()
    for record, section, part in (
        (snap, "market_data.prices", ""),
        (fill, "arena.trades", "### `Fill`"),
        (no, "arena.trades", "### `Rejection`"),
    ):
        body = doc.split(f"## `{section}`", 1)[1].split("\n## ", 1)[0]
        if part:  # one model of the topic's union: its own table
            body = body.split(part, 1)[1].split("\n### ", 1)[0]
        documented = set(re.findall(r"^\| `([^`]+)` \|", body, re.MULTILINE))
        data = json.loads(record.model_dump_json())
        seen = {p.replace("BTC-USD", "{product_id}").replace("ONE_MINUTE", "{granularity}") for p in _paths(data)}
        seen = {p for p in seen if not p.endswith("}")}  # a map key is no field
        assert seen <= documented, f"{section}: undocumented {sorted(seen - documented)}"
        assert {p for p in documented if "[]" not in p and "{" not in p} <= seen, "every top-level field is written"
