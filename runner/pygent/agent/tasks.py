"""Delegated tasks: each a sub-agent in its own fresh sandbox, run in the background.

Why this shape: `delegate_task` must return at once (the model keeps working),
tasks beyond the concurrency bound wait in a queue instead of being refused,
and nothing a task does — a model error, a crash, a hang — reaches the parent.
A per-task wall clock is enforced by a watchdog that removes the task's
container, which ends whatever command the task was running.

The manager builds each sub-agent with the agent factory it is given
(`TaskManager(agent_factory=...)`; the Agent passes one), so this module never
imports the agent loop: loop imports tasks, not the other way round. The
model-facing task tools are in task_tools.py.

A task's results outlive its container: when it ends, its /workspace is
snapshotted (a tar kept in a host temp file, bounded in size), and
`collect_file` copies from that snapshot into the parent's sandbox — tar to
tar, never through a host path the container controls.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import queue
import random
import tarfile
import tempfile
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import DelegationDepthExceeded, SandboxGone, TaskError
from .events import StepEvent
from .slots import SandboxSlots

if TYPE_CHECKING:
    from .runtime import Runtime

#: Largest workspace snapshot kept for a finished task.
MAX_SNAPSHOT_BYTES = 64 << 20
#: Steps a sub-agent may take before it is stopped.
DEFAULT_TASK_STEPS = 30


class _Lost(Exception):
    """Internal: the task's runtime lost its sandbox (the message is the reason)."""


class TaskAgent(Protocol):
    """What the manager uses of a sub-agent (pygent.agent.Agent is one)."""

    runtime: "Runtime"
    history: list[dict[str, Any]]
    tasks: "TaskManager"

    def run_until_stop(self, user_msg: str, max_steps: int = ..., step_timeout: float | None = ..., max_time: float | None = ...) -> Any: ...

    def close(self) -> None: ...


class AgentFactory(Protocol):
    """Builds a task's sub-agent on the runtime (fresh sandbox) the manager made for it."""

    def __call__(self, *, runtime: "Runtime", persona: str | None, task_depth: int) -> TaskAgent: ...


class TaskParent(Protocol):
    """What the manager uses of the agent that owns it: its sandbox (files in and out) and its events."""

    runtime: "Runtime"
    on_event: Any

    def _emit(self, event: StepEvent) -> None: ...


class TaskStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    LOST = "lost"  #: its sandbox died (removed, killed, OOM, engine restart); `reason` says how

    @property
    def ended(self) -> bool:
        return self not in (TaskStatus.QUEUED, TaskStatus.RUNNING)


@dataclass
class Task:
    id: str
    prompt: str
    timeout: float
    step_timeout: float | None = None
    image: str | None = None
    persona: str | None = None
    files: list[str] = field(default_factory=list)
    status: TaskStatus = TaskStatus.QUEUED
    reason: str = ""
    steps: int = 0
    created: float = field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None
    first_command: float | None = None  #: time.time() of the task's first command (for benchmarks)
    fork_from: Any = None  #: delegate_task fork=true: the parent's Snapshot its sandbox starts from (issue 24)
    answer: str | None = None  #: the sub-agent's last text
    container: str | None = None
    snapshot: str | None = None  #: path of the workspace tar, once ended
    agent: TaskAgent | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def to_dict(self) -> dict[str, Any]:
        now = time.time()
        return {
            "task_id": self.id,
            "status": self.status.value,
            "reason": self.reason,
            "steps": self.steps,
            "elapsed": round(((self.ended or now) - (self.started or self.created)), 3),
            "answer": self.answer,
            "image": self.image,
            "persona": self.persona,
            "container": self.container,
        }


def _watched(parent: Any) -> bool:
    """Does anyone read the parent's events (a display, --json, its run log)?"""
    return parent is not None and (parent.on_event is not None or getattr(parent, "run_log", None) is not None)


def _forward(parent: Any, task_id: str) -> Any:
    """A sub-agent's event sink: each event goes to the parent as a "task_step" of this task
    (so a task's own tasks nest). Running output chunks stay out: the tool's result has them.
    Holds the parent weakly (the parent's finalizer removes containers)."""
    ref = weakref.ref(parent)

    def emit(event: StepEvent) -> None:
        owner = ref()
        if owner is not None and event.kind != "output":
            owner._emit(StepEvent("task_step", data={"task_id": task_id, "event": event.to_dict()}))

    return emit


