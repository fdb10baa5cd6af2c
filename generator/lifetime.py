"""How processes end: workers that die with their parent, SIGTERM taken like Ctrl-C, and files named
after the process that owns them, so that what a killed process left behind can be swept later.

- die_with_parent(pid): in a child, SIGKILL it when the parent dies (prctl PR_SET_PDEATHSIG), and
  exit at once if the parent is already gone; SIGTERM back to the default (a forked child inherits
  the parent's Python handler, which would print a second "terminated" line).
- Terminated: raised in the main thread by SIGTERM while a CLI runs (generator.cli.run_main), a
  KeyboardInterrupt so that every `finally` and `except KeyboardInterrupt` cleans up as for Ctrl-C.
- owned_name / sweep_dead: a temporary's name carries the host and pid of its writer; a later run
  removes those whose writer (on this host) is dead. A kill -9 runs no cleanup: this is what does.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import socket
import threading
from pathlib import Path

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: unwind as for Ctrl-C, then exit 143 (128 + 15)."""


def die_with_parent(parent: int) -> None:
    """Call first thing in a child process: it is SIGKILLed when `parent` dies (when the thread that
    started it ends, strictly: start workers from a thread that outlives them, as the main thread
    does), and exits now if `parent` is already gone (it died before prctl took effect)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # see started_quietly
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the parent's pipes closing still ends the child
        pass
    if os.getppid() != parent:
        os._exit(1)


@contextlib.contextmanager
def started_quietly():
    """Around starting a child that calls die_with_parent: SIGTERM stays blocked across the fork (and
    exec) until the child has dropped the parent's handler, which it would otherwise run."""
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


@contextlib.contextmanager
def sigterm_as_interrupt():
    """While inside, SIGTERM raises Terminated in the main thread (elsewhere: left as it is)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def owner_tag() -> str:
    """host-pid of this process, as owned_name puts it in names."""
    return f"{socket.gethostname()}-{os.getpid()}"


def owned_name(prefix: str) -> str:
    """`prefix` + host-pid: a name sweep_dead(directory, prefix) recognises once its owner is dead."""
    return f"{prefix}{owner_tag()}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def sweep_dead(directory, prefix: str, suffix: str = "") -> list[Path]:
    """Remove the files `prefix`host-pid`suffix` in `directory` whose owner ran on this host and is
    dead (another host's files may belong to a live process there; they are left). Returns them."""
    pattern = re.compile(re.escape(prefix) + r"(?P<host>.+)-(?P<pid>\d+)" + re.escape(suffix) + r"$")
    host, removed = socket.gethostname(), []
    try:
        entries = list(Path(directory).iterdir())
    except OSError:
        return removed
    for p in entries:
        m = pattern.match(p.name)
        if m and m["host"] == host and int(m["pid"]) != os.getpid() and not pid_alive(int(m["pid"])):
            try:
                if p.is_file() and not p.is_symlink():
                    p.unlink()
                    removed.append(p)
            except OSError:
                pass
    return removed
