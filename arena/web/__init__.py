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
import socket
import sys

from arena import service
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
    service.add_service_args(p)
    add_kafka_args(p)
    args = p.parse_args(argv)
    if not 0 <= args.port <= 65535:
        p.error("--port must be 0-65535")
    if args.max_quote_age <= 0:
        p.error("--max-quote-age must be positive")
    return args


def web_command(port: int, kafka_args: list[str]) -> list[str]:
    """The arguments `arena demo` starts the page with: on `port`, or on a free one when it is taken."""
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


class WebService(service.Service):
    """The page and its reader, run by arena.service: the HTTP server comes up beside connecting (a page
    opened early says the feed is not there yet); the reader follows the topics until stopped."""

    what = "the web arena"
    log = logging.getLogger("arena.web")
    outlives_its_broker = True  # a finished run stays on the page (FEED DOWN) after its broker stopped

    def __init__(self, args: argparse.Namespace, sock: socket.socket):
        import uvicorn

        from arena.web.server import Reader, build_app
        from arena.web.state import WebState

        super().__init__(kafka_settings(args), args.connect_timeout)
        # A person reads this page: a fetch wait of at least 100 ms is live enough and polls the broker far less.
        self.state = WebState(max_quote_age_s=args.max_quote_age)
        self.reader = Reader(self.kafka, self.state, fetch_wait_ms=max(100, args.fetch_wait_ms))
        self.sock = sock
        host = args.host if args.host not in ("0.0.0.0", "::") else "127.0.0.1"
        self.url = f"http://{host}:{sock.getsockname()[1]}/"
        self.app = build_app(self.state)
        # uvicorn also takes Ctrl-C/SIGTERM while it serves (and passes them on when it stops): either way the
        # runner's stop event is set, and the server is shut down last, in finish().
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=2)
        )
        self.app.state.pushes.server = self.server
        self.http: asyncio.Task | None = None
        self.follow: asyncio.Task | None = None
        self.failed: BaseException | None = None

    async def warm_up(self) -> None:
        """Serve the page while the reader connects; READY waits until it answers."""
        self.http = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        self.http.add_done_callback(lambda _: self.stop_requested.set())  # the server's exit is the part's stop
        while not self.server.started and not self.http.done():
            await asyncio.sleep(0.01)

    async def start(self) -> None:
        await self.reader.start()
        self.follow = asyncio.create_task(self.reader.follow())
        self.follow.add_done_callback(self._followed)

    def _followed(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:  # the reader gave up: the part ends
            self.failed = task.exception()
            self.stop_requested.set()

    async def stop(self) -> None:
        follow, self.follow = self.follow, None
        if follow is not None:
            follow.cancel()
            await asyncio.gather(follow, return_exceptions=True)
        await self.reader.stop()

    def abandon(self) -> None:
        self.sock.close()  # the fresh process listens on the same port

    def ready(self, elapsed_s: float) -> str:
        return f"READY web arena on {self.url} (reading {self.kafka.bootstrap_servers}; Ctrl-C to stop)"

    async def serve(self, stop: asyncio.Event) -> int:
        await stop.wait()
        if self.failed is not None:
            service.error(f"lost the broker: {self.failed!r}")
            return 1
        return 0

    def stopping(self) -> str | None:
        self.app.state.pushes.closing = True  # every page's stream ends: the server need not wait for them
        self.app.state.pushes.wake()
        return None

    async def finish(self, code: int, *, served: bool) -> int:
        self.server.should_exit = True
        if self.http is not None:
            await asyncio.gather(self.http, return_exceptions=True)
        if served:
            service.status("web arena stopped")
        return code


def build(argv: list[str] | None) -> WebService | int:
    from arena.sim.policy import listen

    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    service.quiet_libraries(args.log_level)
    # aiokafka logs every failed reconnect while the broker is away; the page says the feed is down instead.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        sock = listen(args.host, args.port)
    except OSError as exc:
        service.error(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
        return 1
    return WebService(args, sock)


def main(argv: list[str] | None = None) -> int:
    return service.main(lambda: build(argv))
