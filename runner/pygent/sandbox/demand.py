"""Does anything in this process still want sandboxes? Warm pools drain when nothing does.

Why: warm containers are a cost paid ahead for a caller that is coming. Once no
Agent, TaskManager or open sandbox of the process remains, nobody is coming, and
`docker ps` must not show containers the user never asked for.

Holders are counted (Agents' runtimes and task managers register themselves);
open sandboxes are read from the lifecycle registry, so backends need no hook.
"""

from __future__ import annotations

import threading
import weakref
from typing import Callable

from . import lifecycle

_lock = threading.Lock()
_holders = 0


def hold(owner: object) -> Callable[[], None]:
    """Count `owner` as wanting sandboxes until the returned callable is called (or it is collected)."""
    global _holders
    with _lock:
        _holders += 1
    return weakref.finalize(owner, _release)


def _release() -> None:
    global _holders
    with _lock:
        _holders -= 1


def holders() -> int:
    return _holders


def wanted(idle_ids: set[str]) -> bool:
    """True while a holder exists or a sandbox is open (other than the idle pooled ones listed)."""
    if _holders > 0:
        return True
    return any(not s.closed and s.id not in idle_ids for s in lifecycle.live())