class TaskManager:
    """Runs one agent's delegated tasks. Closing it cancels them and removes their containers.

    `agent_factory` builds each task's sub-agent; without one, start() refuses
    tasks (the Agent always passes one: the default model and the parent's tools).
    """

    def __init__(
        self,
        parent: TaskParent | None = None,
        max_tasks: int | None = None,
        max_depth: int | None = None,
        *,
        agent_factory: AgentFactory | None = None,
    ) -> None:
        from ..settings import get_settings

        s = get_settings()
        # Weak: the Agent's finalizer holds this manager, so a strong reference would keep
        # a dropped Agent (and its container) alive until interpreter exit.
        self._parent = weakref.ref(parent) if parent is not None else None
        # Must not hold the parent Agent strongly either (see above): the Agent passes a closure.
        self.agent_factory = agent_factory
        self.max_tasks = max_tasks or s.pygent_max_tasks
        #: Task sandboxes alive at once (issue 27): a slot is freed when its container is gone,
        #: not when the task's loop ends. Made with the worker pool (max_tasks may be changed
        #: until then); a cluster-wide bound with the same API may be set here instead.
        self.slots: SandboxSlots | None = None
        self.max_depth = s.pygent_task_depth if max_depth is None else max_depth
        self.default_timeout = s.pygent_task_timeout
        self.tasks: dict[str, Task] = {}
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._dispatched = False
        self._watchdog: threading.Thread | None = None
        self._closed = False
        self._snapdir: str | None = None
        from ..sandbox import demand

        self._release_demand = demand.hold(self)  # warm pools stay while this manager is open

    @property
    def parent(self) -> TaskParent | None:
        return self._parent() if self._parent is not None else None

    # -- starting -----------------------------------------------------------
    def start(
        self,
        prompt: str,
        *,
        files: list[str] | None = None,
        timeout: float | None = None,
        step_timeout: float | None = None,
        image: str | None = None,
        persona: str | None = None,
        depth: int = 0,
        fork: bool = False,
    ) -> Task:
        """Queue a task and return at once.

        Raises:
            DelegationDepthExceeded: `depth` is at the limit (PYGENT_TASK_DEPTH).
            TaskError: the manager is closed, or has no agent factory.
        """
        if self._closed:
            raise TaskError("this agent is closed; its task manager takes no new tasks")
        if self.agent_factory is None:
            raise TaskError("this task manager has no agent factory; create it with TaskManager(agent_factory=...)")
        if depth >= self.max_depth:
            raise DelegationDepthExceeded(
                f"delegation depth {depth + 1} exceeds the limit of {self.max_depth} "
                "(PYGENT_TASK_DEPTH); do this work yourself instead of delegating"
            )
        task = Task(
            id=self._new_id(),
            prompt=prompt,
            timeout=float(timeout or self.default_timeout),
            step_timeout=step_timeout,
            image=image,
            persona=persona,
            files=list(files or []),
        )
        parent_rt = self.parent.runtime if self.parent is not None else None
        if fork:
            task.fork_from = _fork_point(parent_rt, image)
        with self._lock:
            self.tasks[task.id] = task
            if self._executor is None and not self._dispatched:
                self._dispatched = True
                _close_at_exit(self)
        _dispatch_later(self, (task, parent_rt, depth))
        self._event(task)
        return task

    def _new_id(self) -> str:
        """8 hex digits, unique in this manager. Why not uuid4: os.urandom releases the GIL, and
        getting it back behind busy task threads cost the parent's delegate_task call milliseconds."""
        while True:
            task_id = f"{random.getrandbits(32):08x}"
            if task_id not in self.tasks:
                return task_id

    def _submit(self, item: tuple) -> None:
        """On the dispatcher thread: hand one queued task to this manager's worker pool."""
        with self._lock:
            if self._closed:
                return  # close() marked it cancelled
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=self.max_tasks, thread_name_prefix="pygent-task")
                if self.slots is None:
                    self.slots = SandboxSlots(self.max_tasks)
                self._watchdog = threading.Thread(target=self._watch, name="pygent-task-watchdog", daemon=True)
                self._watchdog.start()
            executor = self._executor
        try:
            executor.submit(self._run, *item)
        except RuntimeError:  # shut down by close() meanwhile
            pass

    # -- running ------------------------------------------------------------
    def _run(self, task: Task, parent_rt: "Runtime | None", depth: int) -> None:
        from .runtime import Runtime

        with self._lock:
            if task.status != TaskStatus.QUEUED or self._closed:
                return  # cancelled while queued, or the parent is closing (close() marks it)
            task.status = TaskStatus.RUNNING
            task.started = time.time()
        self._event(task)
        agent = None
        try:
            parent_image = parent_rt.image if parent_rt is not None else None
            runtime = Runtime(image=task.image or parent_image, policy=parent_rt.policy.model_copy(update={"workspace": None}) if parent_rt else None, task_depth=depth + 1)
            runtime.recover = False  # a dead sandbox ends the task (lost), it is not silently replaced
            runtime.slots = self.slots  # at most max_tasks task sandboxes exist, counted until removed
            if task.fork_from is not None:
                runtime.restore(task.fork_from)
            runtime.on_first_command = lambda: setattr(task, "first_command", task.first_command or time.time())
            assert self.agent_factory is not None  # checked by start()
            agent = self.agent_factory(runtime=runtime, persona=task.persona, task_depth=depth + 1)
            agent.tasks.max_depth = self.max_depth
            if _watched(self.parent):
                agent.on_event = _forward(self.parent, task.id)
            task.agent = agent
            if task.files and parent_rt is not None:
                self._copy_files(parent_rt, runtime, task.files)
            if task.status != TaskStatus.RUNNING:
                return
            result = _task_loop()(agent, task, self.agent_factory, depth + 1, DEFAULT_TASK_STEPS)
            task.steps = result.steps
            task.answer = _last_text(agent.history)
            if runtime.lost is not None:
                raise _Lost(runtime.lost)
            outcome, reason = (TaskStatus.FAILED, result.error or "error") if result.reason == "error" else (
                (TaskStatus.TIMEOUT, f"no stop within {task.timeout:g}s") if result.reason == "max_time" else (TaskStatus.FINISHED, result.reason)
            )
        except _Lost as exc:
            outcome, reason = TaskStatus.LOST, f"its sandbox died: {exc}; its workspace is lost"[:2000]
        except SandboxGone as exc:  # e.g. while copying the task's files in
            outcome, reason = TaskStatus.LOST, f"its sandbox died: {exc.reason}; its workspace is lost"[:2000]
        except BaseException as exc:  # never reaches the parent
            outcome, reason = TaskStatus.FAILED, f"{type(exc).__name__}: {exc}"[:2000]
        finally:
            if agent is not None:
                task.steps = task.steps or sum(1 for m in agent.history if m.get("role") == "assistant")
                cid = _container_of(agent.runtime)
                if cid is not None:
                    task.container = cid
                    self._snapshot(task, agent.runtime)
                # The results are saved: the engine removes the container in the background.
                agent.runtime.cleanup(wait=False)
                agent.close()
                task.agent = None
        with self._lock:
            if not task.status.ended:
                task.status, task.reason = outcome, reason
                task.ended = time.time()
        task.done.set()
        self._event(task)

    def _copy_files(self, parent: "Runtime", child: "Runtime", files: list[str]) -> None:
        """Parent sandbox -> task sandbox, tar to tar: paths resolve inside the containers only."""
        for path in files:
            src, raw = _archive_following_links(parent.sandbox, parent.sandbox.absolute(path))
            dest = child.sandbox.absolute(path)
            raw = _renamed_root(raw, posixpath.basename(src), posixpath.basename(dest))
            parent_dir = posixpath.dirname(dest)
            if parent_dir != "/workspace":
                child.sandbox.exec(f"mkdir -p {_quote(parent_dir)}", timeout=10)
            child.sandbox.put_archive(parent_dir, raw)

    def _snapshot(self, task: Task, runtime: "Runtime") -> None:
        try:
            raw = runtime.sandbox.export_tree("/workspace", max_bytes=MAX_SNAPSHOT_BYTES)
        except Exception as exc:
            task.reason = (task.reason + "; " if task.reason else "") + f"no workspace snapshot: {str(exc)[:200]}"
            return
        with self._lock:
            if self._snapdir is None:
                self._snapdir = tempfile.mkdtemp(prefix="pygent-tasks-")
        path = os.path.join(self._snapdir, f"{task.id}.tar")
        with open(path, "wb") as f:
            f.write(raw)
        task.snapshot = path

    def _watch(self) -> None:
        """Enforce each task's wall clock: past it, remove its container and mark it timed out."""
        while not self._closed:
            now = time.time()
            for task in list(self.tasks.values()):
                if task.status == TaskStatus.RUNNING and task.started and now - task.started > task.timeout + 1.0:
                    self._stop(task, TaskStatus.TIMEOUT, f"killed after {task.timeout:g}s wall clock")
            time.sleep(0.1)

    def _stop(self, task: Task, status: TaskStatus, reason: str) -> None:
        with self._lock:
            if task.status.ended:
                return
            task.status, task.reason, task.ended = status, reason, time.time()
        agent = task.agent
        if agent is not None:
            task.container = _container_of(agent.runtime) or task.container
            agent.close()  # removes its container now: a running command ends with it
        task.done.set()
        self._event(task)

    def _event(self, task: Task) -> None:
        parent = self.parent
        if _watched(parent):
            parent._emit(StepEvent("task", content=task.status.value, data=task.to_dict()))

    # -- queries and control ----------------------------------------------
    def get(self, task_id: str) -> Task:
        task = self.tasks.get(task_id)
        if task is None:
            raise TaskError(f"no task {task_id!r}; known: {', '.join(self.tasks) or 'none'}")
        return task

    def status(self, task_id: str) -> dict[str, Any]:
        return self.get(task_id).to_dict()

    def list(self) -> list[dict[str, Any]]:
        return [t.to_dict() for t in self.tasks.values()]

    def wait(self, task_ids: list[str] | None = None, timeout: float | None = None) -> list[dict[str, Any]]:
        """Block until the tasks end or `timeout` seconds pass; return their statuses."""
        chosen = [self.get(t) for t in task_ids] if task_ids else list(self.tasks.values())
        deadline = None if timeout is None else time.monotonic() + timeout
        for task in chosen:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            task.done.wait(left)
        return [t.to_dict() for t in chosen]

    def cancel(self, task_id: str) -> dict[str, Any]:
        task = self.get(task_id)
        self._stop(task, TaskStatus.CANCELLED, "cancelled")
        return task.to_dict()

    def collect_file(self, task_id: str, path: str, dest: str | None = None) -> str:
        """Copy `path` from the task's workspace snapshot into the parent's sandbox at `dest`."""
        task = self.get(task_id)
        if task.snapshot is None:
            state = "has not ended yet" if not task.status.ended else "left no workspace snapshot"
            raise TaskError(f"task {task_id} {state}; wait_tasks first")
        if self.parent is None:
            raise TaskError("no parent sandbox to copy into")
        rel = posixpath.relpath(posixpath.normpath(posixpath.join("/workspace", path)), "/workspace")
        if rel.startswith(".."):
            raise TaskError(f"{path} is outside the task's /workspace (only the workspace is kept)")
        dest_abs = self.parent.runtime.sandbox.absolute(dest or rel)
        out = io.BytesIO()
        found = 0
        prefix = "workspace/" + rel if rel != "." else "workspace"
        new_root = posixpath.basename(dest_abs)
        with tarfile.open(task.snapshot) as src, tarfile.open(fileobj=out, mode="w") as dst:
            for member in src:
                if member.name != prefix and not member.name.startswith(prefix + "/"):
                    continue
                member.name = new_root + member.name[len(prefix):]
                found += 1
                dst.addfile(member, src.extractfile(member) if member.isfile() else None)
        if not found:
            raise TaskError(f"{path} does not exist in task {task_id}'s workspace")
        parent_dir = posixpath.dirname(dest_abs)
        sandbox = self.parent.runtime.sandbox
        if parent_dir != "/workspace":
            sandbox.exec(f"mkdir -p {_quote(parent_dir)}", timeout=10)
        sandbox.put_archive(parent_dir, out.getvalue())
        return f"Copied {path} from task {task_id} to {dest_abs}"

    def close(self) -> None:
        """Cancel every task and remove every container they started."""
        with self._lock:
            self._closed = True  # under the lock: no queued task starts from here on (_run checks)
        self._release_demand()
        # Queued ones first: stopping a running task frees a worker that would pick the next one up.
        for task in list(self.tasks.values()):
            if task.status == TaskStatus.QUEUED:
                with self._lock:
                    task.status, task.reason, task.ended = TaskStatus.CANCELLED, "parent closed", time.time()
                task.done.set()
        for task in list(self.tasks.values()):
            if task.status == TaskStatus.RUNNING:
                self._stop(task, TaskStatus.CANCELLED, "parent closed")
        with self._lock:
            executor = self._executor
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        if self._snapdir:
            import shutil

            shutil.rmtree(self._snapdir, ignore_errors=True)


