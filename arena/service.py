"""How every long-running part runs: one start/stop sequence for the tools process, chat nodes, agents
and the viewer.

A part is a `Service` (what to start, what to serve, what to say); `main(build)` runs it:

1. Ctrl-C or SIGTERM at any moment ends the part quietly with exit code 0: while the interpreter
   imports and `build` runs (before the event loop), while connecting, while serving (then as an
   orderly stop). One rule for every part.
2. Connect patiently (arena/startup.py): try each second until --connect-timeout, beside the part's
   own warm-up; the broker watch (arena/reconnect.py) starts just before the part's clients, so a broker
   that dies or is replaced while they start restarts the part in place like one lost while it serves.
3. Print the part's READY line, then serve until stopped.
4. Stop in one order: the broker watch first; if the broker was replaced, restart in place (nothing to
   stop gracefully on a broker that is gone); otherwise the part's stop line, its clients, its goodbye.
   A part that `outlives_its_broker` serves on while the broker is away and restarts in place when a
   broker answers again.

A supervisor (`arena up`, `arena demo`) runs the same way with two differences: it may own its broker
(`OwnBroker`: started first as its child, stopped last, and in place of the broker watch a watch on
that child, which starts a fresh broker on the same address should it die: the parts restart in place
on it by themselves), and between connecting and READY it `launch`es its children, which a stop
request cancels like connecting.

Only scripts and the supervisors' `main` call `main`; the parts themselves (ToolsService, ChatNode,
Router, ...) never print READY nor touch signals.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from arena.config import KafkaSettings
from arena.reconnect import BrokerWatch, restart_in_place
from arena.startup import StartupFailed, start_patiently

LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]
DEFAULT_LOG_LEVEL = "INFO"
# Chatty at INFO (a line per message, request or reconnect): shown only with --log-level DEBUG.
LIBRARY_LOGGERS = (
    "aiokafka",
    "faststream",
    "calfkit",
    "ktables",
    "httpx",
    "openai",
    "arena.router.faststream",
    "arena.tools.faststream",
)
DEFAULT_CONNECT_TIMEOUT_S = 60.0


def status(msg: str, on_lost: Callable[[], None] | None = None) -> None:
    """A status line on stdout, at once (a supervisor or test reads it while the part runs). A stdout
    that is gone (a hung-up terminal, a pipe whose reader quit) costs the line, never the part's orderly
    stop: it is pointed at /dev/null, and `on_lost()` is told."""
    try:
        print(msg, flush=True)
    except OSError:  # EIO from a hung-up terminal, EPIPE from a closed pipe
        from arena import lifeline

        lifeline.silence(1)
        if on_lost is not None:
            on_lost()


def error(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr, flush=True)


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def add_service_args(parser: argparse.ArgumentParser, *, log_level: bool = True, supervisor: bool = False) -> None:
    """The flags every long-running part shares (the broker's are arena.config.add_kafka_args); a
    `supervisor` (arena up, arena demo) starts its own broker, or reaches the cluster its file names."""
    parser.add_argument(
        "--connect-timeout",
        type=seconds,
        default=DEFAULT_CONNECT_TIMEOUT_S,
        metavar="SECONDS",
        help=(
            "seconds to keep trying to start the arena's own broker (or to reach the Kafka cluster the arena "
            "file names) before giving up; once running, its own broker is started again should it die"
            if supervisor
            else "seconds to keep trying to start (the broker not there yet, or just restarted) before giving up; "
            "once running, a broker that goes away is waited for without limit"
        )
        + " (default %(default)s)",
    )
    if log_level:
        parser.add_argument(
            "--log-level",
            default=DEFAULT_LOG_LEVEL,
            choices=LOG_LEVELS,
            help="level of the log messages on stderr; the libraries' own INFO messages (one per "
            "Kafka message or HTTP request) show only at DEBUG (default %(default)s)",
        )


def quiet_libraries(level: str | int) -> None:
    """The libraries log at WARNING unless the part logs at DEBUG."""
    level = logging.getLevelName(level) if isinstance(level, str) else level
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(level if level <= logging.DEBUG else max(logging.WARNING, level))


class Service:
    """One long-running part. Subclasses fill in start/stop/serve and the lines they say; `run` does
    the sequence. `stop_requested` is set by Ctrl-C, SIGTERM, a replaced broker, or the part itself."""

    what = "the part"  # in "could not start {what}" and "restarting {what} in place"
    restart_note = ""  # appended to the restart line, e.g. what survives the restart
    # A broker that goes away restarts the part in place at once, unless it outlives its broker: then its
    # clients stop (nothing of theirs reaches the next broker), it serves on with what it has (the web page
    # keeps a finished run on screen), and restarts in place once a broker answers again.
    outlives_its_broker = False
    stop_signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)  # each a quiet, orderly stop
    # False: no broker watch (a supervisor on a cluster it does not own: its children watch it themselves,
    # and restarting the supervisor in place would start them twice).
    watches_broker = True
    log = logging.getLogger("arena.service")

    def __init__(
        self,
        kafka: KafkaSettings | None,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        *,
        own_broker: OwnBroker | None = None,
    ):
        self.kafka = kafka  # with own_broker: set once that broker is up, before `start`
        self.connect_timeout_s = connect_timeout_s
        self.own_broker = own_broker
        self.stop_requested = asyncio.Event()

    # -- the part's own work --------------------------------------------------------------------

    async def start(self) -> None:
        """Open the part's clients and serve; called again (after `stop`) when an attempt failed."""

    async def stop(self) -> None:
        """Close whatever `start` opened; safe after a failed or partial start."""

    async def warm_up(self) -> None:
        """Work that runs beside connecting (e.g. loading a model), before READY."""

    async def launch(self) -> None:
        """Once connected, before READY: what needs the broker and is not retried (a supervisor's
        children). A stop request cancels it; an exception is a failed start (exit 1)."""

    async def broker_lost(self, why: str) -> None:
        """With own_broker: it died and a fresh one is about to start; close the clients on it."""

    async def broker_back(self) -> None:
        """With own_broker: the fresh broker answers (on the same address)."""

    async def serve(self, stop: asyncio.Event) -> int:
        """Run until `stop` is set; the exit code. An exception is logged and exits 1."""
        await stop.wait()
        return 0

    def abandon(self) -> None:
        """Before a restart in place: release what the fresh process must find free (a ledger lock)."""

    # -- what it says ---------------------------------------------------------------------------

    def say(self, msg: str) -> None:
        """How the runner prints a status line (a supervisor prefixes its own and minds a lost stdout)."""
        status(self.redact(msg))

    def redact(self, text: str) -> str:
        """Every line the runner prints passes here (a part with secrets in its errors hides them)."""
        return text

    def connecting(self) -> str | None:
        return f"Connecting to Kafka at {self.kafka.bootstrap_servers} ..."

    def ready(self, elapsed_s: float) -> str | None:
        """The READY line (None: say nothing, e.g. when a dashboard has the screen)."""
        raise NotImplementedError

    def startup_failed(self, exc: StartupFailed) -> None:
        error(self.redact(f"{exc} (is Kafka reachable at {self.kafka.bootstrap_servers}?)"))

    def interrupted(self) -> None:
        """Ctrl-C while connecting (everything started is stopped already)."""

    def launch_failed(self, exc: Exception) -> None:
        error(self.redact(f"could not start {self.what}: {exc}"))

    def serve_failed(self, exc: Exception) -> None:
        self.log.exception("%s failed", self.what)
        error(self.redact(f"{self.what} stopped: {exc}"))

    def stopping(self) -> str | None:
        return None

    async def finish(self, code: int, *, served: bool) -> int:
        """After the part is stopped (served: READY was printed); prints any goodbye; the exit code."""
        return code


class OwnBroker:
    """The embedded broker a supervisor starts as its child (`Service(own_broker=...)`): the first start
    takes a free port, and a restart keeps the address the parts know. As the supervisor's broker watch
    it checks that the child lives; should it die, the supervisor is told (`broker_lost`), a fresh, empty
    broker starts on the same address, and the supervisor is told again (`broker_back`). The parts on it
    notice for themselves and restart in place (arena/reconnect.py). The broker dies with its owner,
    however that ends (arena/broker.py: PR_SET_PDEATHSIG)."""

    CHECK_S = 0.2

    def __init__(self, log_path: Path):
        self.log_path = log_path
        self.broker = None  # arena.broker.EmbeddedBroker, once started
        self.restarts = 0

    @property
    def kafka(self) -> KafkaSettings:
        return KafkaSettings(bootstrap_servers=self.broker.bootstrap)

    async def start(self) -> None:
        """Start the broker and wait until it answers (a port lost to a race is tried again by the runner)."""
        from arena.broker import EmbeddedBroker, free_port

        port = self.broker.port if self.restarts else free_port()
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the descriptor
            self.broker = EmbeddedBroker("127.0.0.1", port, log=log).start()
        try:
            await self.broker.wait_ready()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.broker is not None:
            self.broker.stop()

    def watch(self, service: Service) -> _OwnBrokerWatch:
        return _OwnBrokerWatch(self, service)


class _OwnBrokerWatch:
    """The broker watch of a supervisor that owns its broker: a watch on the child (see OwnBroker)."""

    def __init__(self, own: OwnBroker, service: Service):
        self.own, self.service = own, service
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._watch(), name="own-broker-watch")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _watch(self) -> None:
        own, service, stop = self.own, self.service, self.service.stop_requested
        while not stop.is_set():
            await asyncio.sleep(own.CHECK_S)
            code = own.broker.proc.poll()
            if code is None or stop.is_set():
                continue
            why = f"the Kafka broker at {own.broker.bootstrap} exited (code {code})"
            service.say(f"{why}: starting a fresh one on the same address; every part restarts on it")
            await service.broker_lost(why)
            own.restarts += 1
            try:
                await own.start()
            except Exception as exc:
                service.say(f"error: could not start a fresh broker: {exc}")
                service.stop_requested.set()
                return
            await service.broker_back()
            service.say(f"broker ready again on {own.broker.bootstrap} (restart {own.restarts})")


