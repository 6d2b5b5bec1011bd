"""The arena file (`arena up arena.toml`): the market, the chat nodes, the agents, fees and limits, and
where logs, ledger and exports go, read into the dataclasses below and checked whole before anything
starts: every problem is listed at once (unknown keys, unknown chat node, duplicate names, a key variable
that is not set, an unreadable prompt file or recording). `arena demo` builds the same `Arena` in code.

Paths the file reads (prompt files, recordings) are relative to the file; paths it writes (run
folder, ledger, export) to the current directory. A chat node names the *environment variable* that
holds its API key, never the key: the key goes to that chat node's environment only.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from arena.desk import DEFAULT_FEE_BPS, DEFAULT_IMPACT_BPS

OFFLINE = "offline"  # a chat node's base_url: the arena's own offline policy server (arena policy-server)
SOURCES = ("simulator", "live", "recording")
REASONING_EFFORTS = ("minimal", "low", "medium", "high")
DEFAULT_PRODUCTS = ("BTC-USD", "SOL-USD", "FARTCOIN-USD")
PRODUCT_RE = re.compile(r"^[A-Z0-9]{1,20}-[A-Z0-9]{1,20}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class Market:
    source: str = "simulator"  # simulator | live | recording
    interval: float = 10.0  # seconds between snapshots (simulator, live)
    products: list[str] = field(default_factory=lambda: list(DEFAULT_PRODUCTS))
    recording: Path | None = None  # source = "recording"
    speed: float = 1.0  # recording pace: 2 = twice as fast, 0 = as fast as possible


@dataclass
class ChatNode:
    name: str
    model: str
    base_url: str = OFFLINE  # OpenAI-compatible API, or "offline"
    api_key_env: str | None = None  # the NAME of the variable holding the key ("" = the server needs none)
    reasoning_effort: str | None = None
    price_in_per_mtok: float | None = None  # USD per million input tokens (the chat node's --price-in)
    price_out_per_mtok: float | None = None

    @property
    def offline(self) -> bool:
        return self.base_url == OFFLINE


@dataclass
class Agent:
    name: str
    chat_node: str
    strategy: str | None = None  # a built-in strategy of deploy_router_node.py
    prompt_file: Path | None = None  # or a strategy prompt of one's own
    turn_timeout: float | None = None


@dataclass
class Tools:
    fee_bps: float = DEFAULT_FEE_BPS  # the tools' own defaults (a real venue's taker fee, docs/METRICS.md)
    impact_bps: float = DEFAULT_IMPACT_BPS
    max_quote_age: float = 30.0


@dataclass
class Output:
    run_dir: Path | None = None  # default runs/<timestamp>
    ledger: Path | None = None  # default <run_dir>/ledger.db
    export: Path | None = None  # default <run_dir>/leaderboard.json


@dataclass
class Web:
    """The live web page (`arena web`): on `port`, or on a free one when that is taken."""

    port: int = 8000


@dataclass
class Arena:
    chat_nodes: list[ChatNode]
    agents: list[Agent]
    market: Market = field(default_factory=Market)
    tools: Tools = field(default_factory=Tools)
    output: Output = field(default_factory=Output)
    seed: int = 7  # the simulator's and the offline policies' seed
    bootstrap_servers: str | None = None  # an external Kafka cluster; None = the embedded broker
    fetch_wait_ms: int | None = None  # None: 4 ms per agent within 10-100
    web: Web | None = None  # None: no web page
    source: str = "built-in"  # the file it came from

    def chat_node(self, name: str) -> ChatNode:
        return next(c for c in self.chat_nodes if c.name == name)

    def describe(self) -> dict:
        """The resolved configuration as JSON (no key values: only the variables' names)."""
        return json.loads(json.dumps(asdict(self), default=str))


class ConfigError(Exception):
    """What is wrong with an arena file: every problem found, one per line."""

    def __init__(self, source: str, problems: list[str]):
        self.source, self.problems = source, problems
        n = len(problems)
        super().__init__(f"{source}: {n} problem{'s' * (n != 1)}:\n" + "\n".join(f"  - {p}" for p in problems))


def builtin_strategies() -> list[str]:
    """The strategy names deploy_router_node.py --strategy accepts (its STRATEGIES)."""
    from arena import strategies

    return sorted(strategies.builtin_strategies())


def _toml(path: Path) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            raise ConfigError(
                str(path), ["reading TOML on Python 3.10 needs the tomli package (pip install tomli)"]
            ) from None
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read it: {exc.strerror or exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [f"not valid TOML: {exc}"]) from None


class _Checker:
    """Reads one table after another, noting every problem instead of stopping at the first."""

    def __init__(self):
        self.problems: list[str] = []

    def table(self, where: str, value: Any, known: dict[str, tuple]) -> dict:
        """Only the known keys, each of one of its allowed types; unknown keys are problems."""
        if not isinstance(value, dict):
            self.problems.append(f"{where}: expected a table, got {type(value).__name__}")
            return {}
        out = {}
        for key, item in value.items():
            if key not in known:
                self.problems.append(f"{where}: unknown key {key!r} (known: {', '.join(known)})")
                continue
            types = known[key]
            if isinstance(item, bool) and bool not in types or not isinstance(item, types):
                kind = (
                    "a number"
                    if types == NUM
                    else {str: "a string", int: "an integer", dict: "a table", list: "a list"}[types[0]]
                )
                self.problems.append(f"{where}.{key}: expected {kind}, got {item!r}")
                continue
            out[key] = item
        return out

    def check(self, ok: bool, problem: str) -> bool:
        if not ok:
            self.problems.append(problem)
        return ok


NUM = (int, float)


def load(path: str | Path, env: dict[str, str] | None = None) -> Arena:
    """Read and check an arena file; ConfigError lists every problem."""
    path = Path(path)
    return parse(_toml(path), base=path.resolve().parent, source=str(path), env=env)


def parse(data: dict, *, base: Path, source: str = "arena.toml", env: dict[str, str] | None = None) -> Arena:
    from arena.chat import NAME_RE as CHAT_NAME_RE
    from arena.metrics import BASELINE_NAME
    from arena.router import AGENT_NAME_RE

    env = os.environ if env is None else env
    c = _Checker()
    top = c.table(
        "the file",
        data,
        {
            "seed": (int,),
            "market": (dict,),
            "broker": (dict,),
            "tools": (dict,),
            "output": (dict,),
            "web": (dict,),
            "chat_nodes": (list,),
            "agents": (list,),
        },
    )

    m = c.table(
        "[market]",
        top.get("market", {}),
        {"source": (str,), "interval": NUM, "products": (list,), "recording": (str,), "speed": NUM},
    )
    market = Market()
    if "source" in m and c.check(
        m["source"] in SOURCES, f"[market].source: {m['source']!r} is not one of {', '.join(SOURCES)}"
    ):
        market.source = m["source"]
    if "interval" in m and c.check(m["interval"] > 0, f"[market].interval must be positive, got {m['interval']}"):
        market.interval = float(m["interval"])
    if "speed" in m and c.check(m["speed"] >= 0, f"[market].speed must be >= 0, got {m['speed']}"):
        market.speed = float(m["speed"])
    if "products" in m:
        bad = [p for p in m["products"] if not (isinstance(p, str) and PRODUCT_RE.match(p))]
        if c.check(
            m["products"] and not bad, f'[market].products: expected product ids like "BTC-USD", got {bad or "none"}'
        ):
            market.products = list(m["products"])
    if "recording" in m:
        market.recording = (base / m["recording"]).resolve()
        c.check(market.source == "recording", '[market].recording is only for source = "recording"')
        c.check(market.recording.is_file(), f"[market].recording: no such file {market.recording}")
    elif market.source == "recording":
        c.problems.append('[market]: source = "recording" needs recording = "PATH"')

    b = c.table("[broker]", top.get("broker", {}), {"bootstrap_servers": (str,), "fetch_wait_ms": (int,)})
    if "fetch_wait_ms" in b:
        c.check(1 <= b["fetch_wait_ms"] <= 1000, f"[broker].fetch_wait_ms must be 1-1000, got {b['fetch_wait_ms']}")

    t = c.table("[tools]", top.get("tools", {}), {"fee_bps": NUM, "impact_bps": NUM, "max_quote_age": NUM})
    tools = Tools(**{key: float(v) for key, v in t.items()})
    c.check(tools.fee_bps >= 0, f"[tools].fee_bps must be >= 0, got {tools.fee_bps}")
    c.check(tools.impact_bps >= 0, f"[tools].impact_bps must be >= 0, got {tools.impact_bps}")
    c.check(tools.max_quote_age > 0, f"[tools].max_quote_age must be positive, got {tools.max_quote_age}")

    web = None
    if "web" in top:
        w = c.table("[web]", top["web"], {"port": (int,)})
        web = Web(**w)
        c.check(0 <= web.port <= 65535, f"[web].port must be 0-65535 (0: any free port), got {web.port}")

    o = c.table("[output]", top.get("output", {}), {"run_dir": (str,), "ledger": (str,), "export": (str,)})
    output = Output(**{key: Path(v) for key, v in o.items()})

    chat_nodes: list[ChatNode] = []
    for i, raw in enumerate(top.get("chat_nodes", [])):
        where = f"[[chat_nodes]] #{i + 1}"
        n = c.table(
            where,
            raw,
            {
                "name": (str,),
                "model": (str,),
                "base_url": (str,),
                "api_key_env": (str,),
                "reasoning_effort": (str,),
                "price_in_per_mtok": NUM,
                "price_out_per_mtok": NUM,
            },
        )
        if not c.check("name" in n, f"{where}: needs a name") or not c.check(
            "model" in n, f"{where} ({n['name']}): needs a model"
        ):
            continue
        where = f"chat node {n['name']!r}"
        node = ChatNode(**n)
        c.check(bool(CHAT_NAME_RE.fullmatch(node.name)), f"{where}: a name is 1-100 letters, digits, '.', '-' or '_'")
        c.check(all(x.name != node.name for x in chat_nodes), f"{where}: two chat nodes with this name")
        c.check(
            node.offline or node.base_url.startswith(("http://", "https://")),
            f'{where}: base_url must be an http(s) URL, or "{OFFLINE}" for the offline policy server',
        )
        if node.reasoning_effort is not None:
            c.check(
                node.reasoning_effort in REASONING_EFFORTS,
                f"{where}: reasoning_effort must be one of {', '.join(REASONING_EFFORTS)}",
            )
        for key in ("price_in_per_mtok", "price_out_per_mtok"):
            if getattr(node, key) is not None:
                c.check(0 <= getattr(node, key) < 1e6, f"{where}: {key} must be >= 0 (USD per million tokens)")
        c.check(
            (node.price_in_per_mtok is None) == (node.price_out_per_mtok is None),
            f"{where}: give both price_in_per_mtok and price_out_per_mtok, or neither",
        )
        if node.api_key_env:
            if c.check(
                bool(ENV_NAME_RE.match(node.api_key_env)),
                f"{where}: api_key_env is the NAME of an environment variable "
                f'(like "OPENAI_API_KEY"), never the key itself',
            ):
                c.check(
                    bool(env.get(node.api_key_env)),
                    f"{where}: the environment variable {node.api_key_env} (api_key_env) is not set",
                )
        elif node.api_key_env is None and not node.offline:
            c.problems.append(
                f'{where}: name the environment variable that holds its API key (api_key_env = "OPENAI_API_KEY"), '
                f'or api_key_env = "" for a server that needs none'
            )
        chat_nodes.append(node)

    strategies = builtin_strategies()
    agents: list[Agent] = []
    for i, raw in enumerate(top.get("agents", [])):
        where = f"[[agents]] #{i + 1}"
        a = c.table(
            where,
            raw,
            {"name": (str,), "chat_node": (str,), "strategy": (str,), "prompt_file": (str,), "turn_timeout": NUM},
        )
        if not c.check("name" in a, f"{where}: needs a name") or not c.check(
            "chat_node" in a, f"{where} ({a['name']}): needs a chat_node"
        ):
            continue
        where = f"agent {a['name']!r}"
        agent = Agent(
            name=a["name"],
            chat_node=a["chat_node"],
            strategy=a.get("strategy"),
            turn_timeout=float(a["turn_timeout"]) if "turn_timeout" in a else None,
        )
        c.check(
            bool(AGENT_NAME_RE.match(agent.name)),
            f"{where}: a name is 1-64 letters, digits, '-' or '_', starting with a letter or digit",
        )
        c.check(agent.name != BASELINE_NAME, f"{where}: that name is the baseline's")
        c.check(all(x.name != agent.name for x in agents), f"{where}: two agents with this name")
        known_nodes = [x.name for x in chat_nodes]
        c.check(
            agent.chat_node in known_nodes,
            f"{where}: unknown chat node {agent.chat_node!r} (the file defines: {', '.join(known_nodes) or 'none'})",
        )
        if agent.turn_timeout is not None:
            c.check(agent.turn_timeout > 0, f"{where}: turn_timeout must be positive")
        if "prompt_file" in a:
            agent.prompt_file = (base / a["prompt_file"]).resolve()
            if c.check(agent.strategy is None, f"{where}: give strategy or prompt_file, not both"):
                try:
                    c.check(
                        bool(agent.prompt_file.read_text().strip()),
                        f"{where}: prompt_file {agent.prompt_file} is empty",
                    )
                except (OSError, UnicodeDecodeError) as exc:
                    c.problems.append(
                        f"{where}: cannot read prompt_file {agent.prompt_file}: {getattr(exc, 'strerror', None) or exc}"
                    )
        elif agent.strategy is None:
            agent.strategy = "default"
        if agent.strategy is not None:
            c.check(
                agent.strategy in strategies,
                f"{where}: unknown strategy {agent.strategy!r} (built in: {', '.join(sorted(strategies))}; "
                f'or prompt_file = "PATH")',
            )
        agents.append(agent)
    c.check(bool(top.get("chat_nodes")), "no chat nodes: add at least one [[chat_nodes]] table")
    c.check(bool(top.get("agents")), "no agents: add at least one [[agents]] table")

    if c.problems:
        raise ConfigError(source, c.problems)
    return Arena(
        chat_nodes=chat_nodes,
        agents=agents,
        market=market,
        tools=tools,
        output=output,
        seed=top.get("seed", 7),
        bootstrap_servers=b.get("bootstrap_servers"),
        fetch_wait_ms=b.get("fetch_wait_ms"),
        web=web,
        source=source,
    )


def summary(arena: Arena) -> str:
    m = arena.market
    market = {
        "simulator": f"simulator (seed {arena.seed}), every {m.interval:g}s, {', '.join(m.products)}",
        "live": f"live Coinbase feed, every {m.interval:g}s, {', '.join(m.products)}",
        "recording": f"recording {m.recording} at {f'{m.speed:g}x' if m.speed else 'full speed'}",
    }[m.source]
    lines = [
        f"market: {market}",
        f"broker: {arena.bootstrap_servers or 'embedded'}",
        f"web page: {f'port {arena.web.port}' if arena.web else 'none'}",
        "chat nodes:",
    ]
    for c in arena.chat_nodes:
        key = f", key from ${c.api_key_env}" if c.api_key_env else ""
        lines.append(f"  {c.name}: {c.model} at {'the offline policy server' if c.offline else c.base_url}{key}")
    lines.append("agents:")
    for a in arena.agents:
        lines.append(f"  {a.name}: {a.prompt_file or a.strategy} via {a.chat_node}")
    return "\n".join(lines)