def _task_loop() -> Any:
    """Where a task's loop runs: here, or with the Ray backend on the node that holds its
    sandbox (ray_loop.py). Both take (agent, task, factory, depth, max_steps)."""
    from ..sandbox.registry import chosen_name

    if chosen_name() == "ray":
        from .ray_loop import run_on_node

        return run_on_node
    return _local_loop


def _local_loop(agent: TaskAgent, task: Task, factory: Any, depth: int, max_steps: int) -> Any:
    return agent.run_until_stop(task.prompt, max_steps=max_steps, step_timeout=task.step_timeout, max_time=task.timeout)


def _archive_following_links(sandbox: Any, path: str) -> tuple[str, bytes]:
    """(resolved path, tar of it): a listed symlink is followed inside the container.

    The engine's archive API resolves all but the last path component and
    returns a symlink itself, which would dangle in the task's container (or
    point at the task's own files); follow it, one archive per hop.
    """
    for _ in range(40):
        raw = sandbox.get_archive(path)
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            first = tar.next()
        if first is None or not first.issym():
            return path, raw
        path = sandbox.absolute(posixpath.join(posixpath.dirname(path), first.linkname))
    raise TaskError(f"{path}: too many levels of symbolic links")


def _renamed_root(raw: bytes, old: str, new: str) -> bytes:
    """The tar with its top entry `old` (and everything under it) renamed to `new`."""
    if old == new:
        return raw
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(raw)) as src, tarfile.open(fileobj=out, mode="w") as dst:
        for member in src:
            for attr in ("name", "linkname") if member.islnk() else ("name",):
                value = getattr(member, attr)
                if value == old or value.startswith(old + "/"):
                    setattr(member, attr, new + value[len(old):])
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
    return out.getvalue()


