"""An agent's place to run things: one sandbox, started on first use.

Why lazy: an agent that only chats never pays for a container. Why one
sandbox reused: `cd`, files and installed packages persist between bash calls
like in a terminal. `fresh_per_call=True` gives each bash call its own
container instead, sharing only the workspace (a private host temp dir).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import SandboxError
from ..sandbox import ExecResult, Sandbox, SandboxPolicy, default_policy, open_sandbox
from .format import clean_text, format_result


class Runtime:
    """pygent's Runtime, backed by a Docker sandbox: bash, write_file, read_file, cleanup."""

    def __init__(
        self,
        image: str | None = None,
        policy: SandboxPolicy | None = None,
        workspace: str | Path | None = None,
        fresh_per_call: bool = False,
        task_depth: int = 0,
    ) -> None:
        from ..settings import get_settings

        settings = get_settings()
        self.image = image or settings.pygent_image
        workspace = workspace or settings.pygent_workspace
        self._tmp_workspace: str | None = None
        if fresh_per_call and workspace is None:
            # Containers come and go; the workspace must outlive each one.
            self._tmp_workspace = tempfile.mkdtemp(prefix="pygent-ws-")
            os.chmod(self._tmp_workspace, 0o777)
            workspace = self._tmp_workspace
        base = policy or default_policy()
        if workspace is not None:
            path = Path(workspace).expanduser().resolve()
            if not path.is_dir():
                raise SandboxError(f"workspace {path} is not a directory")
            base = base.model_copy(update={"workspace": path})
        self.policy = base
        self.fresh_per_call = fresh_per_call
        self.task_depth = task_depth
        # The owning Agent's TaskManager (set by the Agent; tools reach it as ToolContext.tasks).
        # Typed Any on purpose: tasks.py builds Runtimes, so this module must not import it.
        self.tasks: Any = None
        self._sandbox: Sandbox | None = None
        self._lock = threading.Lock()
        self._closed = False
        #: Absolute time.monotonic() by which commands must end (set by the agent loop's limits).
        self.deadline: float | None = None
        #: Called once before the first command (the task manager times task start-up with it).
        self.on_first_command: Any = None

    # -- the sandbox ----------------------------------------------------------
    @property
    def sandbox(self) -> Sandbox:
        """The agent's sandbox, started now if it is not yet."""
        with self._lock:
            if self._closed:
                raise SandboxError("this runtime was cleaned up; create a new Agent")
            if self._sandbox is None or self._sandbox.closed:
                self._sandbox = open_sandbox(self.image, self.policy)
            return self._sandbox

    @property
    def closed(self) -> bool:
        """True once cleanup() ran: no command can run any more."""
        return self._closed

    def _limit(self, timeout: float | None) -> float | None:
        """The command's time limit, shortened to what is left before the loop's deadline."""
        if self.deadline is not None:
            left = max(0.05, self.deadline - time.monotonic())
            timeout = min(timeout or self.policy.timeout, left)
        return timeout

    @property
    def started(self) -> bool:
        return self._sandbox is not None and not self._sandbox.closed

    def exec(self, cmd: str, timeout: float | None = None, **kw: Any) -> ExecResult:
        """Run a command and get the full result object."""
        timeout = self._limit(timeout)
        if self.fresh_per_call:
            with open_sandbox(self.image, self.policy, pool=True) as sb:
                self._first_command()
                return sb.exec(cmd, timeout=timeout, **kw)
        sandbox = self.sandbox
        self._first_command()
        return sandbox.exec(cmd, timeout=timeout, **kw)

    def _first_command(self) -> None:
        """Fire the hook once, when the sandbox is ready and the first command is about to run."""
        if self.on_first_command is not None:
            hook, self.on_first_command = self.on_first_command, None
            hook()

    # -- pygent's Runtime API -----------------------------------------------------
    def bash(self, cmd: str, timeout: float | None = None) -> str:
        """Run `cmd`; return the compact text the model reads (see format.py)."""
        # Report the limit that applied: the loop's deadline may have shortened it.
        limit = self._limit(timeout) or self.policy.timeout
        result = self.exec(cmd, timeout=limit)
        return format_result(result, round(limit, 2), self.policy.memory)

    def write_file(self, path: str, content: str | bytes) -> str:
        sb = self.sandbox
        full = sb.absolute(path)
        sb.write_file(full, content)
        size = len(content.encode() if isinstance(content, str) else content)
        return f"Wrote {size} bytes to {full}"

    def read_file(self, path: str, binary: bool = False) -> str:
        data = self.sandbox.read_file(path)  # symlinks are followed inside the container
        if binary:
            import base64

            return base64.b64encode(data).decode()
        return clean_text(data)

    def upload_file(self, src: str | Path, dest: str | None = None) -> str:
        """Copy a host file or directory into the sandbox (the host path is the caller's choice)."""
        dest = dest or Path(src).name
        self.sandbox.upload(src, dest)
        return f"Uploaded {src} to {self.sandbox.absolute(dest)}"

    def cleanup(self, wait: bool = True) -> None:
        """Remove the sandbox (and a temporary shared workspace). Idempotent.

        wait=False returns before the engine has removed the container (a background
        thread finishes it): for delegated tasks, whose results are already saved.
        """
        with self._lock:
            self._closed = True
            sandbox, self._sandbox = self._sandbox, None
        if sandbox is not None:
            sandbox.close(wait=wait)
        if self._tmp_workspace:
            shutil.rmtree(self._tmp_workspace, ignore_errors=True)  # does not follow symlinks
            self._tmp_workspace = None

    close = cleanup
