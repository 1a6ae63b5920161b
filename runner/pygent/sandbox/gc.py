"""Remove containers whose owner is gone, or that are older than a bound.

Why: an owner killed with SIGKILL (or a crashed engine) cannot clean up. Every
container carries owner labels (see lifecycle.py), so any later process can tell
an orphan from a container another live process is using.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

from . import egress, lifecycle
from .engine import get_client

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
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def collect(max_age: float | None = None, *, everything: bool = False) -> list[Removed]:
    """Remove orphaned pygent containers; return what was removed and why.

    everything=True removes all pygent containers except this process's own.
    Raises EngineUnavailable.
    """
    from ..settings import get_settings

    max_age = get_settings().pygent_gc_max_age if max_age is None else max_age
    api = get_client().api
    now = time.time()
    removed: list[Removed] = []
    for c in api.containers(all=True, filters={"label": f"{lifecycle.LABEL_MANAGED}=1"}):
        labels = c.get("Labels") or {}
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
            api.remove_container(c["Id"], force=True, v=True)
        except Exception as exc:
            if "No such container" not in str(exc) and "already in progress" not in str(exc):
                continue
        pid = labels.get(lifecycle.LABEL_OWNER_PID)
        removed.append(Removed(c["Id"], reason, int(pid) if pid and pid.isdigit() else None, age))
    # Egress proxies are shared by processes: reclaimed when no sandbox uses them, not by owner.
    removed += [Removed(cid, reason, None, age) for cid, reason, age in egress.collect_unused(api, everything)]
    return removed


def reclaim_in_background() -> None:
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
            collect()
        except Exception:
            pass  # best effort; `pygent-runner gc` reports errors

    threading.Thread(target=run, name="pygent-gc", daemon=True).start()
