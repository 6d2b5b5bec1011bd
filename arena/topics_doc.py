"""docs/TOPICS.md: every topic on the bus, its key and every field of its payload with type and unit.

Generated from the wire models' JSON schema (pydantic), so a consumer in another language need not read
Python. Field descriptions come from the models (`Field(description=...)`); units are kept here.

    uv run python -m arena.topics_doc > docs/TOPICS.md       # regenerate (tests/test_topics_doc.py checks it)
    uv run python -m arena.topics_doc --missing              # fields whose model gives no description
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, get_args, get_origin

from pydantic import BaseModel
from typing_extensions import TypeAliasType

from arena import config
from arena.accounts import ACCOUNTS_TOPIC, AccountRecord
from arena.chat import ChatReply, ChatRequest
from arena.decisions import Decision
from arena.market import MarketSnapshot
from arena.portfolio import TradeOutcome
from arena.publish import LeaderboardRecord, ValueSample
from arena.supervisor import ProcessStatus

COMMAND = "uv run python -m arena.topics_doc > docs/TOPICS.md"


@dataclass(frozen=True)
class Topic:
    name: str
    key: str
    # None: not an arena model (calfkit's own envelope); a named union: one of its models, by `kind_field`
    model: type[BaseModel] | TypeAliasType | None
    written_by: str
    read_by: str
    note: str = ""
    more: tuple[tuple[str, type[BaseModel]], ...] = ()  # other kinds of record: (their key, their model)
    kind_field: str = ""  # the field that tells a union's models apart


_WARM_UP = (
    "Empty records (0 bytes) appear too: a process writes one when it starts, to create the topic. Readers skip them."
)

TOPICS = [
    Topic(
        config.MARKET_TOPIC,
        "`market` (one constant key: one partition, snapshots in order)",
        MarketSnapshot,
        "`coinbase_connector.py` (live, or `--replay` of a recording)",
        "every router; the tools process (fills, dashboard); `arena web`",
    ),
    Topic(
        config.TRADES_TOPIC,
        "the agent's name",
        TradeOutcome,
        "the tools process (`trading_tools.py` / `tools_and_dashboard.py`)",
        "`arena web`; anyone outside (recordings, analysis)",
        "Every `execute_trade` outcome: a `Fill` (`status` filled) or a `Rejection` (`status` rejected, which moves "
        "no money). Read `status` first: each has only its own fields. A record without `status` is a fill.",
        kind_field="status",
    ),
    Topic(
        config.DECISIONS_TOPIC,
        "the router's (agent's) name",
        Decision,
        "each router (`deploy_router_node.py`)",
        "the tools process (dashboard); `response_viewer.py`; `arena web`",
        "One record when a turn starts (`status` started) and one when it ends.",
    ),
    Topic(
        ACCOUNTS_TOPIC,
        "the agent's name",
        AccountRecord,
        "the tools process (`trading_tools.py` / `tools_and_dashboard.py`)",
        "each router, its own key only (the account in its turn prompt)",
        "Created compacted (Tansu's memory storage keeps every record anyway). One record per agent after each "
        "market snapshot the tools take (marks change), after each outcome of its orders, and when a turn starts "
        "under a strategy not yet valued or for an agent without an account (`portfolio` null). `portfolio` is "
        "get_portfolio's result as is: its fields are the desk's, beyond the few checked here.",
    ),
    Topic(
        config.HEALTH_TOPIC,
        "none",
        ProcessStatus,
        "the `arena demo` supervisor",
        "the tools process (dashboard); `arena web`",
    ),
    Topic(
        config.LEADERBOARD_TOPIC,
        "`leaderboard`",
        LeaderboardRecord,
        "the tools process (`tools_and_dashboard.py`)",
        "`arena web`",
        "Compacted: the last `leaderboard` record and every sample survive. The `leaderboard` record is the dashboard's "
        "export (standings, metrics, positions, quotes, feed status, process health) with an empty "
        "`value_history.samples`; it comes when something changed and at least every few seconds. Its objects may "
        "carry fields beyond those listed (readers keep what they know).",
        more=(("`sample:<RFC 3339 time>`, one record per sample of the agents' total values", ValueSample),),
    ),
    Topic(
        config.chat_request_topic("{chat_node}"),
        "the request id",
        ChatRequest,
        "routers using that chat node",
        "the chat node of that name (`deploy_chat_node.py`; replicas share a group)",
        _WARM_UP,
    ),
    Topic(
        config.chat_reply_topic("{instance_id}"),
        "the request id",
        ChatReply,
        "the chat node that took the request (topic named by the request's `reply_to`)",
        "the router process that sent it",
        "A ChatReply of kind `accepted` as soon as a replica takes the request, then exactly one `response` or `error`. "
        + _WARM_UP,
    ),
    Topic(
        config.ACTIVITY_TOPIC,
        "set by calfkit",
        None,
        "every router (calfkit `publish_topic`)",
        "`response_viewer.py`; `arena web`",
        "Every step of every agent (prompts, tool calls, tool results, answers) in calfkit's own envelope, not an arena "
        "model: read it with calfkit, or see calfkit's documentation for its JSON.",
    ),
]

# Units (and what a bare number means), by model and field. Times on the wire are RFC 3339 strings in UTC.
UNITS: dict[tuple[str, str], str] = {
    ("MarketSnapshot", "seq"): "count (per connector run)",
    ("Quote", "price"): "quote currency per base unit",
    ("Quote", "best_bid"): "quote currency per base unit",
    ("Quote", "best_ask"): "quote currency per base unit",
    ("Quote", "bid_size"): "base units",
    ("Quote", "ask_size"): "base units",
    ("Candle", "start"): "UNIX seconds (UTC), aligned to the granularity",
    ("Candle", "open"): "quote currency per base unit",
    ("Candle", "high"): "quote currency per base unit",
    ("Candle", "low"): "quote currency per base unit",
    ("Candle", "close"): "quote currency per base unit",
    ("Candle", "volume"): "base units",
    ("Fill", "quantity"): "base units",
    ("Fill", "price"): "quote currency per base unit",
    ("Fill", "fee"): "quote currency",
    ("Fill", "quote_age_s"): "seconds",
    ("Fill", "latency_ms"): "milliseconds",
    ("Fill", "tick_seq"): "the snapshot `seq` traded on",
    ("Rejection", "quantity"): "base units (as asked)",
    ("Rejection", "latency_ms"): "milliseconds",
    ("Rejection", "tick_seq"): "the snapshot `seq` judged on",
    ("Decision", "tick_seq"): "the snapshot `seq` of the turn",
    ("AccountRecord", "snapshot_seq"): "the snapshot `seq`",
    ("ChatRequest", "timeout_s"): "seconds",
    ("ChatReply", "elapsed_ms"): "milliseconds",
    ("ChatReply", "status_code"): "HTTP status",
    ("LeaderboardRecord", "starting_cash"): "USD (account currency)",
    ("LeaderboardRecord", "fee_bps"): "basis points of the traded value",
    ("ExportFeed", "age_s"): "seconds",
    ("ExportFeed", "snapshot_seq"): "the snapshot `seq`",
    ("ExportAgent", "total_value"): "USD (account currency)",
    ("ExportAgent", "return_pct"): "percent",
    ("ExportAgent", "cash"): "USD (account currency)",
    ("ExportAgent", "realized_pnl"): "USD (account currency)",
    ("ExportAgent", "unrealized_pnl"): "USD (account currency)",
    ("ExportAgent", "fees"): "USD (account currency)",
    ("ExportAgent", "trades"): "count of fills",
    ("ExportAgent", "rejected"): "count of rejections",
    ("ExportPosition", "quantity"): "base units",
    ("ExportPosition", "avg_cost"): "quote currency per base unit",
    ("ExportPosition", "mark"): "quote currency per base unit",
    ("ExportPosition", "market_value"): "quote currency",
    ("ExportPosition", "unrealized_pnl"): "quote currency",
    ("ExportProduct", "price"): "quote currency per base unit",
    ("ExportProduct", "bid"): "quote currency per base unit",
    ("ExportProduct", "ask"): "quote currency per base unit",
    ("ExportProduct", "spread"): "quote currency per base unit",
    ("ExportProduct", "age_s"): "seconds",
    ("ValueHistoryOut", "interval_s"): "seconds",
    ("ValueSample", "values"): "USD (account currency), by agent name",
    ("ExportAgent", "metrics"): "by metric name: see docs/METRICS.md",
}
TIME_UNIT = "UTC"
# What the keys of a map field are, outermost first (shown in field paths as `{name}`).
MAP_KEYS: dict[tuple[str, str], tuple[str, ...]] = {
    ("MarketSnapshot", "quotes"): ("product_id",),
    ("MarketSnapshot", "candles"): ("product_id", "granularity"),
    ("LeaderboardRecord", "products"): ("product_id",),
}

PREAMBLE = f"""# Topics

