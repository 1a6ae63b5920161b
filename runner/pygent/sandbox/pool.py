"""Warm pools of started sandboxes, one per (image, policy).

Why: starting a container costs ~100-200 ms here; handing out one that is
already started costs nothing. Each pooled sandbox goes to exactly one owner
(it leaves the pool when handed out) and is destroyed by that owner's close(),
so disposable still means disposable.

The pool follows the bursts it serves: it keeps `PYGENT_POOL_SIZE` sandboxes, or
more, up to `PYGENT_POOL_MAX`, when it has recently been asked for more at once
(the most acquires within one second in the last `_BURST_MEMORY` seconds). A
fan-out of 16 sub-agents that finds 2 warm sandboxes and starts 14 cold finds 16
warm the next time; once the bursts stop, the extra members are removed.

Three rules keep the pool honest:
- never hand out a dead sandbox: `healthy()` is asked on acquire (no engine call),
  and the refill thread drops and replaces members that died while waiting;
- no engine work competes with callers: the pool fills only once a sandbox has
  been asked for, a caller takes a member that is being started rather than
  starting another, and refills wait while callers' sandboxes are being
  created or removed;
- warm sandboxes do not outlive demand: when no Agent, TaskManager or open
  sandbox remains (demand.py) for PYGENT_POOL_LINGER seconds, every pool drains.
"""

from __future__ import annotations

import atexit
import collections
import threading
import time

from ..settings import get_settings
from . import demand, lifecycle
from .base import Sandbox
from .policy import SandboxPolicy
from .registry import get_backend

_pools: dict[tuple[str, str], "SandboxPool"] = {}
_pools_lock = threading.Lock()
#: Seconds between the refill thread's looks at its idle members (a poll() each).
_PRUNE_EVERY = 1.0
#: Seconds between looks while callers keep the engine busy (see SandboxPool._busy).
_BUSY_LOOK = 0.1
#: A burst is the acquires within this many seconds of each other...
_BURST_SPAN = 1.0
#: ...and the pool sizes itself to the largest burst of the last this many seconds.
_BURST_MEMORY = 30.0


