"""One sandbox per MCP session: started on the first tool call, removed when the session ends.

Why lazy: a client that connects, lists the tools and leaves never costs a
container. Why one per session: `cd`, files and installed packages persist
between calls like in a terminal, and two sessions (two HTTP clients) never
see each other's files. Why an idle timeout: a client that stops calling but
never disconnects must not hold a container for ever; after `idle_timeout`
seconds without a call in flight the sandbox is removed, and the next call
starts a fresh one and says so.

The last net is the sandbox's own: its container exits when the attach
stream of the process that started it closes, so a SIGKILLed server leaves
nothing behind (sandbox/lifecycle.py).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import SandboxError

if TYPE_CHECKING:
    from ..sandbox import ExecResult, Sandbox, SandboxPolicy

__all__ = ["SessionConfig", "SessionSandbox"]

#: Default --idle-timeout, seconds.
DEFAULT_IDLE_TIMEOUT = 30 * 60.0


@dataclass(frozen=True)
class SessionConfig:
    """What every session's sandbox is made from: the same options as `pygent-runner exec`."""

    image: str | None
    policy: "SandboxPolicy"
    #: Seconds a bash call may run: the default and the ceiling (a client may ask for less).
    timeout: float | None = None
    env: dict[str, str] = field(default_factory=dict)
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT


class SessionSandbox:
    """The sandbox of one MCP session. Thread-safe: tool calls run in worker threads."""

    def __init__(self, config: SessionConfig) -> None:
        self.config = config
        self.policy = config.policy
        self._sandbox: "Sandbox | None" = None
        self._lock = threading.Lock()
        self._closed = False
        self._inflight = 0
        self._last_end = time.monotonic()
        self._timer: threading.Timer | None = None
        self._expired_after: float | None = None  # set when the idle timeout removed a sandbox

    # -- the sandbox ---------------------------------------------------------------
    def sandbox(self) -> "Sandbox":
        """The session's sandbox, started now if there is none.

        Raises:
            SandboxError: the session has ended.
            EngineUnavailable, ImageNotFound, RuntimeUnavailable, ConfigError: it could not start.
        """
        with self._lock:
            if self._closed:
                raise SandboxError("this MCP session has ended; reconnect to get a new sandbox")
            if self._sandbox is None or self._sandbox.closed:
                from ..sandbox import lifecycle, open_sandbox

                # No warm pool: it would start containers before any call and keep them.
                with lifecycle.purpose("mcp"):
                    self._sandbox = open_sandbox(self.config.image, self.policy, pool=False)
            return self._sandbox

    @property
    def started(self) -> bool:
        with self._lock:
            return self._sandbox is not None and not self._sandbox.closed

    def absolute(self, path: str) -> str:
        """A sandbox path (relative to /workspace). Raises PathOutsideSandbox for NUL or empty paths."""
        return self.sandbox().absolute(path)

    def time_limit(self, requested: float | None) -> float:
        """The limit of one command: what the client asked for, never above the server's."""
        ceiling = self.config.timeout if self.config.timeout is not None else self.policy.timeout
        return ceiling if requested is None else min(float(requested), ceiling)

    def exec(self, cmd: str, timeout: float) -> "ExecResult":
        """Run one command in the session's sandbox (cwd persists). Raises what Sandbox.exec raises."""
        return self.sandbox().exec(cmd, timeout=timeout, env=self.config.env or None)

    def notice(self) -> str:
        """A line for the model, once, when the idle timeout replaced the sandbox it had."""
        with self._lock:
            after, self._expired_after = self._expired_after, None
        if after is None:
            return ""
        return f"note: the previous sandbox was removed after {after:g}s without calls; this is a fresh one (files and cwd were reset)\n"

    # -- idle accounting -----------------------------------------------------------------
    # One timer per idle period, not one per call (a thread start per call was ~0.1 ms of
    # the server's CPU): when it fires it re-arms itself if a call came since.
    def call_started(self) -> None:
        with self._lock:
            self._inflight += 1

    def call_ended(self) -> None:
        with self._lock:
            self._inflight -= 1
            self._last_end = time.monotonic()
            if self._timer is None and self.config.idle_timeout and not self._closed and self._sandbox is not None:
                self._arm(self.config.idle_timeout)

    def _arm(self, delay: float) -> None:
        self._timer = threading.Timer(delay, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def _expire(self) -> None:
        idle = self.config.idle_timeout or 0
        with self._lock:
            self._timer = None
            if self._closed or self._sandbox is None:
                return
            left = self._last_end + idle - time.monotonic()
            if self._inflight or left > 0:
                if not self._inflight:
                    self._arm(left)
                return  # a call is running: call_ended arms the next timer
            sandbox, self._sandbox = self._sandbox, None
            self._expired_after = idle
        sandbox.close(wait=False)

    # -- the end -----------------------------------------------------------------------
    def close(self) -> None:
        """Remove the sandbox (the session ended). Idempotent; a running command is killed with it."""
        with self._lock:
            self._closed = True
            sandbox, self._sandbox = self._sandbox, None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        if sandbox is not None:
            # Closing the attach stream ends the container at once; the engine's
            # auto-remove (and the reaper thread) finish the removal.
            sandbox.close(wait=False)