def _container_of(runtime: "Runtime") -> str | None:
    """The runtime's container id, without starting one (and without racing its cleanup)."""
    sandbox = runtime._sandbox
    return sandbox.id if sandbox is not None and not sandbox.closed else None


_queue: "queue.SimpleQueue[tuple[TaskManager, tuple]]" = queue.SimpleQueue()
_dispatcher: threading.Thread | None = None
_dispatcher_lock = threading.Lock()


def _dispatch_later(manager: TaskManager, item: tuple) -> None:
    """Queue a task for the process's one dispatcher thread, which submits it to its manager.

    Why: the executor starts a worker thread on submit (up to max_tasks), and a thread
    start waits for the new thread; done in delegate_task, that wait behind the running
    tasks' threads was most of the call's time (p95 15-17 ms at N=8/32). Queued here, the
    call costs a put; only the process's first delegated task starts the dispatcher.
    """
    global _dispatcher
    if _dispatcher is None:
        with _dispatcher_lock:
            if _dispatcher is None:
                _dispatcher = threading.Thread(target=_dispatch_forever, name="pygent-task-dispatch", daemon=True)
                _dispatcher.start()
    _queue.put((manager, item))


def _forget_dispatcher() -> None:
    global _dispatcher, _queue
    _dispatcher, _queue = None, queue.SimpleQueue()  # a forked child has no such thread