class _Unwatched:
    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


async def unless_stopped(work: Awaitable[object], stop: asyncio.Event) -> bool:
    """Run `work` until it ends (True; its exception raised) or `stop` is set (False, `work` cancelled)."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if task.done():
        task.result()
        return True
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return False


async def run(service: Service) -> int:
    """Connect, launch, READY, serve, stop (see the module doc). The exit code."""
    stop = service.stop_requested
    loop = asyncio.get_running_loop()
    for sig in service.stop_signals:
        loop.add_signal_handler(sig, stop.set)
    say = service.say
    own = service.own_broker

    restarting: list[str] = []

    def replaced(why: str) -> None:
        restarting.append(why)
        say(f"{why}: restarting {service.what} in place{service.restart_note}")
        stop.set()

    async def lost(why: str) -> None:  # a part that outlives its broker
        say(f"{why}: {service.what} serves on with what it has until a broker answers")
        await service.stop()
        while not stop.is_set():
            probe = BrokerWatch(service.kafka, lambda _: None)
            try:
                await probe.start()
            except Exception:  # nobody there yet
                await asyncio.sleep(0.5)
                continue
            finally:
                await probe.stop()
            replaced(f"a Kafka broker answers at {service.kafka.bootstrap_servers} again")
            return

    # A broker that goes away or comes back empty (in-memory) is met by restarting this process in place;
    # a supervisor's own broker is restarted instead (OwnBroker).
    if own is not None:
        watch = own.watch(service)
    elif not service.watches_broker:
        watch = _Unwatched()
    else:
        watch = BrokerWatch(service.kafka, replaced, on_lost=lost if service.outlives_its_broker else None, stop=stop)

    async def attempt() -> None:
        if own is not None:  # first up, last down
            await own.start()
            service.kafka = own.kafka
            await service.start()
            await watch.start()
            return
        # The watch first: it knows the broker the part's clients start on, so one that dies or is replaced
        # while they start (or before READY) restarts the part, instead of being taken for the one they know.
        await watch.start()
        await service.start()
        await _hold_before_ready()

    async def undo() -> None:
        await watch.stop()
        if restarting:  # the broker is gone: nothing to stop gracefully (see below)
            return
        await service.stop()
        if own is not None:
            own.close()

    if line := service.connecting():
        say(line)
    began = loop.time()
    try:
        up, _ = await asyncio.gather(
            start_patiently(
                attempt, undo, stop=stop, timeout_s=service.connect_timeout_s, what=service.what, status=say
            ),
            service.warm_up(),
        )
    except StartupFailed as exc:
        service.startup_failed(exc)
        return await service.finish(1, served=False)
    if not up:
        if restarting:  # the broker went away while the part started
            service.abandon()
            restart_in_place(watch)
        service.interrupted()
        return await service.finish(0, served=False)
    code = 0
    try:
        launched = await unless_stopped(service.launch(), stop)
    except Exception as exc:
        service.launch_failed(exc)
        launched, code = False, 1
    if launched:
        if line := service.ready(loop.time() - began):
            say(line)
        try:
            code = await service.serve(stop)
        except Exception as exc:
            service.serve_failed(exc)
            code = 1
    await watch.stop()
    if restarting:  # every Kafka client here talks to a broker that is gone: nothing to stop gracefully
        service.abandon()
        restart_in_place(watch)
    if line := service.stopping():
        say(line)
    await service.stop()
    if own is not None:
        own.close()
    return await service.finish(code, served=launched)


HOLD_ENV = "ARENA_TEST_HOLD_STARTED"  # a test hook: a file path (see _hold_before_ready)


async def _hold_before_ready() -> None:
    """For a test: with HOLD_ENV set, once the part has started (its clients up, READY not yet printed)
    say HOLD_ENV and wait until the file it names exists. Once per process: a restart in place does not hold."""
    path = os.environ.pop(HOLD_ENV, None)
    if path:
        status(f"{HOLD_ENV}: holding")
        while not os.path.exists(path):
            await asyncio.sleep(0.05)


def own_signals() -> None:
    """Until the event loop takes the signals over, SIGTERM ends the part like Ctrl-C: quietly. SIGINT too,
    whatever the process inherited or an imported module installed."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def main(build: Callable[[], Service | int]) -> int:
    """A script's whole life: `build()` (parse flags, set up logging, slow imports: none of it on the
    connect timeout's clock) returns the Service, or an exit code to stop at once; then `run` it."""
    own_signals()
    try:
        service = build()
        if isinstance(service, int):
            return service
        code = asyncio.run(run(service))
    except KeyboardInterrupt:  # a signal before the loop's handlers were installed
        return 0
    except RuntimeError as exc:
        # The same signal landing in a class body's __set_name__ while a module imports: Python 3.11
        # raises it wrapped ("Error calling __set_name__ ..."), seen inside uvicorn's import.
        if isinstance(exc.__cause__, KeyboardInterrupt):
            return 0
        raise
    # All is flushed and closed: spare the interpreter's final garbage collection of this large heap
    # (calfkit, pydantic), which only delays the exit (docs/RELIABILITY.md).
    gc.freeze()
    return code
