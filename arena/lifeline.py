"""Children that end with the process that started them.

A part that `arena demo` starts must not outlive it, however the demo ends (kill -9 included). Two
mechanisms, because each has a gap:

- PR_SET_PDEATHSIG (Linux): the kernel signals the child when the *thread* that forked it exits, and it
  does nothing for a process that part starts in turn, or for a fork whose parent died before the
  child set it.
- a parent watch: the supervisor names itself in ARENA_PARENT_PID (pid and start time, so a recycled
  pid is not mistaken for it); a thread in the child checks every half second that this process still
  lives, also in anything the child starts (the variable is inherited). When it is gone the child is
  asked to stop as on SIGTERM and, should a graceful stop hang (a broker that went away with the
  parent), ends for good GRACE_S later.

Supervised children run as `python -m arena.lifeline SCRIPT|-m MODULE ARGS...`, which holds the
lifeline and then runs the part exactly as `python SCRIPT ARGS...` would (a restart in place re-runs
the same command line, lifeline included). A part started by hand has no ARENA_PARENT_PID and runs
as before. The demo side also tells when its own stdout is gone (`output_gone`): the reader of its
pipe went away, or its terminal hung up.
"""

from __future__ import annotations

import os
import runpy
import select
import signal
import sys
import threading
import time
from pathlib import Path

PARENT_ENV = "ARENA_PARENT_PID"
GRACE_S = 5.0  # from "parent gone" to a hard exit, for a graceful stop that does not finish
CHECK_S = 0.5


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Linux: this process gets `sig` when the thread that started it dies (even by kill -9). Safe as a
    Popen preexec_fn; a no-op elsewhere."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(sig))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks) of a process, from /proc; None if there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # the name in parentheses may hold spaces
    return fields[0], fields[19]


def identity(pid: int | None = None) -> str:
    """How a child names its parent in ARENA_PARENT_PID: "pid:start-time" (just "pid" without /proc)."""
    pid = os.getpid() if pid is None else pid
    st = _stat(pid)
    return f"{pid}:{st[1]}" if st else str(pid)


def alive(ident: str) -> bool:
    """Whether the process named by `identity()` still runs (a zombie does not)."""
    pid_s, _, started = ident.partition(":")
    pid = int(pid_s)
    if not Path("/proc/self/stat").exists():  # no /proc: only whether the pid exists
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X", "x") and (not started or st[1] == started)


def hold(grace_s: float = GRACE_S) -> None:
    """In a process started under ARENA_PARENT_PID: end when that parent is gone (see the module doc).
    Without the variable (a part started by hand) nothing happens."""
    ident = os.environ.get(PARENT_ENV)
    if not ident:
        return
    die_with_parent(signal.SIGTERM)
    if not alive(ident):  # it died before the line above took effect: the kernel will not tell us
        _say(ident)
        sys.exit(1)
    threading.Thread(target=_watch, args=(ident, grace_s), name="lifeline", daemon=True).start()


def _watch(ident: str, grace_s: float) -> None:
    while alive(ident):
        time.sleep(CHECK_S)
    _say(ident)
    os.kill(os.getpid(), signal.SIGTERM)  # stop as asked to (no-op if PDEATHSIG did it already)
    time.sleep(grace_s)
    os._exit(1)


def _say(ident: str) -> None:
    try:
        print(f"lifeline: parent process {ident.partition(':')[0]} is gone; stopping", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def output_gone(fd: int) -> bool:
    """Whether writing to `fd` can only fail: a pipe whose reader is gone, a terminal that hung up. A full
    pipe, a file or /dev/null are not gone."""
    try:
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        events = poller.poll(0)
    except (OSError, ValueError, AttributeError):
        return False
    return any(ev & (select.POLLERR | select.POLLHUP | select.POLLNVAL) for _, ev in events)


def silence(fd: int) -> None:
    """Point `fd` at /dev/null, so later writes (and the interpreter's last flush) go nowhere quietly."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def command(script_args: list[str]) -> list[str]:
    """The command line that runs `python SCRIPT_ARGS...` under the lifeline."""
    return [sys.executable, "-m", "arena.lifeline", *script_args]


def main() -> None:
    args = sys.argv[1:]
    if not args:
        sys.exit("usage: python -m arena.lifeline SCRIPT|-m MODULE [ARGS...]")
    hold()
    if args[0] == "-m":
        sys.argv = [args[1], *args[2:]]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = args
        sys.path[0] = str(Path(args[0]).resolve().parent)  # as `python SCRIPT` would have it
        runpy.run_path(args[0], run_name="__main__")


if __name__ == "__main__":
    main()
