"""`arena policy-server`: an offline OpenAI-compatible chat completions server whose "models" are
deterministic trading policies (arena.policies) — what the demo and tests think with, no API key.

A chat node reaches it exactly like a real provider: `--base-url http://127.0.0.1:PORT/v1`.
Each turn of a router's conversation (the latest user message holding a market table and what follows it):
  1. the account known          -> execute_trade calls (never on a STALE product), or a text if no signal;
     the prompt's account counts (arena.accounts), else a get_portfolio result; neither -> call get_portfolio
  2. trade results present      -> a short closing text
Identical requests get identical answers (tool call ids are hashes of the conversation).

Models: momentum, mean-revert, random-walk (seeded), hold, auto (picks one from the agent's system prompt),
and faults for tests: error-500, error-429, error-401 (echoes the caller's key, to test redaction),
slow-<seconds> (sleeps, then holds; slow-<seconds>-<policy> sleeps, then plays that policy, e.g. slow-1-momentum),
bad-args (invalid execute_trade arguments), unknown-tool.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import re
import signal
import socket
import sys
import time
from dataclasses import replace
from typing import Any

from arena.policies import (
    MIN_NOTIONAL,
    POLICIES,
    Holdings,
    Market,
    Order,
    decide,
    increment,
    parse_market,
    parse_portfolio,
    parse_prompt_account,
    round_down,
)

log = logging.getLogger(__name__)

FAULT_MODELS = ("error-500", "error-429", "error-401", "bad-args", "unknown-tool")
LISTED_MODELS = (*POLICIES, "auto", *FAULT_MODELS, "slow-<seconds>")
_SLOW = re.compile(r"^slow-(\d+(?:\.\d+)?)(?:-([a-z-]+))?$")  # slow-2, slow-2-momentum
MAX_TURNS = 4  # model turns per market turn before it just answers in text (no endless loops)
MAX_BODY_BYTES = 1 << 20  # a router's request is a few kB; anything near this is not a conversation

# `auto`: the agent's system prompt picks the policy: the keyword that appears first wins (the strategy
# comes before any shared rules in a router's prompt).
AUTO_KEYWORDS = {
    "random-walk": ("random", "brainrot", "degen", "yolo", "meme", "gamble"),
    "mean-revert": ("mean-revert", "mean revert", "mean reversion", "scalp"),
    "momentum": ("momentum", "trend", "breakout"),
    "hold": ("hodl", "never trade"),
}
AUTO_DEFAULT = "momentum"


class ApiError(Exception):
    """An OpenAI-style error reply."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": type_, "param": param, "code": code}}


