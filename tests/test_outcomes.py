"""Fills and rejections are two types: a rejection carries no price, money folds only fills, and the
trades topic and the ledger read each back as its own type, including rows written before the split."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone

import pytest
from pydantic import ValidationError

from arena import kafka as k
from arena.ledger import Ledger
from arena.portfolio import Account, Fill, Rejection, TradeOutcome, parse_outcome, replay
from arena.report import read_ledger

AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
# Rows exactly as the single Trade model of earlier versions wrote them to the ledger and the trades topic.
OLD_FILL = (
    '{"trade_id":"alice|run1|3|call_1","agent":"alice","product_id":"BTC-USD","side":"buy","quantity":0.5,'
    '"price":95010.0,"fee":570.06,"top_price":95000.0,"top_size":0.25,"slippage":5.0,"status":"filled","reason":"",'
    '"quote_age_s":0.4,"tick_seq":7,"executed_at":"2026-01-02T03:04:05Z","latency_ms":3.2,'
    '"slippage_bps":1.0526315789473686}'
)
OLD_REJECTION = (
    '{"trade_id":"alice|run1|3|call_2","agent":"alice","product_id":"DOGE??","side":"sell","quantity":-5.0,'
    '"price":0.0,"fee":0.0,"top_price":null,"top_size":null,"slippage":0.0,"status":"rejected",'
    '"reason":"unknown product","quote_age_s":null,"tick_seq":null,"executed_at":"2026-01-02T03:04:05Z",'
    '"latency_ms":1.0,"slippage_bps":0.0}'
)


def fill() -> Fill:
    return Fill(trade_id="k1", agent="ann", product_id="BTC-USD", side="buy", quantity=0.5, price=100.0, executed_at=AT)


def rejection() -> Rejection:
    return Rejection(
        trade_id="k2", agent="ann", product_id="nope", side="buy", quantity=9.0, status="rejected", reason="no quote"
    )


def test_a_rejection_has_no_money_fields_and_moves_no_money():
    r = rejection()
    assert not {"price", "fee", "slippage", "top_price", "slippage_bps"} & set(json.loads(r.model_dump_json()))
    assert not hasattr(r, "price") and not hasattr(r, "notional")
    acct = Account(agent="ann")
    with pytest.raises(TypeError):
        acct.apply(r)  # money folds fills only
    acct.fold(r)
    assert (acct.cash, acct.trades, acct.rejected) == (Account(agent="ann").cash, 0, 1)
    acct.fold(fill())
    assert (acct.trades, acct.rejected, acct.positions["BTC-USD"].quantity) == (1, 1, 0.5)


def test_a_fill_is_a_real_trade_and_a_rejection_what_was_asked():
    for change in ({"product_id": "doge"}, {"price": 0.0}, {"quantity": 0.0}, {"quantity": -1.0}):
        with pytest.raises(ValidationError):
            Fill(**{**fill().model_dump(exclude={"slippage_bps"}), **change})
    asked = Rejection(**{**rejection().model_dump(), "product_id": "'doge??'", "quantity": -5.0})
    assert asked.product_id == "'doge??'" and asked.quantity == -5.0


def test_each_outcome_round_trips_through_the_union_as_its_own_type():
    for outcome in (fill(), rejection()):
        raw = outcome.model_dump_json()
        back = parse_outcome(raw)
        assert type(back) is type(outcome) and back == outcome and back.model_dump_json() == raw
        assert k.decode(TradeOutcome, raw.encode(), "arena.trades") == outcome  # as every topic reader reads it
    no_status = {k: v for k, v in json.loads(fill().model_dump_json()).items() if k != "status"}
    assert isinstance(parse_outcome(json.dumps(no_status)), Fill)  # as before: no status is a fill
    for bad in ({**no_status, "status": "pending"}, {**no_status, "status": "rejected", "side": "hold"}):
        with pytest.raises(ValidationError):
            parse_outcome(json.dumps(bad))
    assert k.decode(TradeOutcome, b'{"status": "filled"}', "arena.trades") is None  # logged and skipped


def test_rows_written_before_the_split_load_as_the_right_types(tmp_path):
    old_fill, old_rejection = parse_outcome(OLD_FILL), parse_outcome(OLD_REJECTION)
    assert (
        isinstance(old_fill, Fill)
        and old_fill.price == 95010.0
        and old_fill.slippage_bps == pytest.approx(1.0526315789)
    )
    assert isinstance(old_rejection, Rejection) and old_rejection.reason == "unknown product"
    # The fields each type keeps are written as before: same names, same values.
    for new, old in ((old_fill, OLD_FILL), (old_rejection, OLD_REJECTION)):
        written, before = json.loads(new.model_dump_json()), json.loads(old)
        assert written == {k: before[k] for k in written}

    path = tmp_path / "old.db"
    Ledger(path).close()  # the schema; then rows as an earlier version wrote them
    db = sqlite3.connect(path)
    for key, status, row in (("c1", "filled", OLD_FILL), ("c2", "rejected", OLD_REJECTION)):
        db.execute(
            "INSERT INTO trades(call_key, agent, status, trade, result) VALUES (?, 'alice', ?, ?, '{}')",
            (key, status, row),
        )
    db.commit()
    db.close()
    with Ledger(path) as ledger:
        assert [type(t) for t in ledger.trades()] == [Fill, Rejection]
        assert isinstance(ledger.find("c2").outcome, Rejection)
        acct = ledger.account("alice")
        assert (acct.trades, acct.rejected, acct.positions["BTC-USD"].quantity) == (1, 1, 0.5)
    trades, names = read_ledger(path)
    assert [type(t) for t in trades] == [Fill, Rejection] and replay(trades)["alice"].rejected == 1