<!-- generated by `{COMMAND}` from the wire models; do not edit by hand -->

Every record value is one JSON object in UTF-8, as pydantic's `model_dump_json` writes the model named
below. Numbers are JSON numbers (not decimal strings); times are RFC 3339 strings in UTC (`...Z`); a product
id is Coinbase's (`BTC-USD`: base currency `BTC`, quote currency `USD`), so prices are in the quote
currency per one unit of the base currency. Keys are UTF-8 strings. A reader should skip a record it
cannot parse rather than stop. Field paths: `a.b` is a field of an object, `{{x}}` stands for any key of a
map, `[]` for every element of a list. The arena's own writers send every field; `required` says what
another writer must send (a field left out takes its default). Granularities are Coinbase's names
(`ONE_MINUTE`, `FIVE_MINUTE`, `FIFTEEN_MINUTE`, `ONE_HOUR`, ...).
"""


def arena_models() -> dict[str, type[BaseModel]]:
    """Every pydantic model defined in the arena package, by class name: these are expanded, others named."""
    out: dict[str, type[BaseModel]] = {}
    todo = [BaseModel]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            todo.append(sub)
            if sub.__module__.startswith("arena."):
                out.setdefault(sub.__name__, sub)
    return out


def _map_value(s: dict) -> dict | None:
    """The schema of a map's values (`dict[K, V]`: additionalProperties, or one patternProperties entry)."""
    if isinstance(s.get("additionalProperties"), dict) and s["additionalProperties"]:
        return s["additionalProperties"]
    patterns = s.get("patternProperties") or {}
    return next(iter(patterns.values())) if len(patterns) == 1 else None


