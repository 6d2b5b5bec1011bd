"""Deploy one named, stateless chat node: it serves model requests from any router over Kafka.

Routers think through it by name (RemoteChatModel in arena/chat/client.py). Start several replicas with the same
--name to share the load; any OpenAI-compatible provider works through --base-url.

  uv run deploy_chat_node.py --name gpt --model-id gpt-4o-mini                  # OpenAI, key from OPENAI_API_KEY
  uv run deploy_chat_node.py --name quant --model-id momentum --base-url http://127.0.0.1:8100/v1   # offline
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from urllib.parse import urlsplit, urlunsplit

from arena import service
from arena.config import add_kafka_args, kafka_settings

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
    p.add_argument(
        "--reasoning-effort",
        default=None,
        choices=["minimal", "low", "medium", "high"],
        help="reasoning effort for reasoning models (default: the provider's)",
    )
    p.add_argument(
        "--api-key",
        default=None,
        help="provider API key (default: env OPENAI_API_KEY). Prefer the env var: a command line is visible to other users",
    )
    p.add_argument(
        "--price-in",
        type=float,
        default=None,
        metavar="USD",
        help="price of a million input (prompt) tokens, for the cost shown per agent; give --price-out too "
        "(default: the model's published price from the genai-prices table, if it knows the model; the offline "
        "policy server's models are charged a NOTIONAL $0.15 in / $0.60 out so the demo shows dollars; otherwise unknown, shown as —)",
    )
    p.add_argument(
        "--price-out",
        type=float,
        default=None,
        metavar="USD",
        help="price of a million output (completion, including reasoning) tokens; give --price-in too",
    )
    p.add_argument(
        "--max-workers", type=int, default=8, help="provider requests in flight at once (default %(default)s)"
    )
    p.add_argument(
        "--timeout", type=float, default=90.0, help="seconds to wait for the provider per request (default %(default)s)"
    )
    p.add_argument(
        "--max-retries",
        type=int,
        default=2,
        help="provider retries on 429/5xx/connection errors, with backoff (default %(default)s)",
    )
    service.add_service_args(p)
    add_kafka_args(p)
    args = p.parse_args(argv)
    if args.max_workers < 1:
        p.error("--max-workers must be at least 1")
    if args.timeout <= 0:
        p.error("--timeout must be positive")
    if args.max_retries < 0:
        p.error("--max-retries must be 0 or more")
    if (args.price_in is None) != (args.price_out is None):
        p.error("give both --price-in and --price-out, or neither")
    if any(x is not None and not 0 <= x < 1e6 for x in (args.price_in, args.price_out)):
        p.error("--price-in/--price-out are USD per million tokens: 0 or more")
    return args


def display_url(url: str) -> str:
    """The URL without any user:password part."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        parts = parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else ""))
    return urlunsplit(parts)


class ChatNodeService(service.Service):
    """One chat node, run by arena.service: serves beside the model's warm-up; secrets never printed."""

    def __init__(self, args: argparse.Namespace, api_key: str | None):
        from arena.chat import ChatNode, provider_model, redact_url
        from arena.pricing import Pricer

        super().__init__(kafka_settings(args), args.connect_timeout)
        self.name, self.what = args.name, f"chat node '{args.name}'"
        self.model = provider_model(
            args.model_id,
            base_url=args.base_url,
            api_key=api_key,
            reasoning_effort=args.reasoning_effort,
            timeout_s=args.timeout,
            max_retries=args.max_retries,
        )
        url = redact_url(display_url(args.base_url or OPENAI_URL))
        self.node = ChatNode(
            args.name,
            self.model,
            self.kafka,
            max_workers=args.max_workers,
            timeout_s=args.timeout,
            base_url=url,
            secrets=(api_key, urlsplit(args.base_url or "").password),
            pricer=Pricer(
                args.model_id, price_in=args.price_in, price_out=args.price_out, base_url=args.base_url or OPENAI_URL
            ),
        )
        self.serving = (
            f"chat node '{args.name}' serving model {args.model_id} via base-url {url} (up to {args.max_workers} requests at once);"
            f" token prices: {self.node.pricer.describe()}"
        )

    async def start(self) -> None:
        await self.node.start(lambda msg: service.status(self.redact(msg)))

    async def stop(self) -> None:
        await self.node.stop()

    async def warm_up(self) -> None:
        from arena.chat import warm_up

        await asyncio.to_thread(warm_up, self.model)

    def redact(self, text: str) -> str:
        return self.node.redact(text)

    def connecting(self) -> str:
        return self.serving

    def ready(self, elapsed_s: float) -> str:
        return f"READY chat node '{self.name}' on topic {self.node.topic} (group {self.node.group_id}; Ctrl-C to stop)"

    def startup_failed(self, exc) -> None:
        service.error(self.redact(str(exc)))

    def interrupted(self) -> None:
        service.status(f"chat node '{self.name}' stopped before serving")

    async def serve(self, stop: asyncio.Event) -> int:
        stopping = asyncio.create_task(stop.wait())
        serving = asyncio.create_task(self.node.serve())
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        failed = serving.done() and not serving.cancelled() and serving.exception() is not None
        if failed:  # the serve loop takes each request on its own and retries the broker: this is a bug, not input
            service.error(f"chat node '{self.name}' stopped serving: {self.redact(repr(serving.exception()))}")
        for task in (serving, stopping):
            task.cancel()
        await asyncio.gather(serving, stopping, return_exceptions=True)
        return 1 if failed else 0

    def stopping(self) -> str:
        return f"stopping chat node '{self.name}' ..."

    async def finish(self, code: int, *, served: bool) -> int:
        if served:
            service.status(f"chat node '{self.name}' stopped ({self.node.served} served, {self.node.failed} failed)")
        return code


def build(argv: list[str] | None) -> ChatNodeService | int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    service.quiet_libraries(args.log_level)
    if args.api_key:
        print(
            "warning: --api-key on the command line is visible to other users of this machine; prefer env OPENAI_API_KEY",
            file=sys.stderr,
            flush=True,
        )
    api_key = args.api_key or os.environ.get("OPENAI_API_KEY")
    if not api_key and args.base_url is None:
        service.error("no API key for OpenAI: set env OPENAI_API_KEY (or use --base-url for a local provider)")
        return 2
    from arena.chat import check_name

    try:
        check_name(args.name)
    except ValueError as exc:
        service.error(str(exc))
        return 2
    return ChatNodeService(args, api_key)


def main(argv: list[str] | None = None) -> int:
    return service.main(lambda: build(argv))


if __name__ == "__main__":
    sys.exit(main())
