"""Warm pools of started sandboxes, one per (image, policy).

Why: starting a container costs ~100-200 ms here; handing out one that is
already started costs nothing. Each pooled sandbox goes to exactly one owner
(it leaves the pool when handed out) and is destroyed by that owner's close(),
so disposable still means disposable. A background thread refills the pool.
"""

from __future__ import annotations

import atexit
import collections
import threading

from ..settings import get_settings
from .base import Sandbox
from .policy import SandboxPolicy
from .registry import get_backend

_pools: dict[tuple[str, str], "SandboxPool"] = {}
_pools_lock = threading.Lock()


class SandboxPool:
    """Keeps up to `size` started sandboxes ready for one (image, policy)."""

    def __init__(self, image: str, policy: SandboxPolicy, size: int) -> None:
        self.image = image
        self.policy = policy
        self.size = size
        self._ready: collections.deque[Sandbox] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._creating = 0
        self.last_error: BaseException | None = None
        self._thread = threading.Thread(target=self._refill_loop, name=f"pygent-pool-{image}", daemon=True)
        self._thread.start()

    def acquire(self) -> Sandbox:
        """A started sandbox, from the pool when one is ready, else created now."""
        with self._cond:
            while self._ready:
                sandbox = self._ready.popleft()
                self._cond.notify_all()
                if sandbox.healthy():
                    return sandbox
        return get_backend().create(self.image, self.policy)

    def _refill_loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and len(self._ready) >= self.size:
                    self._cond.wait()
                if self._closed:
                    return
            try:
                sandbox = get_backend().create(self.image, self.policy, pooled=True)
                self.last_error = None
            except BaseException as exc:  # engine down, image broken: back off, callers will see the error
                self.last_error = exc
                with self._cond:
                    self._cond.wait(timeout=5.0)
                continue
            with self._cond:
                if self._closed:
                    sandbox.close()
                    return
                self._ready.append(sandbox)

    def drain(self) -> None:
        """Stop refilling and remove every sandbox still waiting in the pool."""
        with self._cond:
            self._closed = True
            ready, self._ready = list(self._ready), collections.deque()
            self._cond.notify_all()
        for sandbox in ready:
            sandbox.close()

    @property
    def ready(self) -> int:
        return len(self._ready)


def get_pool(image: str, policy: SandboxPolicy, size: int | None = None) -> SandboxPool | None:
    """The pool for (image, policy), created on first use; None when pooling is off."""
    size = get_settings().pygent_pool_size if size is None else size
    if size <= 0 or policy.workspace is not None or policy.mounts:
        return None  # host mounts are per-caller: never pre-start them
    key = (image, policy.pool_key())
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = SandboxPool(image, policy, size)
        return pool


def drain_all() -> None:
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.drain()


atexit.register(drain_all)
