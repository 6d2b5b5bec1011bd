"""Coinbase market data -> one MarketSnapshot per interval on the market topic.

Live: the Advanced Trade WebSocket (ticker + heartbeats) for bid/ask and public REST for candles.
Point --ws-url/--rest-url at `arena market-sim` to run offline, or use --replay to publish a recording.
Another venue: --exchange NAME (adapters live in arena/exchanges/).

    uv run coinbase_connector.py                          # live Coinbase, a snapshot every 60 s
    uv run coinbase_connector.py --interval 10 --record market.jsonl
    uv run coinbase_connector.py --replay assets/sample_recording.jsonl --speed 0
"""

from __future__ import annotations

import signal
import sys

# Ctrl-C or SIGTERM while the imports below are still loading (seconds on a busy machine): leave quietly.
# Only when run as the connector: a module that imports this one keeps its own handlers.
if __name__ == "__main__":
    for _sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(_sig, lambda *_: sys.exit(0))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import logging  # noqa: E402
from pathlib import Path  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

from arena import exchanges  # noqa: E402
from arena.config import MARKET_TOPIC, add_kafka_args, kafka_settings  # noqa: E402
from arena.exchanges.coinbase.protocol import product_list  # noqa: E402
from arena.feed import FeedConfig, FeedError, run  # noqa: E402
from arena.market import DEFAULT_PRODUCTS  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=f"Publish Coinbase market snapshots (quotes with bid/ask, candles) to Kafka topic {MARKET_TOPIC}. "
        "With env ARENA_FEED_KEY set, every snapshot is signed (HMAC-SHA256 in an arena-sig header) and readers "
        "started with the same key drop any snapshot that is not.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n" + __doc__.split("\n\n", 2)[2],
    )
    p.add_argument("--exchange", default=exchanges.DEFAULT_EXCHANGE, choices=exchanges.names(),
                   help="venue to read market data from (default %(default)s)")  # fmt: skip
    p.add_argument("--interval", type=float, default=60.0, help="seconds between snapshots (default %(default)s)")
    p.add_argument(
        "--products",
        nargs="+",
        default=list(DEFAULT_PRODUCTS),
        metavar="ID",
        help=f"product ids, space or comma separated (default {' '.join(DEFAULT_PRODUCTS)})",
    )
    cb = exchanges.get(exchanges.DEFAULT_EXCHANGE)
    p.add_argument(
        "--ws-url", help=f"market data WebSocket (default: the exchange's own, {cb.ws_url_default} for {cb.name})"
    )
    p.add_argument(
        "--rest-url",
        help=f"REST base URL for products, candles and top of book (default: the exchange's own, {cb.rest_url_default} for {cb.name})",
    )
    p.add_argument(
        "--max-quote-age",
        type=float,
        default=30.0,
        help="a product without a fresh bid/ask for this many seconds is sent with stale=true; quiet products are "
        "topped up from the REST top of book after half of it (default %(default)s)",
    )
    p.add_argument(
        "--candle-refresh",
        type=float,
        default=60.0,
        help="seconds between candle refreshes over REST (default %(default)s)",
    )
    p.add_argument(
        "--watchdog",
        type=float,
        default=10.0,
        help="reconnect when the WebSocket is silent this many seconds; heartbeats come every second (default %(default)s)",
    )
    p.add_argument(
        "--record", type=Path, metavar="PATH", help="append every published snapshot to this JSON-lines file"
    )
    p.add_argument("--replay", type=Path, metavar="PATH", help="publish a recording instead of connecting, then exit")
    p.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="replay speed: 2 = twice as fast, 0 = as fast as possible (default %(default)s)",
    )
    p.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level (default %(default)s)",
    )
    add_kafka_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("interval", "max_quote_age", "candle_refresh", "watchdog"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0")
    if args.speed < 0:
        parser.error("--speed must be >= 0")
    if args.ws_url is not None and urlsplit(args.ws_url).scheme not in ("ws", "wss"):
        parser.error(f"--ws-url must start with ws:// or wss://, got {args.ws_url!r}")
    if args.rest_url is not None and urlsplit(args.rest_url).scheme not in ("http", "https"):
        parser.error(f"--rest-url must start with http:// or https://, got {args.rest_url!r}")
    if args.replay and not args.replay.is_file():
        parser.error(f"--replay: no such file {args.replay}")
    products = product_list(args.products)
    if not products:
        parser.error("--products needs at least one product id")

    logging.basicConfig(
        stream=sys.stdout, level=args.log_level, format="%(asctime)s %(levelname)-7s %(message)s", datefmt="%H:%M:%S"
    )
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # we report its connection and publish failures ourselves
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    venue = exchanges.create(args.exchange, exchanges.VenueOptions(
        ws_url=args.ws_url, rest_url=args.rest_url and args.rest_url.rstrip("/"),
        max_quote_age=args.max_quote_age, candle_refresh=args.candle_refresh, watchdog=args.watchdog,
    ))  # fmt: skip
    cfg = FeedConfig(products=products, interval=args.interval, max_quote_age=args.max_quote_age)
    every = "from a recording" if args.replay else f"every {args.interval:g}s"
    ready = lambda: print(f"READY: publishing market snapshots to {MARKET_TOPIC} {every}", flush=True)  # noqa: E731
    try:
        return asyncio.run(serve(kafka_settings(args), cfg, venue, ready, args))
    except FeedError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1


async def serve(settings, cfg: FeedConfig, venue: exchanges.Exchange, ready, args: argparse.Namespace) -> int:
    """The feed until SIGINT/SIGTERM."""
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    return await run(
        settings, cfg, venue, stop=stop, on_first=ready, record=args.record, replay_path=args.replay, speed=args.speed
    )


if __name__ == "__main__":
    sys.exit(main())
