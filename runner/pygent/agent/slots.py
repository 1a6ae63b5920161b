"""Task slots: at most N delegated tasks' sandboxes exist at once (issue 27).

Why a slot is held until the sandbox is gone, not until the task's loop ends:
users set PYGENT_MAX_TASKS to bound what runs on their engine (memory, CPU,
pids), and the engine counts a container from its creation to its removal. A
task's container is removed in the background once its results are saved
(the task's thread moves on at once), so the slot is handed back by the
removal itself (`lifecycle.when_gone`), whatever ended the task: finished,
failed, timed out, cancelled or lost.

API (kept small so a cluster-wide bound can stand in for it, e.g. the Ray
backend's): `slots.acquire(cancelled)` blocks until a slot is free and returns
a `Slot`, or None once `cancelled()` is true; `slot.release()` is idempotent;
`slots.hold_until_gone(slot, sandbox)` releases it when the sandbox's
container is gone; `slots.in_use` counts the slots held.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from ..sandbox import lifecycle

#: How often a blocked acquire looks at its `cancelled` predicate, seconds.
_CANCEL_LOOK = 0.05


class Slot:
    """One held slot; release() gives it back once (later calls do nothing)."""

    def __init__(self, owner: "SandboxSlots") -> None:
        self._owner: SandboxSlots | None = owner
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            owner, self._owner = self._owner, None
        if owner is not None:
            owner._give_back()


class SandboxSlots:
    """A counting bound on live sandboxes, freed by their removal."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"a slot bound needs at least 1 slot, not {size}")
        self.size = size
        self._cond = threading.Condition()
        self._held = 0

    @property
    def in_use(self) -> int:
        with self._cond:
            return self._held

    def acquire(self, cancelled: Callable[[], bool] | None = None) -> Slot | None:
        """Block until a slot is free; None when `cancelled()` turns true first
        (a task cancelled or timed out while it waited)."""
        with self._cond:
            while self._held >= self.size:
                if cancelled is not None and cancelled():
                    return None
                self._cond.wait(_CANCEL_LOOK if cancelled is not None else None)
            if cancelled is not None and cancelled():
                return None
            self._held += 1
        return Slot(self)

    def hold_until_gone(self, slot: Slot, sandbox: Any) -> None:
        """Release `slot` when `sandbox`'s container has been removed (now, if it already is)."""
        lifecycle.when_gone(sandbox, slot.release)

    def _give_back(self) -> None:
        with self._cond:
            self._held -= 1
            self._cond.notify()
