"""Who owns which container, and making sure they all go away.

Three nets, from cheapest to last resort:
1. close() / context managers / atexit (also reached on SIGINT and SIGTERM,
   which we turn into a normal interpreter exit when nobody else handles them);
2. the container's stdin is the owner's attach stream with StdinOnce: when the
   owner dies (even by SIGKILL) the server sees EOF, exits, and the engine
   auto-removes the container;
3. labels (owner pid, host, session, creation time) let `gc` (run by hand, and
   automatically once per process in the background) remove what is left.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import threading
import time
import weakref
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from .base import Sandbox

LABEL_PREFIX = "io.pygent"
LABEL_OWNER_PID = f"{LABEL_PREFIX}.owner-pid"
LABEL_OWNER_HOST = f"{LABEL_PREFIX}.owner-host"
LABEL_SESSION = f"{LABEL_PREFIX}.session"
LABEL_CREATED = f"{LABEL_PREFIX}.created"
LABEL_POOLED = f"{LABEL_PREFIX}.pooled"
LABEL_MANAGED = f"{LABEL_PREFIX}.managed"
#: On a sandbox's own scratch volumes (/workspace, /tmp): gc removes them once dangling.
LABEL_SCRATCH = f"{LABEL_PREFIX}.scratch"

SESSION_ID = os.urandom(6).hex()  # not uuid: importing it costs ~3 ms of every exec
HOSTNAME = socket.gethostname()

_live: "weakref.WeakSet[Sandbox]" = weakref.WeakSet()
#: sandbox -> what to call when it is untracked (when_gone)
_on_gone: "weakref.WeakKeyDictionary[Sandbox, list[Callable[[], None]]]" = weakref.WeakKeyDictionary()
_lock = threading.Lock()
_installed = False


def owner_labels(pooled: bool = False) -> dict[str, str]:
    labels = {
        LABEL_MANAGED: "1",
        LABEL_OWNER_PID: str(os.getpid()),
        LABEL_OWNER_HOST: HOSTNAME,
        LABEL_SESSION: SESSION_ID,
        LABEL_CREATED: f"{time.time():.3f}",
    }
    if pooled:
        labels[LABEL_POOLED] = "1"
    return labels


def track(sandbox: "Sandbox") -> None:
    """Remember a live sandbox so interpreter exit and signals remove it."""
    _install()
    with _lock:
        _live.add(sandbox)


def untrack(sandbox: "Sandbox") -> None:
    """The sandbox's container is gone (removed by close, or by the background removal)."""
    with _lock:
        _live.discard(sandbox)
        callbacks = _on_gone.pop(sandbox, ())
    for fn in callbacks:
        try:
            fn()
        except Exception:
            pass


def when_gone(sandbox: "Sandbox", fn: Callable[[], None]) -> None:
    """Call fn() once the sandbox's container is gone, or now if it already is.

    Why: a bound on sandboxes (delegated tasks' slots, issue 27) must count a
    container until the engine has removed it, not until its owner let go;
    close(wait=False) finishes the removal on a background thread.
    """
    with _lock:
        if sandbox in _live:
            _on_gone.setdefault(sandbox, []).append(fn)
            return
    fn()


def close_all() -> None:
    """Close every sandbox this process still has (atexit, signals, tests)."""
    with _lock:
        live = list(_live)
    for sandbox in live:
        try:
            sandbox.close()
        except Exception:
            pass


def live() -> "list[Sandbox]":
    """The sandboxes this process still tracks (open, or closed with their removal in flight)."""
    with _lock:
        return list(_live)


def live_count() -> int:
    with _lock:
        return len(_live)


def _on_sigterm(signum: int, frame: object) -> None:
    # Turn SIGTERM into SystemExit so finally-blocks and atexit run and remove containers.
    raise SystemExit(128 + signum)


def _install() -> None:
    global _installed
    if _installed:
        return
    with _lock:
        if _installed:
            return
        _installed = True
        atexit.register(close_all)
        if threading.current_thread() is threading.main_thread():
            try:
                if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
                    signal.signal(signal.SIGTERM, _on_sigterm)
            except (ValueError, OSError):
                pass
