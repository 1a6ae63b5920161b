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
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import EngineUnavailable, SandboxError, SandboxGone, ToolError
from ..sandbox import ExecResult, Sandbox, SandboxPolicy, default_policy, demand, lifecycle, open_sandbox
from .format import clean_text, format_output, format_result, format_status

if TYPE_CHECKING:
    from ..sandbox.changes import Changes
    from ..sandbox.snapshot import Snapshot


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
        #: False for delegated tasks: a dead sandbox ends the task (status lost) instead of being replaced.
        self.recover = True
        #: Why the sandbox died, once a runtime with recover=False has lost it.
        self.lost: str | None = None
        #: The message of a sandbox lost together with the last command's result (see exec).
        self.last_loss: str | None = None
        #: the egress proxy's refusals during the last `bash` command (ExecResult.egress_refused):
        #: ToolContext emits each as an "egress_refused" event
        self.last_refused: list[dict[str, Any]] = []
        self._release_demand = demand.hold(self)  # warm pools stay while this runtime lives
        #: Absolute time.monotonic() by which commands must end (set by the agent loop's limits).
        self.deadline: float | None = None
        #: Called once before the first command (the task manager times task start-up with it).
        self.on_first_command: Any = None
        #: on_output(stream, data): a bash command's output as it arrives (the Agent's on_event).
        self.on_output: Any = None
        #: on_sandbox(what, data): the sandbox was "created", "died" or "recovered" (a fresh one after a death).
        self.on_sandbox: Any = None
        #: While a list (the agent loop opens one per tool call): each command's ExecResult.cost() goes here.
        self.costs: list[dict[str, Any]] | None = None
        self._lost_one = False
        #: A bound on live sandboxes (agent/slots.py SandboxSlots), set by the task manager: a
        #: slot is taken before the sandbox is opened and given back once it is removed.
        self.slots: Any = None

    # -- the sandbox ----------------------------------------------------------
    @property
    def sandbox(self) -> Sandbox:
        """The agent's sandbox, started now if it is not yet.

        Raises SandboxGone (once) when the sandbox died since its last use: the next
        use starts a fresh one. Raises what open_sandbox raises.
        """
        while True:
            # A slot (delegated tasks, issue 27) is waited for outside the lock: cleanup() and a
            # task's cancel must not wait behind it. It is held until the container is gone.
            slot = self.slots.acquire(lambda: self._closed) if self.slots is not None and not self.started else None
            try:
                with self._lock:
                    if self._closed:
                        if self.lost is not None:
                            raise SandboxGone(f"the task's sandbox was lost: {self.lost}", reason=self.lost)
                        raise SandboxError("this runtime was cleaned up; create a new Agent")
                    if self._sandbox is not None and not self._sandbox.closed and not self._sandbox.healthy():
                        dead = self._sandbox
                        raise self._lose(dead, getattr(dead, "gone_reason", "") or "it stopped", ran=False)
                    if self._sandbox is None or self._sandbox.closed:
                        if self.slots is not None and slot is None:
                            continue  # another thread's sandbox went meanwhile: wait for a slot again
                        slot, taken = None, slot
                        self._adopt(self._open_in_slot(taken, lambda: open_sandbox(self.image, self.policy)))
                        assert self._sandbox is not None
                        self._sandbox_event("recovered" if self._lost_one else "created", id=self._sandbox.id[:12], image=self.image)
                    return self._sandbox
            finally:
                if slot is not None:
                    slot.release()

    def _open_in_slot(self, slot: Any, opener: Any) -> Sandbox:
        """opener() under this runtime's purpose label; `slot` (a SandboxSlots slot, or None)
        is then held until that sandbox is gone, or given back at once if opening failed."""
        try:
            with lifecycle.purpose(self._purpose):
                sandbox = opener()
        except BaseException:
            if slot is not None:
                slot.release()
            raise
        if slot is not None:
            self.slots.hold_until_gone(slot, sandbox)
        return sandbox

    @property
    def _purpose(self) -> str:
        return "task" if self.task_depth else "agent"

    def _sandbox_event(self, what: str, **data: Any) -> None:
        hook = self.on_sandbox
        if hook is not None:
            try:
                hook(what, data)
            except Exception:
                pass  # a log or display must never break the runtime

    def _adopt(self, sandbox: Sandbox) -> None:
        """Make `sandbox` the agent's; it pauses itself when idle (PYGENT_IDLE_PAUSE)."""
        from ..sandbox import idle
        from ..settings import get_settings

        self._sandbox = sandbox
        me, sid = weakref.ref(self), sandbox.id[:12]

        def paused() -> None:  # a weak reference: the watcher must not keep the runtime alive
            runtime = me()
            if runtime is not None:
                runtime._sandbox_event("paused", id=sid)

        idle.watch(sandbox, get_settings().pygent_idle_pause, paused)

    # -- snapshots (issue 24) -----------------------------------------------------
    def snapshot(self) -> "Snapshot | None":
        """The sandbox's workspace and shell state now; None when no sandbox was started yet
        (nothing to keep: a fresh one is the same). Raises what Sandbox.snapshot raises."""
        if self.fresh_per_call:
            raise SandboxError("an agent with a fresh sandbox per call has no sandbox state to snapshot")
        if not self.started:
            return None
        sandbox = self.sandbox
        return self._using(sandbox, lambda: sandbox.snapshot())

    def restore(self, snapshot: "Snapshot | None", sandbox: Sandbox | None = None) -> None:
        """Continue in a sandbox restored from `snapshot` (or the given, already restored one);
        None: a fresh sandbox on next use. The current sandbox is removed."""
        if snapshot is not None and sandbox is None:
            # A forked task's sandbox counts against max_tasks like any other (issue 27).
            slot = self.slots.acquire(lambda: self._closed) if self.slots is not None else None
            if self.slots is not None and slot is None:
                raise SandboxError("this runtime was cleaned up; create a new Agent")
            sandbox = self._open_in_slot(slot, lambda: open_sandbox(snapshot=snapshot))
        with self._lock:
            if self._closed:
                if sandbox is not None:
                    sandbox.close(wait=False)
                raise SandboxError("this runtime was cleaned up; create a new Agent")
            old, self._sandbox = self._sandbox, None
            if sandbox is not None:
                self._adopt(sandbox)
        if old is not None:
            old.close(wait=False)

    def changes(self, since: "Snapshot") -> "Changes":
        """What changed in the sandbox's trees since `since`. Raises what Sandbox.changes raises."""
        sandbox = self.sandbox
        return self._using(sandbox, lambda: sandbox.changes(since))

    def _lose(self, dead: Sandbox, reason: str, ran: bool) -> SandboxGone:
        """Forget a dead sandbox and say so, once: what happened, what is lost, what comes next.

        Why one message and then a fresh sandbox: an agent that reads `is gone` on every
        call never recovers; one that is told its files are gone can redo the work.
        With recover=False (delegated tasks) the runtime closes instead: the task is lost.
        """
        if self._sandbox is dead:
            self._sandbox = None
        self._lost_one = True
        self._sandbox_event("died", id=dead.id[:12], reason=reason)
        try:
            dead.close(wait=False)  # whatever is left of it (a stopped container, our stream)
        except Exception:
            pass
        what = "the command may not have finished" if ran else "the command did not run"
        kept = (
            f"the workspace is the host directory {self.policy.workspace}, so its files are kept"
            if self.policy.workspace is not None
            else "everything in it is lost (files in /workspace, installed packages, running processes)"
        )
        if not self.recover:
            self.lost = reason
            self._closed = True
            return SandboxGone(f"the sandbox {dead.id[:12]} died: {reason}; {what}. This task cannot continue.", reason=reason)
        return SandboxGone(
            f"the sandbox {dead.id[:12]} died: {reason}; {what}. {kept[0].upper()}{kept[1:]}. "
            f"The next command runs in a fresh sandbox (same image {self.image}, same policy).",
            reason=reason,
        )

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
            with lifecycle.purpose(self._purpose), open_sandbox(self.image, self.policy, pool=True) as sb:
                self._first_command()
                return self._cost(sb.exec(cmd, timeout=timeout, **kw))
        sandbox = self.sandbox
        self._first_command()
        result = self._cost(self._using(sandbox, lambda: sandbox.exec(cmd, timeout=timeout, **kw)))
        if result.oom_killed and not sandbox.healthy():
            # The whole sandbox went with the command (gVisor's OOM): say so now, with the
            # result, rather than on the next call.
            with self._lock:
                if not self._closed:
                    self.last_loss = str(self._lose(sandbox, "it ran out of memory and the engine killed it", ran=True))
        return result

    def _cost(self, result: ExecResult) -> ExecResult:
        """Note what the command cost for the tool call running it (see ``costs``)."""
        cost = result.cost()
        if self.costs is not None and cost is not None:
            self.costs.append(cost)
        return result

    def _using(self, sandbox: Sandbox, use: Any) -> Any:
        """use() on the agent's sandbox; when the sandbox dies under it, raise _lose's SandboxGone."""
        try:
            return use()
        except (SandboxGone, EngineUnavailable) as exc:
            with self._lock:
                if self._closed or sandbox.closed:
                    raise
                reason = getattr(exc, "reason", "") or (
                    "the engine stopped answering (restarted or down)" if isinstance(exc, EngineUnavailable) else str(exc)
                )
                raise self._lose(sandbox, reason, ran=True) from None

    def _first_command(self) -> None:
        """Fire the hook once, when the sandbox is ready and the first command is about to run."""
        if self.on_first_command is not None:
            hook, self.on_first_command = self.on_first_command, None
            hook()

    # -- pygent's Runtime API -----------------------------------------------------
    def bash(self, cmd: str, timeout: float | None = None, background: bool = False, idle_timeout: float | None = None,
             on_output: Any = None) -> str:
        """Run `cmd` in the agent's shell (its state persists: README "Shell state");
        return the compact text the model reads (see format.py).

        background=True: start it and return its handle at once. idle_timeout: after
        that many seconds without output, return what it printed and keep it running
        under a handle. on_output(stream, data) (default: self.on_output) sees the
        output as it arrives. Raises ToolError when asked for either with fresh_per_call.
        """
        if (background or idle_timeout is not None) and self.fresh_per_call:
            raise ToolError("background commands need a sandbox that lives on; this agent uses a fresh sandbox per call")
        if background:
            handle = self.start_background(cmd)
            return (f"started in the background\nhandle: {handle}\n"
                    "(process_output / process_status / process_input / process_kill take this handle)")
        # Report the limit that applied: the loop's deadline may have shortened it.
        limit = self._limit(timeout) or self.policy.timeout
        self.last_loss = None
        self.last_refused = []
        result = self.exec(cmd, timeout=limit, shell_state=True, idle_timeout=idle_timeout, on_chunk=on_output or self.on_output)
        text = format_result(result, round(limit, 2), self.policy.memory, idle_timeout)
        self.last_refused = result.egress_refused
        return text + f"\n[pygent] {self.last_loss}" if self.last_loss else text

    # -- background commands (issue 14) -------------------------------------------
    def start_background(self, cmd: str) -> str:
        """Start `cmd` in the agent's sandbox, with its shell state; its handle."""
        sandbox = self.sandbox
        self._first_command()
        return sandbox.exec_background(cmd, shell_state=True)

    def process_output(self, handle: str, since: int = 0) -> str:
        return format_output(self.sandbox.process_output(handle, since))

    def process_status(self, handle: str) -> str:
        return format_status(self.sandbox.process_status(handle))

    def process_input(self, handle: str, text: str, eof: bool = False) -> str:
        status = self.sandbox.process_input(handle, text, eof=eof)
        return f"wrote {len(text.encode())} bytes{' and closed its input' if eof else ''}\n" + format_status(status)

    def process_kill(self, handle: str) -> str:
        return format_status(self.sandbox.process_kill(handle))

    def process_list(self) -> str:
        if self._sandbox is None or self._sandbox.closed:
            return "no background commands"
        found = self._sandbox.process_list()
        return "\n".join(format_status(p) for p in found) if found else "no background commands"

    def write_file(self, path: str, content: str | bytes) -> str:
        sb = self.sandbox
        full = sb.absolute(path)
        self._using(sb, lambda: sb.write_file(full, content))
        size = len(content.encode() if isinstance(content, str) else content)
        return f"Wrote {size} bytes to {full}"

    def read_file(self, path: str, binary: bool = False) -> str:
        sb = self.sandbox
        data = self._using(sb, lambda: sb.read_file(path))  # symlinks are followed inside the container
        if binary:
            import base64

            return base64.b64encode(data).decode()
        return clean_text(data)

    def upload_file(self, src: str | Path, dest: str | None = None) -> str:
        """Copy a host file or directory into the sandbox (the host path is the caller's choice)."""
        dest = dest or Path(src).name
        self.sandbox.upload(src, dest)
        return f"Uploaded {src} to {self.sandbox.absolute(dest)}"

    def cleanup(self, wait: bool = True, *, keep_sandbox: bool = False) -> None:
        """Remove the sandbox (and a temporary shared workspace). Idempotent.

        wait=False returns before the engine has removed the container (a background
        thread finishes it): for delegated tasks, whose results are already saved.
        keep_sandbox=True drops the sandbox without closing it: it is someone else's (a
        task loop on a Ray node uses its driver's). Either way no command runs here after.
        """
        with self._lock:
            self._closed = True
            sandbox, self._sandbox = self._sandbox, None
        if sandbox is not None and not keep_sandbox:
            sandbox.close(wait=wait)
        self._release_demand()
        if self._tmp_workspace:
            shutil.rmtree(self._tmp_workspace, ignore_errors=True)  # does not follow symlinks
            self._tmp_workspace = None

    close = cleanup