def _ref(schema: dict) -> str | None:
    ref = schema.get("$ref")
    return ref.rsplit("/", 1)[-1] if ref else None


def _constraints(s: dict) -> list[str]:
    out = []
    for key, text in (
        ("exclusiveMinimum", "> {}"),
        ("minimum", ">= {}"),
        ("exclusiveMaximum", "< {}"),
        ("maximum", "<= {}"),
        ("minLength", "at least {} chars"),
        ("maxLength", "at most {} chars"),
        ("pattern", "pattern `{}`"),
        ("maxItems", "at most {} items"),
        ("maxProperties", "at most {} keys"),
    ):
        if key in s:
            out.append(text.format(s[key]))
    return out


def type_text(s: dict) -> str:
    """A JSON schema node as short, language-neutral text."""
    if name := _ref(s):
        return name
    if "const" in s:
        return f"`{json.dumps(s['const'])}`"
    if "enum" in s:
        return "one of " + ", ".join(f"`{json.dumps(v)}`" for v in s["enum"])
    for union in ("anyOf", "oneOf"):
        if union in s:
            parts = [type_text(x) for x in s[union]]
            if "null" in parts:  # optional: the value first, then "or null"
                parts = [p for p in parts if p != "null"] + ["null"]
            return " or ".join(parts)
    t = s.get("type")
    extra = _constraints(s)
    own = f" ({', '.join(extra)})" if extra else ""
    if t == "array":
        return f"list{own} of {type_text(s.get('items', {}))}"
    if t == "object" and (value := _map_value(s)):
        key_schema = s.get("propertyNames", {})
        if s.get("patternProperties"):
            key_schema = {"pattern": next(iter(s["patternProperties"]))}
        key = "string" + (f" ({', '.join(_constraints(key_schema))})" if _constraints(key_schema) else "")
        return f"map{own} of {key} to {type_text(value)}"
    if t == "object":
        base = "object"
    elif t == "string" and s.get("format") == "date-time":
        base = "string (RFC 3339 time)"
    elif t == "string" and s.get("format") == "binary":
        base = "string (base64)"
    elif isinstance(t, str):
        base = {"number": "number", "integer": "integer", "boolean": "boolean", "string": "string", "null": "null"}.get(
            t, t
        )
    else:
        base = "any"
    return base + own