os.register_at_fork(after_in_child=_forget_dispatcher)


def _dispatch_forever() -> None:
    while True:
        manager, item = _queue.get()
        try:
            manager._submit(item)
        except Exception:
            pass  # the task stays queued; its manager's close() cancels it


_open_managers: "weakref.WeakSet[TaskManager]" = weakref.WeakSet()
_exit_hook = False


def _close_at_exit(manager: TaskManager) -> None:
    """Cancel running tasks when the interpreter exits.

    Why a threading exit hook and not atexit: the executor's worker threads are
    joined (waiting for every running task to end, up to its time limit) before
    atexit handlers run, so the Agent finalizers would come too late.
    """
    global _exit_hook
    _open_managers.add(manager)
    if not _exit_hook:
        _exit_hook = True
        try:
            threading._register_atexit(_close_open_managers)  # type: ignore[attr-defined]
        except (AttributeError, RuntimeError):
            pass  # interpreter already shutting down


def _close_open_managers() -> None:
    for manager in list(_open_managers):
        try:
            manager.close()
        except Exception:
            pass


def _quote(path: str) -> str:
    import shlex

    return shlex.quote(path)


def _fork_point(parent_rt: "Runtime | None", image: str | None) -> Any:
    """delegate_task fork=true: the parent's snapshot, taken now (None: no sandbox yet, nothing to copy).
    Raises TaskError (no parent, another image) and what Sandbox.snapshot raises."""
    if parent_rt is None:
        raise TaskError("fork needs a parent agent's sandbox to copy")
    if image is not None and image != parent_rt.image:
        raise TaskError("a forked task runs in its parent's image: leave image out, or do not fork")
    return parent_rt.snapshot()


def _last_text(history: list[dict[str, Any]]) -> str | None:
    for m in reversed(history):
        if m.get("role") == "assistant" and m.get("content"):
            return str(m["content"])[:4000]
    return None
