"""Deploy one named, stateless chat node: it serves model requests from any router over Kafka.

Routers think through it by name (RemoteChatModel in arena/chat.py). Start several replicas with the same
--name to share the load; any OpenAI-compatible provider works through --base-url.

  uv run deploy_chat_node.py --name gpt --model-id gpt-4o-mini                  # OpenAI, key from OPENAI_API_KEY
  uv run deploy_chat_node.py --name quant --model-id momentum --base-url http://127.0.0.1:8100/v1   # offline
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import warnings
from urllib.parse import urlsplit, urlunsplit

from arena.config import add_kafka_args, kafka_settings
from arena.reconnect import BrokerWatch, restart_in_place
from arena.startup import StartupFailed, start_patiently

OPENAI_URL = "https://api.openai.com/v1"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Run a named chat node: a stateless inference process serving model requests from routers over Kafka. "
        "Replicas started with the same --name share the requests.",
    )
    p.add_argument("--name", default="default", help="chat node name routers address it by (default %(default)s)")
    p.add_argument("--model-id", default="gpt-4o-mini", help="the provider's model id (default %(default)s)")
    p.add_argument(
        "--base-url",
        default=None,
        help="OpenAI-compatible API base URL, e.g. http://127.0.0.1:8100/v1 for `arena policy-server` (default: OpenAI)",
    )
    p.add_argument("--reasoning-effort", default=None, choices=["minimal", "low", "medium", "high"], help="reasoning effort for reasoning models (default: the provider's)")
    p.add_argument(
        "--api-key",
        default=None,
        help="provider API key (default: env OPENAI_API_KEY). Prefer the env var: a command line is visible to other users",
    )
    p.add_argument("--price-in", type=float, default=None, metavar="USD",
                   help="price of a million input (prompt) tokens, for the cost shown per agent; give --price-out too "
                   "(default: the model's published price from the genai-prices table, if it knows the model; the offline "
                   "policy server's models are charged a NOTIONAL $0.15 in / $0.60 out so the demo shows dollars; otherwise unknown, shown as —)")
    p.add_argument("--price-out", type=float, default=None, metavar="USD",
                   help="price of a million output (completion, including reasoning) tokens; give --price-in too")
    p.add_argument("--max-workers", type=int, default=8, help="provider requests in flight at once (default %(default)s)")
    p.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for the provider per request (default %(default)s)")
    p.add_argument("--max-retries", type=int, default=2, help="provider retries on 429/5xx/connection errors, with backoff (default %(default)s)")
    p.add_argument("--connect-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="seconds to keep trying to join the broker (not there yet, or just restarted) before giving up; once running, a broker that goes away is waited for without limit (default %(default)s)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log level, to stderr (default %(default)s)")
    add_kafka_args(p)
    args = p.parse_args(argv)
    if args.max_workers < 1:
        p.error("--max-workers must be at least 1")
    if args.timeout <= 0:
        p.error("--timeout must be positive")
    if not args.connect_timeout > 0:
        p.error("--connect-timeout must be positive")
    if args.max_retries < 0:
        p.error("--max-retries must be 0 or more")
    if (args.price_in is None) != (args.price_out is None):
        p.error("give both --price-in and --price-out, or neither")
    if any(x is not None and not 0 <= x < 1e6 for x in (args.price_in, args.price_out)):
        p.error("--price-in/--price-out are USD per million tokens: 0 or more")
    return args


def status(msg: str) -> None:
    print(msg, flush=True)


def display_url(url: str) -> str:
    """The URL without any user:password part."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        parts = parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else ""))
    return urlunsplit(parts)


async def run(args: argparse.Namespace, api_key: str | None) -> int:
    from arena.chat import ChatNode, provider_model, redact_url, warm_up
    from arena.pricing import Pricer

    model = provider_model(
        args.model_id, base_url=args.base_url, api_key=api_key, reasoning_effort=args.reasoning_effort,
        timeout_s=args.timeout, max_retries=args.max_retries,
    )
    url = redact_url(display_url(args.base_url or OPENAI_URL))
    node = ChatNode(
        args.name, model, kafka_settings(args), max_workers=args.max_workers, timeout_s=args.timeout, base_url=url,
        secrets=(api_key, urlsplit(args.base_url or "").password),
        pricer=Pricer(args.model_id, price_in=args.price_in, price_out=args.price_out, base_url=args.base_url or OPENAI_URL),
    )
    status(f"chat node '{args.name}' serving model {args.model_id} via base-url {url} (up to {args.max_workers} requests at once)")
    status(f"token prices: {node.pricer.describe()}")

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # A broker that goes away or comes back empty (in-memory) is met by restarting this process in place.
    watch = BrokerWatch(node.kafka, lambda why: (status(f"{why}: restarting chat node '{args.name}' in place"), stop.set()), stop=stop)

    async def attempt() -> None:
        await node.start(status)
        await watch.start()

    async def undo() -> None:
        await watch.stop()
        await node.stop()

    started = start_patiently(attempt, undo, stop=stop, timeout_s=args.connect_timeout, what=f"chat node '{args.name}'",
                              status=lambda msg: status(node.redact(msg)))
    try:
        up, _ = await asyncio.gather(started, asyncio.to_thread(warm_up, model))
    except StartupFailed as exc:
        print(f"error: {node.redact(str(exc))}", file=sys.stderr, flush=True)
        return 1
    if not up:  # Ctrl-C while connecting
        status(f"chat node '{args.name}' stopped before serving")
        return 0
    status(f"READY chat node '{args.name}' on topic {node.topic} (group {node.group_id}; Ctrl-C to stop)")
    stopping = asyncio.create_task(stop.wait())
    serving = asyncio.create_task(node.serve())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    failed = serving.done() and not serving.cancelled() and serving.exception() is not None
    if failed:  # the serve loop takes each request on its own and retries the broker: this is a bug, not input
        print(f"error: chat node '{args.name}' stopped serving: {node.redact(repr(serving.exception()))}", file=sys.stderr, flush=True)
    serving.cancel()
    await asyncio.gather(serving, return_exceptions=True)
    await watch.stop()
    if watch.replaced:  # every Kafka client here talks to a broker that is gone: nothing to stop gracefully
        restart_in_place(watch)
    status(f"stopping chat node '{args.name}' ...")
    await node.stop()
    status(f"chat node '{args.name}' stopped ({node.served} served, {node.failed} failed)")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("aiokafka", "httpx", "openai"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    if args.api_key:
        print("warning: --api-key on the command line is visible to other users of this machine; prefer env OPENAI_API_KEY", file=sys.stderr, flush=True)
    api_key = args.api_key or os.environ.get("OPENAI_API_KEY")
    if not api_key and args.base_url is None:
        print("error: no API key for OpenAI: set env OPENAI_API_KEY (or use --base-url for a local provider)", file=sys.stderr)
        return 2
    warnings.filterwarnings("ignore", message=r".*pydantic_graph.*")  # noise from calfkit's vendored pydantic-ai
    from arena.chat import check_name

    try:
        check_name(args.name)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(run(args, api_key))


if __name__ == "__main__":
    sys.exit(main())