class SandboxPool:
    """Keeps `size` started sandboxes ready for one (image, policy), while in demand.

    `size` is at least `base` and follows recent bursts of acquires up to `most`.
    """

    def __init__(self, image: str, policy: SandboxPolicy, size: int, most: int | None = None) -> None:
        self.image = image
        self.policy = policy
        self.base = size
        self.most = max(size, get_settings().pygent_pool_max if most is None else most)
        self._acquired: collections.deque[float] = collections.deque()  # monotonic times, last _BURST_MEMORY s
        self._ready: collections.deque[Sandbox] = collections.deque()
        self._cond = threading.Condition()
        self._running = False  # refilling (set by acquire, cleared by idle/drain)
        self._thread: threading.Thread | None = None
        self._creating = 0  # members being started by the refill thread
        self._claimed = 0  # callers waiting for one of those
        self._direct = 0  # callers starting their own sandbox right now
        self.last_error: BaseException | None = None

    def _new(self, pooled: bool) -> Sandbox:
        """Start one sandbox on the chosen backend."""
        return get_backend().create(self.image, self.policy, pooled=pooled)

    def acquire(self) -> Sandbox:
        """A started, healthy sandbox: a ready member, one being started, else one created now.

        Raises what creating a sandbox raises (EngineUnavailable, ImageNotFound, SandboxError).
        """
        _note_demand()
        dead: list[Sandbox] = []
        try:
            with self._cond:
                self._acquired.append(time.monotonic())
                self._start_refill()
                while True:
                    while self._ready:
                        sandbox = self._ready.popleft()
                        self._cond.notify_all()
                        if sandbox.healthy():
                            return sandbox
                        dead.append(sandbox)
                    if self._creating <= self._claimed:
                        break
                    # A member is being started: it is ahead of any sandbox we would start now.
                    self._claimed += 1
                    try:
                        self._cond.wait(timeout=5.0)
                    finally:
                        self._claimed -= 1
                self._direct += 1
        finally:
            for sandbox in dead:
                sandbox.close(wait=False)
        try:
            return self._new(pooled=False)
        finally:
            with self._cond:
                self._direct -= 1
                self._cond.notify_all()

    @property
    def size(self) -> int:
        """How many ready sandboxes the pool keeps now: `base`, or the largest recent burst.

        Why follow bursts: sub-agents fan out in bursts (a TaskManager starts up to
        PYGENT_MAX_TASKS at once); a pool of 2 serves 2 of 16 warm and starts the other
        14 while the burst waits. Why forget them: idle warm sandboxes hold memory.
        """
        with self._cond:  # re-entrant; acquire() appends under it: no iteration of a changing deque
            times = self._acquired
            horizon = time.monotonic() - _BURST_MEMORY
            while times and times[0] < horizon:
                times.popleft()
            burst, first = 0, 0
            for last, t in enumerate(times):  # the most acquires within _BURST_SPAN of each other
                while t - times[first] > _BURST_SPAN:
                    first += 1
                burst = max(burst, last - first + 1)
        return min(self.most, max(self.base, burst))

    def _start_refill(self) -> None:
        """With the lock held: refill from now on (a thread of its own)."""
        if self._running and self._thread is not None and self._thread.is_alive():
            return
        self._running = True
        self._thread = threading.Thread(target=self._refill_loop, name=f"pygent-pool-{self.image}", daemon=True)
        self._thread.start()
        _liveness_start()

    def _refill_loop(self) -> None:
        while True:
            with self._cond:
                wait = self._running and (len(self._ready) + self._creating >= self.size or self._busy())
                if wait:
                    self._cond.wait(timeout=_PRUNE_EVERY if len(self._ready) >= self.size else _BUSY_LOOK)
                    dead = self._prune() + self._trim()
                elif not self._running:
                    return
                else:
                    self._creating += 1
            if wait:
                for sandbox in dead:  # outside the lock: a removal is an engine call
                    sandbox.close(wait=False)
                continue
            try:
                sandbox = self._new(pooled=True)
                self.last_error = None
            except BaseException as exc:  # engine down, image broken: back off, callers will see the error
                self.last_error = exc
                with self._cond:
                    self._creating -= 1
                    self._cond.notify_all()
                    self._cond.wait(timeout=5.0)
                continue
            with self._cond:
                self._creating -= 1
                keep = self._running
                if keep:
                    self._ready.append(sandbox)
                self._cond.notify_all()
            if not keep:
                sandbox.close(wait=False)
                return

    def _busy(self) -> bool:
        """With the lock held: are callers' sandboxes being started or removed right now?

        Why wait for quiet: a refill started then competes for the engine with the very
        callers the pool exists to speed up (16 sandboxes opened at once were slower
        pooled than cold). Pooled sandboxes are for the next caller, not this burst.
        """
        if self._direct:
            return True
        return any(s.closed for s in lifecycle.live())  # closed but still tracked: its removal is in flight

    def _prune(self) -> list[Sandbox]:
        """With the lock held: take out the members that died while waiting."""
        dead = [sb for sb in self._ready if not sb.healthy()]
        for sb in dead:
            self._ready.remove(sb)
        return dead

    def _trim(self) -> list[Sandbox]:
        """With the lock held: take out the members beyond `size` (a burst long past)."""
        extra = []
        while len(self._ready) > self.size:
            extra.append(self._ready.pop())
        return extra

    def idle(self) -> None:
        """Stop refilling and remove the members; the next acquire starts over."""
        with self._cond:
            self._running = False
            self._acquired.clear()
            ready, self._ready = list(self._ready), collections.deque()
            self._cond.notify_all()
        for sandbox in ready:
            try:
                sandbox.close()  # removed now: "nothing of ours in docker ps" must hold when this returns
            except Exception:
                pass  # engine gone: gc reclaims it by label

    drain = idle

    def idle_ids(self) -> set[str]:
        with self._cond:
            return {sb.id for sb in self._ready}

    @property
    def ready(self) -> int:
        return len(self._ready)

    @property
    def running(self) -> bool:
        return self._running


def get_pool(image: str, policy: SandboxPolicy, size: int | None = None) -> SandboxPool | None:
    """The pool for (image, policy), created on first use (empty until acquired from); None when off."""
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
        pool.idle()
    _liveness_stop()


# -- linger: drain once nothing wants sandboxes ------------------------------------------
_linger_lock = threading.Lock()
_linger_thread: threading.Thread | None = None
_last_demand = 0.0
#: Seconds between looks at the demand while pools are warm.
_LOOK_EVERY = 0.25


def _note_demand() -> None:
    """A sandbox was asked for: keep pools warm, and watch for the demand to end."""
    global _linger_thread, _last_demand
    _last_demand = time.monotonic()
    with _linger_lock:
        if _linger_thread is None or not _linger_thread.is_alive():
            _linger_thread = threading.Thread(target=_linger_loop, name="pygent-pool-linger", daemon=True)
            _linger_thread.start()


def _linger_loop() -> None:
    """Drain every pool PYGENT_POOL_LINGER seconds after the last holder or open sandbox went."""
    global _last_demand, _linger_thread
    while True:
        time.sleep(_LOOK_EVERY)
        with _pools_lock:
            pools = list(_pools.values())
        idle: set[str] = set()
        for pool in pools:
            idle |= pool.idle_ids()
        now = time.monotonic()
        if demand.wanted(idle):
            _last_demand = now
            continue
        if now - _last_demand < get_settings().pygent_pool_linger:
            continue
        with _linger_lock:
            if time.monotonic() - _last_demand < _LOOK_EVERY:
                continue  # an acquire came in meanwhile
            for pool in pools:
                pool.idle()
            _liveness_stop()
            _linger_thread = None
            return


# -- liveness: the backend follows its sandboxes' deaths while pools are warm -------------
def _liveness_start() -> None:
    get_backend().follow_deaths(True)


def _liveness_stop() -> None:
    try:
        get_backend().follow_deaths(False)
    except Exception:
        pass  # at exit, or no backend could be made: nothing is being followed


atexit.register(drain_all)
