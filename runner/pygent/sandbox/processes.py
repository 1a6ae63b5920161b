"""Background commands: what the Sandbox API returns about them (issue 14).

Why a handle and an offset: a server started in one call must be reachable
from the next, and a model reading its log must get only what is new, bounded
(head and tail), without the sandbox keeping more than the newest 1 MiB.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SandboxError

__all__ = ["ProcessStatus", "ProcessOutput", "status_of", "output_of"]


@dataclass(frozen=True)
class ProcessStatus:
    """A background command: running, or how it ended."""

    handle: str
    cmd: str  #: its first 200 characters
    running: bool
    exit_code: int | None  #: None while running; 137 when killed
    killed: bool
    pid: int
    seconds: float  #: how long it has run (ran)
    output_bytes: int  #: output so far (stdout and stderr together)


@dataclass(frozen=True)
class ProcessOutput:
    """New output of a background command since an offset."""

    status: ProcessStatus
    output: str  #: stdout and stderr interleaved, head and tail when over the limit
    offset: int  #: pass as `since` next time to get only what comes after
    lost: int  #: bytes after `since` that were no longer kept (only the newest 1 MiB is)


def status_of(reply: dict) -> ProcessStatus:
    """The server's answer as a ProcessStatus. Raises SandboxError for an unknown handle."""
    if "error" in reply and "handle" not in reply:
        raise SandboxError(reply["error"])
    return ProcessStatus(**{k: reply[k] for k in ProcessStatus.__dataclass_fields__})


def output_of(reply: dict) -> ProcessOutput:
    return ProcessOutput(status_of(reply), reply["output"], reply["offset"], reply["lost"])
