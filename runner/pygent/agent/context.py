"""What a tool may use of the agent that calls it (ToolContext).

Why: a tool that reaches into Runtime depends on how the runtime keeps its
sandbox (locks, lazy start, policy, recovery, the backend). The context is
the small surface tools actually need — run a command, read and write files,
the task manager, the agent's events, the loop's deadline — so the runtime can
change under it without touching any tool.

Tools registered with `context=True` receive one (the built-ins do); tools
registered pygent's way still receive the Runtime itself (`ctx.runtime`).
A context is made per step by the Agent and holds no reference back to the
Agent, so it never keeps an agent (and its container) alive.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from ..sandbox import ExecResult
    from .events import StepEvent
    from .runtime import Runtime
    from .tasks import TaskManager


class ToolContext:
    """The calling agent's runtime operations, for one tool call or one step."""

    __slots__ = ("_runtime", "_tasks", "_emit", "_live")

    def __init__(
        self,
        runtime: "Runtime",
        tasks: "TaskManager | None" = None,
        emit: "Callable[[StepEvent], None] | None" = None,
        live: bool = False,
    ) -> None:
        self._runtime = runtime
        self._tasks = tasks
        self._emit = emit
        self._live = live  # emit "output" events while a command runs (someone displays them)

    @classmethod
    def of(cls, runtime: "Runtime") -> "ToolContext":
        """The context of a bare Runtime (its own task manager, no event sink): for `execute_tool(call, rt)`."""
        return cls(runtime, tasks=getattr(runtime, "tasks", None))

    # -- commands and files (each may start the sandbox) --------------------------
    def bash(self, cmd: str, timeout: float | None = None, background: bool = False,
             idle_timeout: float | None = None) -> str:
        """Run `cmd` in the agent's shell; the compact text the model reads.
        Raises SandboxError (the sandbox cannot run it), ToolError (background with fresh_per_call)."""
        on_output = self._output_event if self._live and self._emit is not None else None
        text = self._runtime.bash(cmd, timeout=timeout, background=background, idle_timeout=idle_timeout,
                                  on_output=on_output)
        self._refusal_events()
        return text

    def _refusal_events(self) -> None:
        """One "egress_refused" event per host the proxy refused during the command (run logs, --json)."""
        refused = getattr(self._runtime, "last_refused", None)
        if not refused or self._emit is None:
            return
        from .events import StepEvent
        from .format import refusal_note

        for refusal in refused:
            self.emit(StepEvent("egress_refused", content=refusal_note(refusal), tool="bash", data=dict(refusal)))

    def _output_event(self, stream: str, data: bytes) -> None:
        from .events import StepEvent

        self.emit(StepEvent("output", content=data.decode("utf-8", "replace"), tool="bash", data={"stream": stream}))

    # -- background commands (the `bash` handle) ----------------------------------
    def process_output(self, handle: str, since: int = 0) -> str:
        """Raises SandboxError (unknown handle, broken sandbox)."""
        return self._runtime.process_output(handle, since)

    def process_status(self, handle: str) -> str:
        return self._runtime.process_status(handle)

    def process_input(self, handle: str, text: str, eof: bool = False) -> str:
        return self._runtime.process_input(handle, text, eof)

    def process_kill(self, handle: str) -> str:
        return self._runtime.process_kill(handle)

    def process_list(self) -> str:
        return self._runtime.process_list()

    def exec(self, cmd: str, timeout: float | None = None, **kw: Any) -> "ExecResult":
        """Run `cmd`; the full result object. Raises SandboxError."""
        return self._runtime.exec(cmd, timeout=timeout, **kw)

    def write_file(self, path: str, content: str | bytes) -> str:
        """Raises SandboxError."""
        return self._runtime.write_file(path, content)

    def read_file(self, path: str, binary: bool = False) -> str:
        """Raises FileNotFoundError, IsADirectoryError, SandboxError."""
        return self._runtime.read_file(path, binary=binary)

    # -- the agent around the tool ------------------------------------------------
    @property
    def tasks(self) -> "TaskManager | None":
        """The agent's delegated-task manager (None for a runtime no agent owns)."""
        return self._tasks

    @property
    def task_depth(self) -> int:
        """How deep in delegation the calling agent is (0: the top agent)."""
        return self._runtime.task_depth

    @property
    def deadline(self) -> float | None:
        """Absolute time.monotonic() by which the step's commands must end (None: no limit)."""
        return self._runtime.deadline

    @property
    def image(self) -> str:
        return self._runtime.image

    def emit(self, event: "StepEvent") -> None:
        """Report an event to the agent's on_event display; never raises (a display cannot break a tool)."""
        if self._emit is not None:
            try:
                self._emit(event)
            except Exception:
                pass

    @property
    def runtime(self) -> "Runtime":
        """The Runtime itself: what pygent-style tools receive. Built-in tools should not need it."""
        return self._runtime
