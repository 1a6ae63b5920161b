"""Remove containers whose owner is gone, or that are older than a bound.

Why: an owner killed with SIGKILL (or a crashed engine) cannot clean up. Every
container carries owner labels (see lifecycle.py), so any later process can tell
an orphan from a container another live process is using.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import lifecycle

if TYPE_CHECKING:
    from .interface import Backend

_started = False
_start_lock = threading.Lock()


@dataclass
class Removed:
    id: str
    reason: str
    owner_pid: int | None
    age: float


def _owner_alive(labels: dict[str, str]) -> bool:
    if labels.get(lifecycle.LABEL_OWNER_HOST) != lifecycle.HOSTNAME:
        return True  # another host's process: we cannot tell, age decides
    try:
        pid = int(labels.get(lifecycle.LABEL_OWNER_PID, ""))
    except ValueError:
        return False
    return lifecycle.pid_alive(pid)


def collect(max_age: float | None = None, *, everything: bool = False, engine: "Backend | None" = None) -> list[Removed]:
    """Remove orphaned pygent containers; return what was removed and why.

    everything=True removes all pygent containers except this process's own.
    Raises EngineUnavailable.
    """
    from ..settings import get_settings

    from .registry import get_backend

    max_age = get_settings().pygent_gc_max_age if max_age is None else max_age
    engine = engine or get_backend()
    now = time.time()
    removed: list[Removed] = []
    for c in engine.list_ours():
        labels = c.labels
        if labels.get(lifecycle.LABEL_SESSION) == lifecycle.SESSION_ID:
            continue  # ours: closed by us
        try:
            created = float(labels.get(lifecycle.LABEL_CREATED, "0"))
        except ValueError:
            created = 0.0
        age = now - created
        if everything:
            reason = "asked to remove all"
        elif not _owner_alive(labels):
            reason = "owner process is gone"
        elif age > max_age:
            reason = f"older than {max_age:.0f}s"
        else:
            continue
        try:
            engine.remove(c.id)
        except Exception:
            continue
        pid = labels.get(lifecycle.LABEL_OWNER_PID)
        removed.append(Removed(c.id, reason, int(pid) if pid and pid.isdigit() else None, age))
    removed += [Removed(cid, reason, None, age) for cid, reason, age in engine.reclaim_shared(everything)]
    return removed


def reclaim_in_background(engine: "Backend | None" = None) -> None:
    """Once per process: remove a dead owner's leftovers without delaying the caller."""
    global _started
    if _started:
        return
    with _start_lock:
        if _started:
            return
        _started = True

    def run() -> None:
        try:
            collect(engine=engine)
        except Exception:
            pass  # best effort; `pygent-runner gc` reports errors

    threading.Thread(target=run, name="pygent-gc", daemon=True).start()
