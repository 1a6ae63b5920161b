"""Agents' idle sandboxes pause themselves (PYGENT_IDLE_PAUSE) and wake on their next use.

Why one thread for all: a timer per command would cost a thread start on the
~5 ms command path; one daemon thread looks at the watched sandboxes a few
times per idle period instead. A sandbox pauses only when no call is under way
(`pause_if_idle` checks under the lock every call takes on its way in), and the
next call resumes it (DockerSandbox._check_open). Sandboxes that cannot pause
(backends without the engine's pause) are simply never paused.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from .base import Sandbox

_watched: "weakref.WeakKeyDictionary[Sandbox, tuple[float, Callable[[], None] | None]]" = weakref.WeakKeyDictionary()
_lock = threading.Lock()
_thread: threading.Thread | None = None


def watch(sandbox: "Sandbox", idle: float, on_pause: Callable[[], None] | None = None) -> None:
    """Pause `sandbox` once it has been idle `idle` seconds (0 or less: never); then call
    on_pause() (the agent's run log records it). on_pause must not hold the sandbox."""
    global _thread
    if idle <= 0 or not hasattr(sandbox, "pause_if_idle"):
        return
    with _lock:
        _watched[sandbox] = (float(idle), on_pause)
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_loop, name="pygent-idle-pause", daemon=True)
            _thread.start()


def _loop() -> None:
    while True:
        with _lock:
            items = list(_watched.items())
        if not items:
            time.sleep(1.0)
            continue
        for sandbox, (idle, on_pause) in items:
            if sandbox.closed:
                with _lock:
                    _watched.pop(sandbox, None)
                continue
            if sandbox.pause_if_idle(idle) and on_pause is not None:  # type: ignore[attr-defined]
                try:
                    on_pause()
                except Exception:
                    pass  # a log must never stop the pauses
        period = min(5.0, max(0.05, min(i for _, (i, _cb) in items) / 4))
        items = sandbox = None  # type: ignore[assignment]  # no strong reference while asleep
        time.sleep(period)
