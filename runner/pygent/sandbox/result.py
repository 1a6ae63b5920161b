"""What running one command returns, and the head+tail output cap.

Why head and tail: the start of output says what ran, the end says how it
ended (the error, the summary); the middle of a 50 MB log is rarely needed,
and keeping it would make host memory depend on what a command prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .protocol import HeadTail, cut_marker  # one implementation, shared with the in-container server

__all__ = ["sum_costs", "ExecResult", "HeadTail", "cut_marker", "TIMEOUT_EXIT_CODE", "SIGKILL_EXIT_CODE"]

#: Exit code reported when the wall-clock limit killed the command (as coreutils `timeout`).
TIMEOUT_EXIT_CODE = 124
#: Exit code of a process killed by SIGKILL (128 + 9): what the kernel's OOM killer leaves.
SIGKILL_EXIT_CODE = 137


@dataclass
class ExecResult:
    """Outcome of one command. Output is bytes: decoding is the caller's choice."""

    exit_code: int
    stdout: bytes = b""
    stderr: bytes = b""
    duration: float = 0.0
    timed_out: bool = False
    stdout_truncated: int = 0  #: bytes dropped from the middle of stdout (0 = complete)
    stderr_truncated: int = 0
    oom_killed: bool = False
    cwd: str | None = None  #: working directory when the command ended (for `cd` persistence)
    #: idle_timeout moved the command to the background: its handle (exit_code is -1 until it ends)
    handle: str | None = None
    #: shell_state=True: "saved", "kept: <why>" (the state from before stays) or "too_large: <why>"
    state: str | None = None
    #: what the command cost (None when unknown: it could not start, or it went to the background):
    #: CPU seconds of its process tree (every descendant that was waited for), user and system
    cpu_user: float | None = None
    cpu_sys: float | None = None
    #: bytes: peak resident memory of the whole process tree: the larger of the server's sampled
    #: sum over the command's session and wait4's ru_maxrss (its largest process)
    max_rss: int | None = None
    #: the egress proxy's refusals while it ran (protocol.Done's egress_refused): one dict per
    #: host:port (host, port, reason, count, ...); format.egress_notes says them to the model
    egress_refused: list[dict[str, Any]] = field(default_factory=list)

    @property
    def truncated(self) -> bool:
        return bool(self.stdout_truncated or self.stderr_truncated)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and self.handle is None

    def cost(self) -> dict[str, float | int] | None:
        """cpu_user / cpu_sys (s) / max_rss (bytes) as one dict for events and logs; None when unknown."""
        if self.cpu_user is None:
            return None
        return {"cpu_user": self.cpu_user, "cpu_sys": self.cpu_sys or 0.0, "max_rss": self.max_rss or 0}

    @property
    def text(self) -> str:
        """stdout decoded leniently: what a user printing the result expects."""
        return self.stdout.decode("utf-8", "replace")


def sum_costs(costs: "list[dict[str, float | int]]") -> dict[str, float | int]:
    """Several commands' costs as one: CPU summed, peak memory the largest; and how many commands."""
    return {
        "commands": len(costs),
        "cpu_user": round(sum(c["cpu_user"] for c in costs), 6),
        "cpu_sys": round(sum(c["cpu_sys"] for c in costs), 6),
        "max_rss": max(int(c["max_rss"]) for c in costs),
    }
