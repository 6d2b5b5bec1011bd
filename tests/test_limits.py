"""Risk limits the model cannot override: each rule at its boundary (one unit under passes, one unit over
is refused naming the rule and the numbers), the quantities the refusals suggest, which limits apply to
whom, and the prompt sentences generated from the same data the desk enforces."""

from __future__ import annotations

import re
from decimal import ROUND_FLOOR, Decimal
from types import SimpleNamespace

import pytest

from arena.desk import Desk
from arena.ledger import Ledger
from arena.strategies import STRATEGY_LIMITS, Limits, risk_rules, strategy_prompt
from tests.support.desks import book, buy


def refused(r: dict, rule: str) -> str:
    assert r["status"] == "rejected" and f"limit '{rule}' (t strategy)" in r["error"], r
    return r["error"]


def test_largest_order(make):
    d = make(max_order_pct=10)  # $10,000 of $100,000 = 0.2 BTC
    assert buy(d, "BTC-USD", 0.19999999)["status"] == "filled"
    why = refused(buy(d, "BTC-USD", 0.20000001), "largest order")
    assert "this buy is $10,000.00, 10.00% of your total value $100,000.00; the most is 10% ($10,000.00)" in why
    assert "the most you can buy now is 0.2 BTC" in why
    assert buy(d, "BTC-USD", 0.2)["status"] == "filled"  # exactly at the limit
    assert (
        d.execute_trade("ann", "BTC-USD", "sell", 0.39999999, strategy="t")["status"] == "filled"
    )  # sells: not limited


def test_largest_position(make):
    d = make(max_position_pct=25)  # $25,000 of BTC = 0.5 BTC
    assert buy(d, "BTC-USD", 0.49999999)["status"] == "filled"
    why = refused(buy(d, "BTC-USD", 0.00000002), "largest position")
    assert "after this buy BTC-USD would be 25.00% of your total value; the most is 25%" in why
    assert "the most you can buy now is 0.00000001 BTC" in why
    assert buy(d, "FARTCOIN-USD", 25_000)["status"] == "filled"  # another product has its own room


def test_most_invested(make):
    d = make(max_invested_pct=30)
    assert buy(d, "BTC-USD", 0.2)["status"] == "filled"  # $10,000
    assert buy(d, "FARTCOIN-USD", 19_999.9)["status"] == "filled"  # $29,999.90 invested
    why = refused(buy(d, "FARTCOIN-USD", 0.2), "most invested")
    assert "after this buy 30.00% of your total value would be invested; the most is 30%" in why
    assert "the most you can buy now is 0.1 FARTCOIN" in why


def test_least_cash(make):
    d = make(min_cash_pct=70)  # cash may fall to $70,000
    assert buy(d, "BTC-USD", 0.59999999)["status"] == "filled"  # cash $70,000.0005
    why = refused(buy(d, "BTC-USD", 0.00000002), "least cash")
    assert "after this buy cash would be 70.00% of your total value; the least is 70%" in why
    assert "the most you can buy now is 0.00000001 BTC" in why


def test_orders_per_turn(make):
    d = make(max_orders_per_turn=2)
    assert buy(d, "FARTCOIN-USD", 10, turn="run1")["status"] == "filled"
    assert buy(d, "FARTCOIN-USD", 10**9, turn="run1")["status"] == "rejected"  # refused orders do not count
    assert (
        d.execute_trade("ann", "FARTCOIN-USD", "sell", 5, strategy="t", turn="run1")["status"] == "filled"
    )  # sells do
    why = refused(buy(d, "FARTCOIN-USD", 10, turn="run1"), "orders per turn")
    assert "2 orders already filled this turn; the most is 2" in why
    assert buy(d, "FARTCOIN-USD", 10, turn="run2")["status"] == "filled"  # a new turn
    assert (
        d.execute_trade("bob", "FARTCOIN-USD", "buy", 10, strategy="t", turn="run1")["status"] == "filled"
    )  # per agent


def test_cooldown(make, monkeypatch):
    import arena.desk

    clock = SimpleNamespace(now=1_000.0)
    monkeypatch.setattr(arena.desk, "time", SimpleNamespace(time=lambda: clock.now))
    d = make(cooldown_s=30)
    assert buy(d, "FARTCOIN-USD", 10)["status"] == "filled"
    clock.now += 29.9
    why = refused(d.execute_trade("ann", "FARTCOIN-USD", "sell", 10, strategy="t"), "cooldown")
    assert "your last order filled 29.9s ago; the least between orders is 30s (another 0.1s)" in why
    clock.now += 0.1
    assert buy(d, "FARTCOIN-USD", 10)["status"] == "filled"


@pytest.mark.parametrize(
    "rule,limits",
    [
        ("largest order", {"max_order_pct": 7}),
        ("largest position", {"max_position_pct": 12}),
        ("most invested", {"max_invested_pct": 18}),
        ("least cash", {"min_cash_pct": 81}),
    ],
)
def test_the_suggested_quantity_is_exactly_the_most_that_passes(make, rule, limits):
    """With a spread and a fee: the quantity a refusal suggests fills, one increment more is refused."""
    market = book(btc=(50_000.0, 50_010.0), fart=(1.19, 1.21))
    d = make(fee_bps=10, snapshot=market, **limits)
    assert buy(d, "FARTCOIN-USD", 3_000)["status"] == "filled"  # something invested already
    why = refused(buy(d, "BTC-USD", 1), rule)
    most = float(re.search(r"the most you can buy now is (\S+) BTC", why)[1])
    assert most > 0
    over = make(fee_bps=10, snapshot=market, **limits)
    assert buy(over, "FARTCOIN-USD", 3_000)["status"] == "filled"
    refused(buy(over, "BTC-USD", round(most + 1e-8, 8)), rule)
    r = buy(d, "BTC-USD", most)
    assert r["status"] == "filled", (most, r)


