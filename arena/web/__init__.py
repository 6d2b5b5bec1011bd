"""`arena web`: the live arena as a web page, with a JSON API beside it.

    arena web --bootstrap-servers localhost:9092 --port 8000     # then open http://127.0.0.1:8000/

Its own process: reads the arena's topics (no consumer group: any number of them, on any machine, each
sees the whole run), never the ledger, and cannot trade. Prints READY with the URL once it serves and
reads the broker. The page and the API: docs/WEB.md.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from arena.config import add_kafka_args, kafka_settings


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="arena web",
        description="Serve the live arena as one web page (leaderboard, equity curves, market, positions, fills and "
        "rejections, each agent's model chat, process health) and a JSON API (/api/leaderboard, /api/trades, "
        "/api/positions, /api/decisions?agent=, /api/equity; docs/WEB.md). Reads the arena's topics only: never the "
        "ledger, no tool calls. A page opened mid-run shows the whole run so far.",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; 0.0.0.0 to be reachable from other machines (default %(default)s)",
    )
    p.add_argument("--port", type=int, default=8000, help="port to listen on; 0 picks a free one (default %(default)s)")
    p.add_argument(
        "--max-quote-age",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="a quote older than this shows STALE, and a feed silent this long (or 3 snapshot intervals, "
        "if longer) shows FEED DOWN; match the tools process's --max-quote-age (default %(default)s)",
    )
    p.add_argument(
        "--connect-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="seconds to keep trying to reach the broker at start before giving up (default %(default)s)",
    )
    p.add_argument(
        "--log-level",
        default="WARNING",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level on stderr (default %(default)s)",
    )
    add_kafka_args(p)
    args = p.parse_args(argv)
    if not 0 <= args.port <= 65535:
        p.error("--port must be 0-65535")
    if args.max_quote_age <= 0:
        p.error("--max-quote-age must be positive")
    return args


def web_command(port: int, kafka_args: list[str]) -> list[str]:
    """The arguments `arena demo` starts the page with: on `port`, or on a free one when it is taken."""
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            port = 0
    return ["-m", "arena.cli", "web", *kafka_args, "--port", str(port)]


def web_url(log: str) -> str:
    """The page's URL from the web process's READY line (its log)."""
    for line in log.splitlines():
        if line.startswith("READY web arena on "):
            return line.split()[4]
    return "(see the web process's log)"


def status(msg: str) -> None:
    print(msg, flush=True)


async def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from arena.sim.policy import listen
    from arena.startup import StartupFailed, start_patiently
    from arena.web.server import Reader, build_app
    from arena.web.state import WebState

    kafka = kafka_settings(args)
    # A person reads this page: a fetch wait of at least 100 ms is live enough and polls the broker far less.
    fetch_wait = max(100, args.fetch_wait_ms)
    state = WebState(max_quote_age_s=args.max_quote_age)
    reader = Reader(kafka, state, fetch_wait_ms=fetch_wait)
    try:
        sock = listen(args.host, args.port)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    port = sock.getsockname()[1]
    host = args.host if args.host not in ("0.0.0.0", "::") else "127.0.0.1"
    url = f"http://{host}:{port}/"
    app = build_app(state)
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=2)
    )
    app.state.pushes.server = server
    stop = asyncio.Event()
    http = asyncio.create_task(server.serve(sockets=[sock]))
    stopper = asyncio.create_task(_stop_when(http, stop))

    status(f"Connecting to Kafka at {kafka.bootstrap_servers} ...")
    try:
        if not await start_patiently(
            reader.start, reader.stop, stop=stop, timeout_s=args.connect_timeout, what="the web reader", status=status
        ):
            server.should_exit = True
            await http
            return 0
    except StartupFailed as exc:
        status(f"error: {exc} (is Kafka reachable at {kafka.bootstrap_servers}?)")
        server.should_exit = True
        await http
        return 1
    follow = asyncio.create_task(reader.follow())
    while not server.started and not http.done():
        await asyncio.sleep(0.01)
    status(f"READY web arena on {url} (reading {kafka.bootstrap_servers}; Ctrl-C to stop)")
    code = 0
    done, _ = await asyncio.wait({http, follow}, return_when=asyncio.FIRST_COMPLETED)
    if follow in done and not follow.cancelled() and follow.exception() is not None:
        status(f"error: lost the broker: {follow.exception()!r}")
        code = 1
    app.state.pushes.closing = True
    app.state.pushes.wake()
    server.should_exit = True
    follow.cancel()
    stopper.cancel()
    await asyncio.gather(http, follow, stopper, return_exceptions=True)
    await reader.stop()
    status("web arena stopped")
    return code


async def _stop_when(http: asyncio.Task, stop: asyncio.Event) -> None:
    """uvicorn owns SIGINT/SIGTERM while it serves: its exit is our stop."""
    await asyncio.gather(http, return_exceptions=True)
    stop.set()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    # aiokafka logs every failed reconnect while the broker is away; the page says the feed is down instead.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    # uvicorn handles SIGINT/SIGTERM while serving, then re-raises the signal once it has stopped: a no-op
    # handler underneath makes that re-raise harmless, so Ctrl-C exits 0 without a traceback.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    try:
        return asyncio.run(serve(args))
    except KeyboardInterrupt:
        return 0