def _children(s: dict, path: str) -> Iterator[tuple[str, str]]:
    """(path, model name) for every arena model reached from a field: directly, optional, in lists or maps."""
    if name := _ref(s):
        yield path, name
        return
    for union in ("anyOf", "oneOf"):
        for x in s.get(union, []):
            yield from _children(x, path)
    if s.get("type") == "array":
        yield from _children(s.get("items", {}), path + "[]")
    if s.get("type") == "object" and (value := _map_value(s)):
        yield from _children(value, path + ".{key}")


@dataclass
class Row:
    path: str
    model: str
    field: str
    type: str
    required: bool
    default: Any
    unit: str
    description: str


def rows(model: type[BaseModel]) -> tuple[list[Row], dict[str, str], list[str]]:
    """The payload's fields, nested arena models expanded in place; model docstrings; foreign types named."""
    schema = model.model_json_schema(mode="serialization")
    defs = schema.get("$defs", {})
    ours = arena_models()
    out: list[Row] = []
    docs: dict[str, str] = {}
    foreign: list[str] = []

    def walk(name: str, node: dict, prefix: str, seen: tuple[str, ...]) -> None:
        if node.get("description"):
            docs.setdefault(name, " ".join(node["description"].split()))
        required = set(node.get("required", []))
        for field, prop in node.get("properties", {}).items():
            path = f"{prefix}{field}"
            t = type_text(prop)
            unit = UNITS.get((name, field), "")
            if not unit and "RFC 3339" in t:
                unit = TIME_UNIT
            out.append(
                Row(
                    path,
                    name,
                    field,
                    t,
                    field in required,
                    prop.get("default"),
                    unit,
                    " ".join(prop.get("description", "").split()),
                )
            )
            for sub_path, sub in _children(prop, path):
                if sub in ours and sub not in seen and sub in defs:
                    for key in MAP_KEYS.get((name, field), ()):
                        sub_path = sub_path.replace("{key}", "{" + key + "}", 1)
                    walk(sub, defs[sub], sub_path + ".", seen + (sub,))
                elif sub not in ours and sub not in foreign:
                    foreign.append(sub)

    walk(model.__name__, schema, "", (model.__name__,))
    return out, docs, foreign


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _model_table(model: type[BaseModel]) -> list[str]:
    table, docs, foreign = rows(model)
    out = []
    if docs:
        out.append("\n" + "\n".join(f"- `{name}`: {doc}" for name, doc in docs.items()))
    out.append("\n| field | type | required | unit | description |\n|---|---|---|---|---|")
    for r in table:
        typ = r.type + ("" if r.required or r.default is None else f", default `{json.dumps(r.default)}`")
        required = "yes" if r.required else "no"
        out.append(f"| `{r.path}` | {_cell(typ)} | {required} | {_cell(r.unit)} | {_cell(r.description)} |")
    if foreign:
        names = ", ".join(f"`{n}`" for n in foreign)
        out.append(
            f"\npydantic-ai types, as pydantic-ai serializes them (`pydantic_ai.messages`, `pydantic_ai.models`): {names}."
        )
    return out


