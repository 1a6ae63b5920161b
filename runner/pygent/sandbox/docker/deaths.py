"""Docker API: which of this process's containers died, and why, from the engine's events.

Why a watcher: a sandbox waiting in the warm pool has nobody using it, so nothing
notices when an operator removes it (`docker rm -f`, `docker container prune`)
or kills it. One thread follows the engine's event stream for this session's
containers (label io.pygent.session) and remembers the dead ones, so the pool's
acquire can tell a dead member with a dictionary lookup instead of an API call.
It runs only while a pool is in use (the backend's follow_deaths, turned on by the
pool and off when it drains). One watcher per backend object (engine endpoint).

`death_reason` answers the same question for one container after the fact
(a bounded query of the engine's event log), for the message an Agent reads.
"""

from __future__ import annotations

import collections
import threading
import time

from .. import lifecycle
from .client import EngineClient, NotFound

#: Events that mean the container cannot run a command any more.
DEATH_EVENTS = ("kill", "die", "destroy", "oom")
#: Dead ids remembered (oldest forgotten first): far more than any pool holds.
_REMEMBER = 4096


def describe(action: str, attributes: dict) -> str:
    """An engine event -> what happened to the sandbox, in words a user (or model) can act on."""
    if action == "oom":
        return "it ran out of memory and the engine killed it"
    if action == "kill":
        sig = attributes.get("signal", "?")
        return f"it was killed from outside (signal {sig}: docker kill, docker rm -f or docker stop, or the engine shutting down)"
    if action == "die":
        code = attributes.get("exitCode", "?")
        return f"its command server exited (exit code {code}; e.g. a command killed it)"
    return "its container was removed from outside (docker rm -f, docker container prune)"


class DeathWatch:
    """Follows the engine's container events for this session; `reason(id)` is None while alive."""

    def __init__(self, client: EngineClient) -> None:
        self.client = client
        self._dead: "collections.OrderedDict[str, str]" = collections.OrderedDict()
        self._oom: "collections.OrderedDict[str, bool]" = collections.OrderedDict()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        #: Set once the event stream is connected (tests and the pool may wait on it).
        self.connected = threading.Event()

    def start(self) -> None:
        """Start following events (idempotent)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._follow, args=(self._stop,), name="pygent-death-watch", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop following (the thread ends at its next wake-up). Remembered deaths stay."""
        with self._lock:
            self._stop.set()
            self._thread = None
        self.connected.clear()

    def reason(self, cid: str) -> str | None:
        return self._dead.get(cid)

    def record(self, cid: str, action: str, attributes: dict) -> None:
        with self._lock:
            if action == "oom":
                # Not a death by itself: the cgroup's OOM killer may have ended just one command.
                self._oom[cid] = True
                while len(self._oom) > _REMEMBER:
                    self._oom.popitem(last=False)
                return
            # The first event says most (kill before die, die before destroy): keep it.
            if cid not in self._dead:
                self._dead[cid] = describe("oom" if cid in self._oom else action, attributes)
                while len(self._dead) > _REMEMBER:
                    self._dead.popitem(last=False)

    def _follow(self, stop: threading.Event) -> None:
        since: float | None = None
        while not stop.is_set():
            try:
                params = {
                    "filters": {
                        "type": ["container"],
                        "label": [f"{lifecycle.LABEL_SESSION}={lifecycle.SESSION_ID}"],
                        "event": list(DEATH_EVENTS),
                    },
                }
                if since:
                    params["since"] = f"{since:.6f}"  # replay what a reconnect missed
                # A read timeout ends the stream now and then (it is how stop() is noticed);
                # reconnecting with `since` loses nothing.
                events = self.client.json_stream("/events", params=params, timeout=_WAKE)
                self.connected.set()
                for event in events:
                    self._take(event)
                    since = float(event.get("timeNano", 0)) / 1e9 or float(event.get("time", 0)) or since
                    if stop.is_set():
                        return
            except Exception:
                if since is None:
                    since = time.time() - _WAKE
            if not self.connected.is_set():
                stop.wait(1.0)  # engine down or restarting: idle members then fail the stream peek
            self.connected.clear()

    def _take(self, event: dict) -> None:
        actor = event.get("Actor") or {}
        cid = actor.get("ID") or event.get("id")
        if cid:
            self.record(cid, str(event.get("Action") or event.get("status") or ""), actor.get("Attributes") or {})

    def death_reason(self, cid: str, window: float = 6 * 3600.0) -> str | None:
        """Why container `cid` died, from what was followed or (bounded) the engine's event log; None if unknown."""
        known = self.reason(cid)
        if known is not None:
            return known
        for _ in range(4):  # the event may trail the end of the stream by a moment
            try:
                now = time.time()
                for event in self.client.json_stream("/events", params={
                    "since": f"{now - window:.6f}", "until": f"{now:.6f}",
                    "filters": {"container": [cid], "event": list(DEATH_EVENTS)},
                }, timeout=10):
                    self._take(event)
            except Exception:
                return None
            if self.reason(cid) is not None:
                break
            time.sleep(0.05)
        return self.reason(cid)


#: Seconds an idle event stream stays open before it is reopened.
_WAKE = 15.0


def gone_reason(watch: "DeathWatch", cid: str, detail: str = "") -> str:
    """What happened to container `cid`, for a SandboxGone message: the events, else the engine's view."""
    reason = watch.death_reason(cid)
    if reason is not None:
        return reason
    try:
        watch.client.call("GET", f"/containers/{cid}/json", timeout=10)
        return detail or "its stream ended"
    except NotFound:
        return "its container no longer exists (removed from outside, or the engine restarted)"
    except Exception:
        return "the engine stopped answering (restarted or down)"
