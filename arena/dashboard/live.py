"""The live dashboard: full screen at a fixed cadence, logs sent to a file while it is up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from rich.console import Console, Group, RenderableType
from rich.text import Text

from arena.dashboard.export import leaderboard, write_export
from arena.dashboard.layout import final_standings_table, render
from arena.dashboard.state import ArenaState
from arena.portfolio import Account

log = logging.getLogger("arena.dashboard")  # one logger for the package


@contextlib.contextmanager
def logs_to_file(path: str) -> Iterator[None]:
    """While active, every log record and stray stderr write goes to `path` instead of the terminal;
    the original handlers come back afterwards."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    terminal_streams = {sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__}
    loggers = [logging.getLogger()] + [
        lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    swapped: list[tuple[logging.Logger, logging.Handler, int]] = []
    for lg in loggers:
        for i, h in enumerate(list(lg.handlers)):
            if type(h) is logging.StreamHandler or (
                isinstance(h, logging.StreamHandler)
                and not isinstance(h, logging.FileHandler)
                and getattr(h, "stream", None) in terminal_streams
            ):
                swapped.append((lg, h, i))
                lg.handlers[i] = handler
    root = logging.getLogger()
    added_root = handler not in root.handlers
    if added_root:  # records reaching the root with no handler would go to stderr via lastResort
        root.addHandler(handler)
    try:
        with open(path, "a", encoding="utf-8", buffering=1) as stream, contextlib.redirect_stderr(stream):
            yield
    finally:
        for lg, h, i in swapped:
            if i < len(lg.handlers) and lg.handlers[i] is handler:
                lg.handlers[i] = h
            else:
                lg.addHandler(h)
        if added_root and handler in root.handlers:
            root.removeHandler(handler)
        handler.close()


class LiveDashboard:
    """The dashboard in the terminal's alternate screen, redrawn at a fixed cadence from the terminal's
    current size (so a resize re-lays out on the next frame). While it is up, logs go to the state's
    log file. On a non-terminal stdout nothing is drawn; the history and export still run."""

    def __init__(
        self,
        state: ArenaState,
        accounts: Callable[[], dict[str, Account]],
        *,
        console: Console | None = None,
        refresh_per_second: float = 2.0,  # capped at 4; the data changes every few seconds, so 2 looks live and costs half
        export_every_s: float = 5.0,
        print_final: bool = True,
    ):
        self.state = state
        self.accounts = accounts
        # Pin the real stdout: stderr/log redirection while live must not capture the screen itself.
        self.console = console or Console(file=sys.stdout)
        self.period = 1.0 / min(4.0, max(0.2, refresh_per_second))
        self.export_every_s = export_every_s
        self.print_final = print_final
        if state.log_path is None:
            state.log_path = os.path.join(tempfile.gettempdir(), f"arena-dashboard-{os.getpid()}.log")
        self.frames = 0
        self.tick_s = 0.0  # time spent sampling + rendering + drawing; tick_s / frames is the cost per frame

    def frame(self) -> RenderableType:
        """Sample the history and build one screen for the console's current size."""
        accounts = self.accounts()
        self.state.sample(accounts)
        size = self.console.size
        return render(self.state, accounts, size.width, size.height)

    def export(self) -> None:
        if self.state.export_path:
            try:
                write_export(self.state.export_path, leaderboard(self.state, self.accounts()))
            except OSError as e:
                log.warning("could not write the standings export %s: %s", self.state.export_path, e)

    async def run(self, stop: asyncio.Event) -> None:
        """Show the dashboard until `stop` is set (or the task is cancelled); then leave the alternate
        screen, restore logging, write the export and print the final standings."""
        loop = asyncio.get_running_loop()
        live_screen = self.console.is_terminal and not self.console.is_dumb_terminal
        next_export = loop.time() + self.export_every_s
        try:
            if live_screen:
                from rich.live import Live

                with (
                    logs_to_file(self.state.log_path),
                    Live(
                        console=self.console,
                        screen=True,
                        auto_refresh=False,
                        redirect_stdout=False,
                        redirect_stderr=False,
                    ) as live,
                    self._redraw_on_resize(lambda: live.update(self.frame(), refresh=True)),
                ):
                    await self._loop(stop, lambda: live.update(self.frame(), refresh=True), next_export)
            else:
                await self._loop(stop, lambda: self.state.sample(self.accounts()), next_export)
        finally:
            self.export()
            if self.print_final:
                self.console.print(self.final_standings())

    @contextlib.contextmanager
    def _redraw_on_resize(self, redraw: Callable[[], object]) -> Iterator[None]:
        """Redraw as soon as the terminal is resized (SIGWINCH) instead of at the next tick."""
        loop = asyncio.get_running_loop()
        sig = getattr(signal, "SIGWINCH", None)
        try:
            if sig is not None:
                loop.add_signal_handler(sig, redraw)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or not Unix
            sig = None
        try:
            yield
        finally:
            if sig is not None:
                loop.remove_signal_handler(sig)

    async def _loop(self, stop: asyncio.Event, tick: Callable[[], object], next_export: float) -> None:
        loop = asyncio.get_running_loop()
        next_frame = loop.time()
        while not stop.is_set():
            started = time.perf_counter()
            tick()
            self.tick_s += time.perf_counter() - started
            self.frames += 1
            if loop.time() >= next_export:
                self.export()
                next_export = loop.time() + self.export_every_s
            next_frame += self.period
            if next_frame < loop.time():  # fell behind (slow render): keep the cadence, skip frames
                next_frame = loop.time() + self.period
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=next_frame - loop.time())

    def final_standings(self) -> RenderableType:
        parts: list[RenderableType] = [final_standings_table(self.state, self.accounts())]
        notes = Text(style="grey62")
        if self.state.export_path:
            notes.append("Standings exported to ")
            notes.append(str(self.state.export_path), style="bold")
            notes.append("\n")
        notes.append("Logs of this run: ")
        notes.append(str(self.state.log_path), style="bold")
        parts.append(notes)
        return Group(*parts)
