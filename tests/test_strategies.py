"""A strategy is its prose in deploy_router_node.py's STRATEGIES (and its limits in arena/strategies.py):
register one and every part sees it — the router's --strategy choices and prompt, `arena up`'s check, the demo's rotation, the
desk's limits, the dashboard's limits line, the offline models' policy and the CLI reference."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from arena import strategies
from arena.strategies import Limits

NEW = "contrarian"
PROSE = """\
You are a contrarian trader managing a paper account in a trading competition.
Objective: profit from overreactions by mean reversion: buy what just fell hard, sell what just spiked."""
LIMITS = Limits(max_order_pct=7, max_position_pct=20, min_cash_pct=55, max_orders_per_turn=2)
REGISTER = f"from arena import strategies\nstrategies.STRATEGY_LIMITS[{NEW!r}] = strategies.{LIMITS!r}\n"


def with_strategy(dest) -> str:
    """A copy of deploy_router_node.py with the new strategy written into its STRATEGIES, as a user would."""
    from tests.cli_flags import ROOT

    source = (ROOT / "deploy_router_node.py").read_text()
    entry = "STRATEGIES: dict[str, str] = {\n"
    assert entry in source
    dest.write_text(source.replace(entry, f"{entry}    {NEW!r}: {PROSE!r},\n", 1))
    return str(dest)


@pytest.fixture
def registered(monkeypatch, tmp_path):
    import deploy_router_node

    monkeypatch.setattr(strategies, "ROUTER_SCRIPT", tmp_path / "deploy_router_node.py")
    with_strategy(strategies.ROUTER_SCRIPT)
    monkeypatch.setitem(deploy_router_node.STRATEGIES, NEW, PROSE)
    monkeypatch.setitem(strategies.STRATEGY_LIMITS, NEW, LIMITS)


def test_a_strategy_written_into_the_router_script_is_seen_by_every_part(registered, tmp_path):
    import deploy_router_node
    from arena import up
    from arena.demo import agent_plan
    from arena.desk import Desk
    from arena.ledger import Ledger
    from arena.sim.policy import choose_auto
    from arena.strategies import limits_line, strategy_prompt

    # read from the script as written, in its order (the demo's rotation)
    assert strategies.builtin_strategies() == [NEW, "momentum", "scalper", "brainrot", "default"]
    # the router: a --strategy choice, its prompt the prose with the limits written in
    args = deploy_router_node.parse_args(["--name", "zed", "--strategy", NEW])
    prompt = strategy_prompt(args.strategy, args.prompt)
    assert prompt.startswith(PROSE) and "One buy order is at most 7% of total account value." in prompt
    assert "At most 2 filled orders per turn." in prompt
    # `arena up` accepts it in a file, and names it among the built-in ones when a file has a typo
    toml = tmp_path / "arena.toml"
    toml.write_text(
        '[[chat_nodes]]\nname = "q"\nmodel = "auto"\nbase_url = "offline"\n'
        f'[[agents]]\nname = "zed"\nstrategy = "{NEW}"\nchat_node = "q"\n'
    )
    assert [a.strategy for a in up.load(toml).agents] == [NEW]
    toml.write_text(toml.read_text().replace(f'"{NEW}"', '"contrarain"'))
    with pytest.raises(up.ConfigError, match=NEW):
        up.load(toml)
    # the demo hands it out; the desk enforces its limits; the dashboard's header lists them
    assert NEW in {strategy for _, strategy, _ in agent_plan(len(strategies.builtin_strategies()))}
    assert Desk(Ledger(":memory:")).limits_for(NEW) == (NEW, LIMITS)
    assert f"{NEW}: buy ≤7% · position ≤20% · cash ≥55% · ≤2 orders/turn" in limits_line(Limits())
    # the offline models pick their policy from the prose
    assert choose_auto(prompt) == "mean-revert"


@pytest.mark.processes
def test_a_registered_strategy_is_a_choice_in_the_generated_cli_reference(tmp_path):
    from tests.cli_flags import _CAPTURE, ROOT, table

    out = subprocess.run(
        [sys.executable, "-c", REGISTER + _CAPTURE, with_strategy(tmp_path / "deploy_router_node.py")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    flags = json.loads(next(x for x in out.stdout.splitlines() if x.startswith("@@FLAGS@@"))[len("@@FLAGS@@") :])
    row = next(line for line in table(flags).splitlines() if line.startswith("| `--strategy` "))
    assert f"`{NEW}`" in row and "`momentum`" in row, row