# --------------------------------------------------------------------------------- conversation


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _tokens(chars: int) -> int:
    return -(-chars // 4)  # about 4 characters a token, as tokenizers average on English text


def usage_estimate(messages: list, tools: Any, answer: dict) -> tuple[int, int]:
    """Plausible (prompt, completion) token counts: what a real provider bills is every message's text
    and tool calls, the tool schemas and a few tokens of framing per message; the answer likewise."""

    def size(m: dict) -> int:
        calls = m.get("tool_calls") if isinstance(m.get("tool_calls"), list) else []
        return 4 + _tokens(len(_text(m.get("content"))) + len(json.dumps(calls, default=str)) * bool(calls))

    prompt = 3 + sum(size(m) for m in messages if isinstance(m, dict))
    if tools:
        prompt += _tokens(len(json.dumps(tools, default=str)))
    return prompt, size(answer)


def _tool_specs(tools: Any) -> dict[str, dict]:
    """Tool name -> JSON schema of its parameters."""
    specs = {}
    for t in tools or []:
        fn = t.get("function") if isinstance(t, dict) else None
        if isinstance(fn, dict) and fn.get("name"):
            specs[fn["name"]] = fn.get("parameters") or {}
    return specs


def _pick(names: list[str], candidates: tuple[str, ...], default: str) -> str:
    for c in candidates:
        if c in names:
            return c
    return default


def trade_arguments(order: Order, schema: dict) -> dict:
    """execute_trade arguments named as the tool's own schema names them."""
    props = schema.get("properties") or {}
    names = list(props)
    product = _pick(names, ("product_id", "product", "symbol", "pair", "market"), "product_id")
    side = _pick(names, ("side", "action", "direction"), "side")
    qty = _pick(names, ("quantity", "qty", "size", "base_size", "amount", "units"), "quantity")
    side_value = order.side
    enum = (props.get(side) or {}).get("enum")
    if enum:
        side_value = next((v for v in enum if str(v).lower() == order.side), order.side)
    return {product: order.product_id, side: side_value, qty: order.quantity}


class Turn:
    """The current market turn of a conversation, read from OpenAI chat messages."""

    def __init__(self, messages: list[dict]):
        self.system = "\n".join(_text(m.get("content")) for m in messages if m.get("role") in ("system", "developer"))
        users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
        with_market = [i for i in users if parse_market(_text(messages[i].get("content"))) is not None]
        start = with_market[-1] if with_market else (users[-1] if users else 0)
        self.prompt = _text(messages[start].get("content")) if messages else ""
        self.market: Market | None = parse_market(self.prompt)
        self.calls: list[tuple[str, str, str]] = []  # (id, name, arguments) in order
        self.results: dict[str, str] = {}
        self.model_turns = 0
        for m in messages[start + 1 :]:
            if m.get("role") == "assistant":
                self.model_turns += 1
                for c in m.get("tool_calls") or []:
                    fn = c.get("function") or {}
                    self.calls.append((c.get("id", ""), fn.get("name", ""), fn.get("arguments") or ""))
            elif m.get("role") == "tool":
                self.results[m.get("tool_call_id", "")] = _text(m.get("content"))

    def calls_to(self, name: str) -> list[tuple[str, str, str]]:
        return [c for c in self.calls if c[1] == name]


def choose_auto(system: str) -> str:
    low = system.lower()
    hits = [(pos, policy) for policy, words in AUTO_KEYWORDS.items() for w in words if (pos := low.find(w)) >= 0]
    return min(hits)[1] if hits else AUTO_DEFAULT


class Reply:
    """What the model says this turn: text and/or tool calls (name, arguments)."""

    def __init__(self, text: str | None = None, calls: list[tuple[str, dict]] | None = None):
        self.text = text
        self.calls = calls or []


def plan(model: str, turn: Turn, tools: dict[str, dict], seed: int) -> Reply:
    """The policy's move for this turn of the conversation."""
    if model in ("bad-args", "unknown-tool"):
        if turn.calls:
            return Reply(f"{model}: the tool call failed as intended; stopping.")
        if model == "bad-args":
            return Reply(calls=[("execute_trade", {"product_id": "BTC-USD", "side": "hodl", "quantity": "lots"})])
        return Reply(calls=[("launch_rocket", {"target": "moon"})])

    policy = choose_auto(turn.system) if model == "auto" else model
    if turn.market is None:
        return Reply(f"{policy}: no market data in the prompt; holding.")
    portfolio_tool = "get_portfolio" if "get_portfolio" in tools else None
    trade_tool = "execute_trade" if "execute_trade" in tools else None
    trades = turn.calls_to("execute_trade")
    if trades or turn.model_turns >= MAX_TURNS:
        return Reply(_summary(policy, trades, turn.results))
    portfolio_calls = turn.calls_to("get_portfolio")
    prompted = parse_prompt_account(turn.prompt)
    if portfolio_tool and not portfolio_calls and prompted is None:
        return Reply(calls=[(portfolio_tool, {})])
    if portfolio_calls:
        holdings = parse_portfolio(turn.results.get(portfolio_calls[-1][0]))
    else:
        holdings = prompted or parse_portfolio(None)
    orders, notes = decide(policy, turn.market, holdings, random_seed(seed, turn))
    orders = cap_orders(orders, turn.system, turn.market, holdings)
    if not orders or not trade_tool:
        return Reply(f"{policy}: no trade. " + "; ".join(notes) + _cash_note(holdings))
    text = f"{policy}: " + "; ".join(f"{o.side} {o.quantity:.10g} {o.product_id} ({o.why})" for o in orders)
    return Reply(text, [(trade_tool, trade_arguments(o, tools[trade_tool])) for o in orders])


CAP_MARGIN = 0.01  # how far under the largest-order limit the offline policies size a buy

# The largest-order rule as arena.strategies.Limits.sentences() writes it into a strategy's prompt.
_ORDER_CAP = re.compile(r"One buy order is at most (\d+(?:\.\d+)?)% of total account value")


def cap_orders(orders: list[Order], system: str, market: Market, holdings: Holdings) -> list[Order]:
    """What a model that reads its risk rules does: no buy above the prompt's largest-order limit (the
    policies size buys by cash alone). The desk enforces every limit; this only keeps the offline
    agents from walking into the one their sizing would break on every turn."""
    m = _ORDER_CAP.search(system)
    if not m:
        return orders
    value = holdings.cash + sum(
        qty * (market.quotes[pid].bid or 0.0) for pid, qty in holdings.positions.items() if pid in market.quotes
    )
    # 1% under the cap, as a model reading "at most" would: the desk counts the order at its impacted
    # price (docs/METRICS.md), a little above the ask the sizing uses.
    cap = float(m[1]) / 100 * value * (1 - CAP_MARGIN)
    out = []
    for o in orders:
        if o.side == "buy":
            ask = market.quotes[o.product_id].ask
            o = replace(o, quantity=round_down(min(o.quantity, cap / ask), increment(o.product_id, ask)))
            if o.quantity * ask < MIN_NOTIONAL:
                continue
        out.append(o)
    return out


_SNAPSHOT_NO = re.compile(r"\(snapshot #(-?\d+)\)")


def random_seed(seed: int, turn: Turn) -> bytes:
    """What random-walk's coin flips hash: the agent (its system prompt), the snapshot number and the
    market as parsed. Not the raw prompt: its clock time, quote ages and the previous turn's text
    (trade ids, latencies) differ between two replays of the same recording, which would change the flips."""
    number = _SNAPSHOT_NO.search(turn.prompt)
    return f"{seed}|{turn.system}|{number[1] if number else ''}|{turn.market!r}".encode()


def _cash_note(h: Holdings) -> str:
    return f". Cash {h.cash:,.2f}" if h.known else ". (portfolio unreadable; assumed starting cash)"


def _summary(policy: str, trades: list[tuple[str, str, str]], results: dict[str, str]) -> str:
    if not trades:
        return f"{policy}: done for this tick."
    parts = []
    for call_id, _, args in trades:
        try:
            a = json.loads(args)
            what = " ".join(str(v) for v in a.values())
        except (TypeError, ValueError):
            what = args
        result = " ".join((results.get(call_id) or "no result").split())
        parts.append(f"{what} -> {result[:80]}")
    return f"{policy}: placed {len(trades)} order(s): " + "; ".join(parts)


def completion(body: Any, seed: int = 0, authorization: str = "") -> dict:
    """The chat.completion object for a request body (raises ApiError for a bad request or a fault model)."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    model = body.get("model")
    messages = body.get("messages")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "'model' is required", param="model")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise ApiError(400, "'messages' must be a non-empty list of message objects", param="messages")
    if body.get("stream"):
        raise ApiError(400, 'streaming is not supported by the policy server; send "stream": false', param="stream")
    if model == "error-500":
        raise ApiError(500, "The policy server had an error while processing your request (simulated).", "server_error")
    if model == "error-429":
        raise ApiError(429, "Rate limit reached for requests (simulated).", "requests", "rate_limit_exceeded")
    if model == "error-401":  # a careless provider echoing the key: the chat node must redact it
        key = authorization.removeprefix("Bearer ").strip()
        raise ApiError(401, f"Incorrect API key provided: {key}.", "invalid_request_error", "invalid_api_key")
    slow = _SLOW.match(model)
    policy_model = (slow[2] or "hold") if slow else model
    if policy_model not in (*POLICIES, "auto", "bad-args", "unknown-tool"):
        raise ApiError(
            404,
            f"The model '{model}' does not exist. Available: {', '.join(LISTED_MODELS)}",
            code="model_not_found",
            param="model",
        )

    tools = _tool_specs(body.get("tools"))
    reply = plan(policy_model, Turn(messages), tools, seed)
    digest = hashlib.sha256(
        json.dumps([model, messages, body.get("tools")], sort_keys=True, default=str).encode()
    ).hexdigest()
    tool_calls = [
        {
            "id": "call_" + hashlib.sha256(f"{digest}:{i}".encode()).hexdigest()[:24],
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(args)},
        }
        for i, (name, args) in enumerate(reply.calls)
    ]
    message: dict = {"role": "assistant", "content": reply.text}
    if tool_calls:
        message["tool_calls"] = tool_calls
    in_tokens, out_tokens = usage_estimate(messages, body.get("tools"), message)
    return {
        "id": f"chatcmpl-{digest[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": "tool_calls" if tool_calls else "stop", "logprobs": None}
        ],
        "usage": {"prompt_tokens": in_tokens, "completion_tokens": out_tokens, "total_tokens": in_tokens + out_tokens},
    }


# ------------------------------------------------------------------------------------------- HTTP


async def read_body(request: Any, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, or ApiError 413 as soon as it is known to exceed `limit` (declared or streamed)."""
    too_large = f"the request body is too large (limit {limit:,} bytes)"
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "invalid Content-Length header")
        if int(declared) > limit:
            raise ApiError(413, f"{too_large}: Content-Length is {int(declared):,}", code="request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():  # chunked bodies carry no length: count as they come
        size += len(chunk)
        if size > limit:
            raise ApiError(413, too_large, code="request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def build_app(seed: int = 0, max_body_bytes: int = MAX_BODY_BYTES):
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def chat_completions(request: Request) -> JSONResponse:
        try:
            try:
                body = json.loads(await read_body(request, max_body_bytes))
            except (ValueError, RecursionError):
                raise ApiError(400, "the request body is not valid JSON") from None
            slow = (
                _SLOW.match(body.get("model", ""))
                if isinstance(body, dict) and isinstance(body.get("model"), str)
                else None
            )
            if slow:
                await asyncio.sleep(min(float(slow[1]), 600.0))
            return JSONResponse(completion(body, seed, request.headers.get("authorization", "")))
        except ApiError as exc:
            return JSONResponse(exc.body, status_code=exc.status)

    async def models(request: Request) -> JSONResponse:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "arena-policy-server"} for m in LISTED_MODELS]
        return JSONResponse({"object": "list", "data": data})

    async def not_found(request: Request, exc) -> JSONResponse:
        return JSONResponse(ApiError(404, f"no route {request.method} {request.url.path}").body, status_code=404)

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
        ],
        exception_handlers={404: not_found, 405: not_found},
    )


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket. Created with proto=IPPROTO_TCP so that asyncio sets TCP_NODELAY on accepted
    connections (it skips proto-0 sockets, and Nagle + delayed ACK would add ~40 ms to every reply)."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="arena policy-server",
        description="Offline OpenAI-compatible chat completions server whose models are deterministic trading "
        f"policies ({', '.join(POLICIES)}, auto) plus fault models for tests ({', '.join(FAULT_MODELS)}, slow-<seconds>). "
        "Point a chat node at it: deploy_chat_node.py --base-url http://HOST:PORT/v1 --model-id momentum",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    parser.add_argument(
        "--port", type=int, default=8100, help="port to listen on; 0 picks a free one (default %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for the random-walk policy (default %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    import uvicorn

    try:
        sock = listen(args.host, args.port)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(build_app(args.seed), log_level="warning", access_log=False, lifespan="off"))
    # uvicorn handles SIGINT/SIGTERM while serving, then re-raises the signal once it has stopped: a no-op
    # handler underneath makes that re-raise harmless, so Ctrl-C exits 0 without a traceback.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)

    async def run() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if server.started:
            print(
                f"policy server: base URL http://{args.host}:{port}/v1  models: {', '.join(LISTED_MODELS)}", flush=True
            )
            print(f"READY policy server on http://{args.host}:{port}/v1 (Ctrl-C to stop)", flush=True)
        await task

    asyncio.run(run())
    print("policy server stopped", flush=True)
    return 0
