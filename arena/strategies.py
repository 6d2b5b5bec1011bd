"""The strategies' risk limits (STRATEGY_LIMITS), as data. Their prompt prose is plain text at the top of
deploy_router_node.py (STRATEGIES, edit freely). The router writes the limits into the agent's prompt
and the desk enforces them, so what a model is told and what it can do never disagree. Adding a
strategy is its STRATEGIES entry (and, for limits of its own, its entry here): the router's --strategy
choices, `arena up`'s check of a file's strategies and the demo's rotation read the script's names
(builtin_strategies); the dashboard's limits line and the desk read these limits.

A strategy's prompt is its prose followed by `risk_rules(name)`, generated from STRATEGY_LIMITS below
(then deploy_router_node.py's house rules). The tools process applies
the limits of the strategy the calling agent's router names in the run's deps; a rule a strategy leaves
unset, and every rule for an agent without a known strategy, falls back to the arena-wide defaults
(tools_and_dashboard.py --max-order-pct etc.; none by default).

All percentages are of the account's total value marked at the best bids, as get_portfolio shows it.
Position, invested and cash limits are checked on the account as it would be after the order, and
only for buys: a sell never makes them worse, and an agent must always be able to get out.
"""

from __future__ import annotations

import ast
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path


@dataclass(frozen=True)
class Limits:
    """Hard limits on one agent's orders; None: no limit."""

    max_order_pct: float | None = None  # one buy's notional, % of total value before it
    max_position_pct: float | None = None  # one product's value after a buy, % of total value after it
    max_invested_pct: float | None = None  # all positions' value after a buy, % of total value after it
    min_cash_pct: float | None = None  # cash after a buy, % of total value after it
    max_orders_per_turn: int | None = None  # filled orders (buys and sells) in one run of the agent
    cooldown_s: float | None = None  # seconds from one fill of the agent to its next order

    def __post_init__(self) -> None:
        for name in ("max_order_pct", "max_position_pct", "max_invested_pct"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and 0 < v <= 100):
                raise ValueError(f"{name} must be more than 0 and at most 100, not {v}")
        if self.min_cash_pct is not None and not (math.isfinite(self.min_cash_pct) and 0 <= self.min_cash_pct < 100):
            raise ValueError(f"min_cash_pct must be at least 0 and below 100, not {self.min_cash_pct}")
        if self.max_orders_per_turn is not None and (
            isinstance(self.max_orders_per_turn, bool)
            or not isinstance(self.max_orders_per_turn, int)
            or self.max_orders_per_turn < 1
        ):
            raise ValueError(
                f"max_orders_per_turn must be a whole number of at least 1, not {self.max_orders_per_turn}"
            )
        if self.cooldown_s is not None and not (math.isfinite(self.cooldown_s) and self.cooldown_s >= 0):
            raise ValueError(f"cooldown_s must be 0 or more, not {self.cooldown_s}")

    def over(self, defaults: Limits) -> Limits:
        """These limits, with `defaults` for every rule left unset."""
        return replace(
            self, **{f.name: getattr(defaults, f.name) for f in fields(self) if getattr(self, f.name) is None}
        )

    def sentences(self) -> list[str]:
        """The rules as the model reads them, in the order the desk checks them."""
        out = []
        if self.max_order_pct is not None:
            out.append(f"One buy order is at most {self.max_order_pct:g}% of total account value.")
        if self.max_position_pct is not None:
            out.append(f"At most {self.max_position_pct:g}% of total value in any one product.")
        if self.max_invested_pct is not None:
            out.append(f"At most {self.max_invested_pct:g}% of total value invested overall.")
        if self.min_cash_pct is not None:
            out.append(f"Always keep at least {self.min_cash_pct:g}% of total value in cash.")
        if self.max_orders_per_turn is not None:
            out.append(
                f"At most {self.max_orders_per_turn} filled order{'s' if self.max_orders_per_turn > 1 else ''} per turn."
            )
        if self.cooldown_s:
            out.append(f"At least {self.cooldown_s:g} seconds between one fill and your next order.")
        return out

    def short(self) -> str:
        """The rules in a few characters each, for a status line: "buy ≤10% · position ≤25% · cash ≥40%"."""
        parts = [
            (self.max_order_pct, "buy ≤{:g}%"),
            (self.max_position_pct, "position ≤{:g}%"),
            (self.max_invested_pct, "invested ≤{:g}%"),
            (self.min_cash_pct, "cash ≥{:g}%"),
            (self.max_orders_per_turn, "≤{:g} orders/turn"),
            (self.cooldown_s or None, "cooldown {:g}s"),
        ]
        return " · ".join(fmt.format(v) for v, fmt in parts if v is not None)

    def as_dict(self) -> dict:
        return asdict(self)


ROUTER_SCRIPT = Path(__file__).resolve().parent.parent / "deploy_router_node.py"


def builtin_strategies(script: Path | None = None) -> list[str]:
    """The strategy names deploy_router_node.py defines, in its order (read from its STRATEGIES, without
    importing it: the package never imports a script). Without the script (an installed wheel), the
    strategies with limits here."""
    script = script or ROUTER_SCRIPT
    try:
        tree = ast.parse(script.read_text())
    except OSError:
        return list(STRATEGY_LIMITS)
    for node in tree.body:
        target = (
            node.target
            if isinstance(node, ast.AnnAssign)
            else (node.targets[0] if isinstance(node, ast.Assign) else None)
        )
        if getattr(target, "id", None) == "STRATEGIES" and isinstance(node.value, ast.Dict):
            return [key.value for key in node.value.keys]  # type: ignore[union-attr]
    raise RuntimeError(f"{script} defines no STRATEGIES")


STRATEGY_LIMITS: dict[str, Limits] = {
    "default": Limits(
        max_order_pct=10, max_position_pct=25, max_invested_pct=60, min_cash_pct=40, max_orders_per_turn=4
    ),
    "momentum": Limits(
        max_order_pct=15, max_position_pct=30, max_invested_pct=75, min_cash_pct=25, max_orders_per_turn=4
    ),
    "brainrot": Limits(
        max_order_pct=10, max_position_pct=30, max_invested_pct=50, min_cash_pct=50, max_orders_per_turn=4
    ),
    "scalper": Limits(
        max_order_pct=5, max_position_pct=15, max_invested_pct=30, min_cash_pct=70, max_orders_per_turn=4
    ),
}


def limits_line(defaults: Limits, limits: dict[str, Limits] = STRATEGY_LIMITS) -> str:
    """The limits in force on one line: each strategy's own, and the arena-wide ones for the rest."""
    own = " | ".join(f"{name}: {lim.over(defaults).short() or 'none'}" for name, lim in limits.items())
    return f"{own} | any other strategy: {defaults.short() or 'none'}"


def risk_rules(strategy: str, limits: dict[str, Limits] = STRATEGY_LIMITS) -> str:
    """The prompt's hard-limits paragraph for `strategy` ("" if it has no limits of its own)."""
    rules = limits[strategy].sentences() if strategy in limits else []
    if not rules:
        return ""
    return (
        "Risk rules (hard limits: the desk rejects any order that breaks one; get_portfolio shows them):\n"
        + "\n".join(f"- {r}" for r in rules)
    )


def strategy_prompt(strategy: str, prose: str) -> str:
    """A strategy's prompt: its prose, then the risk rules generated from its limits."""
    rules = risk_rules(strategy)
    return prose.rstrip() + ("\n" + rules if rules else "")