def variants(model: type[BaseModel] | TypeAliasType | None) -> tuple[type[BaseModel], ...]:
    """The models a topic's value may be: the model itself, or each model of a named union."""
    if model is None:
        return ()
    if isinstance(model, type) and issubclass(model, BaseModel):
        return (model,)
    out: list[type[BaseModel]] = []
    todo = [model.__value__ if isinstance(model, TypeAliasType) else model]
    while todo:
        t = todo.pop(0)
        if isinstance(t, type) and issubclass(t, BaseModel):
            out.append(t)
        elif get_origin(t) is not None:  # a Union, an Annotated: look inside
            todo[:0] = [a for a in get_args(t) if isinstance(a, type) or get_origin(a) is not None]
    return tuple(out)


def _kind(model: type[BaseModel], field: str) -> str:
    return ", ".join(f"`{field}` {v}" for v in get_args(model.model_fields[field].annotation))


def _name(model: type[BaseModel] | TypeAliasType | None, module: bool = False) -> str:
    if model is None:
        return "calfkit's envelope (not an arena model)" if module else "calfkit envelope"
    models = variants(model)
    names = " or ".join(f"`{m.__name__}`" for m in models)
    return names + (f" (`{models[0].__module__}`)" if module else "")


def render() -> str:
    out = [PREAMBLE]
    out.append("| topic | key | value | written by |\n|---|---|---|---|")
    for t in TOPICS:
        keys = "; ".join([t.key, *(k.split(",")[0] for k, _ in t.more)])
        values = ", ".join(_name(m) for m in (t.model, *(m for _, m in t.more)))
        out.append(f"| [`{t.name}`](#{_anchor(t.name)}) | {_cell(keys)} | {values} | {_cell(t.written_by)} |")
    out.append("")
    for t in TOPICS:
        out.append(f"## `{t.name}`\n")
        out.append(f"- key: {t.key}\n- value: {_name(t.model, True)}")
        out.extend(f"- key: {k}\n- value: {_name(m, True)}" for k, m in t.more)
        out.append(f"- written by: {t.written_by}\n- read by: {t.read_by}")
        if t.note:
            out.append(f"\n{t.note}")
        models = variants(t.model)
        for model in models:
            if t.more:
                out.append(f"\n### {_name(model)} (key {t.key})")
            elif len(models) > 1:
                out.append(f"\n### {_name(model)} ({_kind(model, t.kind_field)})")
            out.extend(_model_table(model))
        for key, model in t.more:
            out.append(f"\n### {_name(model)} (key {key.split(',')[0]})")
            out.extend(_model_table(model))
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _anchor(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum() or ch in "-_ ").replace(" ", "-")


def missing_descriptions() -> list[str]:
    """`Model.field` for every documented field whose model gives no description."""
    out: list[str] = []
    for t in TOPICS:
        for model in (*variants(t.model), *(m for _, m in t.more)):
            for r in rows(model)[0]:
                name = f"{r.model}.{r.field}"
                if not r.description and name not in out:
                    out.append(name)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m arena.topics_doc", description="Print docs/TOPICS.md, generated from the wire models."
    )
    parser.add_argument(
        "--missing", action="store_true", help="list the fields whose model gives no description instead"
    )
    args = parser.parse_args(argv)
    sys.stdout.write("\n".join(missing_descriptions()) + "\n" if args.missing else render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