@pytest.mark.parametrize(
    "rule,limits,bound",
    [
        # x units of BTC bought at ask a with fee f, marked at bid b: the account is then worth V - x(a(1+f) - b)
        (
            "largest position",
            {"max_position_pct": 12},
            lambda V, C, c, b: Decimal("0.12") * V / (b + Decimal("0.12") * (c - b)),
        ),
        (
            "most invested",
            {"max_invested_pct": 18},
            lambda V, C, c, b: Decimal("0.18") * V / (b + Decimal("0.18") * (c - b)),
        ),
        (
            "least cash",
            {"min_cash_pct": 81},
            lambda V, C, c, b: (C - Decimal("0.81") * V) / (c - Decimal("0.81") * (c - b)),
        ),
    ],
)
def test_exposure_rules_judge_the_account_as_it_would_be_after_the_buy(make, rule, limits, bound):
    V = C = Decimal(100_000)
    b, c = Decimal(50_000), Decimal(50_010) * Decimal("1.001")
    most = (bound(V, C, c, b) / Decimal("1e-8")).to_integral_value(rounding=ROUND_FLOOR) * Decimal("1e-8")
    market = book(btc=(50_000.0, 50_010.0))
    assert buy(make(fee_bps=10, snapshot=market, **limits), "BTC-USD", float(most))["status"] == "filled"
    refused(buy(make(fee_bps=10, snapshot=market, **limits), "BTC-USD", float(most + Decimal("1e-8"))), rule)


def test_which_limits_apply(make):
    arena = Limits(max_order_pct=50, min_cash_pct=10, cooldown_s=0)
    d = make(arena=arena, max_order_pct=5)
    assert d.limits_for("t") == ("t", Limits(max_order_pct=5, min_cash_pct=10, cooldown_s=0))  # unset rules: arena-wide
    for unknown in (None, "nope", 42, ["t"]):
        assert d.limits_for(unknown) == (None, arena)
    assert d.execute_trade("ann", "BTC-USD", "buy", 0.5)["status"] == "filled"  # no strategy: 25% < 50%
    r = d.execute_trade("ann", "BTC-USD", "buy", 1.1, strategy="nope")
    assert (
        r["status"] == "rejected"
        and "limit 'largest order': this buy" in r["error"]
        and "the most is 50%" in r["error"]
    )
    assert Desk(Ledger(":memory:")).limits_for("scalper") == (
        "scalper",
        STRATEGY_LIMITS["scalper"],
    )  # the built-in ones


def test_get_portfolio_shows_the_limits_in_force(make):
    d = make(arena=Limits(cooldown_s=5), max_order_pct=5, max_orders_per_turn=3)
    shown = d.portfolio("ann", "t")["limits"]
    assert shown == {
        "strategy": "t",
        "max_order_pct": 5,
        "max_orders_per_turn": 3,
        "cooldown_s": 5,
        "rules": [
            "One buy order is at most 5% of total account value.",
            "At most 3 filled orders per turn.",
            "At least 5 seconds between one fill and your next order.",
        ],
    }
    assert d.portfolio("ann")["limits"] == {
        "strategy": None,
        "cooldown_s": 5,
        "rules": ["At least 5 seconds between one fill and your next order."],
    }


def test_every_strategy_prompt_states_exactly_the_limits_the_desk_enforces():
    from deploy_router_node import HOUSE_RULES, STRATEGIES

    for name, prose in STRATEGIES.items():
        assert name in STRATEGY_LIMITS, f"strategy {name} has no limits in arena/strategies.py"
        assert "Risk rules" not in prose and "hard limits" not in prose.lower().replace("the hard limits\nbelow", ""), (
            name
        )
        prompt = strategy_prompt(name, prose) + HOUSE_RULES
        rules = risk_rules(name)
        assert prompt.count("Risk rules (hard limits") == 1 and rules in prompt
        lim = STRATEGY_LIMITS[name]
        stated = [float(x) for x in re.findall(r"(\d+(?:\.\d+)?)%", rules)]
        assert stated == [
            v
            for v in (lim.max_order_pct, lim.max_position_pct, lim.max_invested_pct, lim.min_cash_pct)
            if v is not None
        ]
        shown = Desk(Ledger(":memory:")).portfolio("ann", name)["limits"]["rules"]
        assert rules.splitlines()[1:] == [f"- {r}" for r in shown]  # the prompt and get_portfolio say the same


@pytest.mark.parametrize(
    "bad",
    [
        {"max_order_pct": 0},
        {"max_position_pct": 101},
        {"max_invested_pct": float("nan")},
        {"min_cash_pct": 100},
        {"max_orders_per_turn": 0},
        {"max_orders_per_turn": 1.5},
        {"cooldown_s": -1},
    ],
)
def test_nonsense_limits_are_refused(bad):
    with pytest.raises(ValueError):
        Limits(**bad)
