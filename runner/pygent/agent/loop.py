"""The agent loop (pygent's Agent): model -> tool calls -> results, until `stop`.

History is a list of plain OpenAI wire dicts, so it is JSON-serialisable and an
Agent can resume from it (`Agent(history=saved)`). Models receive that list.

Tools come from the agent's ToolRegistry (`Agent(tools=...)`; by default the
module-level one in tools.py) and are called with a ToolContext made per step.
"""

from __future__ import annotations

import copy
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .. import call_stats, models, openai_compat
from ..errors import ModelError, PygentError
from ..openai_compat import Message
from ..sandbox import SandboxPolicy
from ..sandbox.result import sum_costs
from . import tools
from .checkpoint import Checkpoint
from .context import ToolContext
from .events import StepEvent
from .format import clean_str
from .prompt import DEFAULT_PERSONA, build_system_msg
from .registry import ToolRegistry
from .runlog import RunLog
from .runtime import Runtime
from .tasks import AgentFactory, TaskManager
from .tools import DEFAULT_TOOLS


@dataclass
class RunResult:
    """Why run_until_stop ended: 'stop', 'ask_user', 'max_steps', 'max_time', 'step_timeout' or 'error'."""

    reason: str
    steps: int
    last_message: Message | None
    error: str | None = None

    def __str__(self) -> str:
        return f"{self.reason} after {self.steps} step(s)" + (f": {self.error}" if self.error else "")


class Agent:
    """An LLM agent whose every tool runs in a disposable sandbox.

    Agent(model=None, runtime=None, model_name=None, system_msg=None, history=None,
          image=None, workspace=None, policy=None, fresh_sandbox_per_call=False,
          persona=None, on_event=None, task_depth=0, tools=None, log_dir=None)

    `tools`: this agent's ToolRegistry (default: the module-level registry, so
    `register_tool` reaches every agent without one). Delegated tasks' agents
    get the same registry.

    `log_dir` (default PYGENT_LOG_DIR; unset: no log): write this agent's
    crash-safe run log there (agent/runlog.py), one JSONL file; its path is
    ``agent.run_log.path``. Delegated tasks' events go into their parent's log.
    """

    def __init__(
        self,
        model: Any = None,
        runtime: Runtime | None = None,
        model_name: str | None = None,
        system_msg: str | None = None,
        history: list[dict[str, Any]] | None = None,
        *,
        image: str | None = None,
        workspace: str | Path | None = None,
        policy: SandboxPolicy | None = None,
        fresh_sandbox_per_call: bool = False,
        persona: str | None = None,
        on_event: Callable[[StepEvent], None] | None = None,
        task_depth: int = 0,
        tools: ToolRegistry | None = None,
        log_dir: str | Path | None = None,
    ) -> None:
        from ..settings import get_settings

        self.model = model if model is not None else models.default_model()
        self.model_name = model_name or get_settings().pygent_model
        self.runtime = runtime or Runtime(image=image, policy=policy, workspace=workspace, fresh_per_call=fresh_sandbox_per_call, task_depth=task_depth)
        self.persona = persona or DEFAULT_PERSONA
        self.on_event = on_event
        self.tools: ToolRegistry = DEFAULT_TOOLS if tools is None else tools
        self._custom_system = system_msg
        self.history: list[dict[str, Any]] = [dict(m) if isinstance(m, dict) else openai_compat.message_to_dict(m) for m in (history or [])]
        if not self.history:
            self.history.append({"role": "system", "content": self._system_msg()})
        self.tasks = TaskManager(parent=self, agent_factory=_task_agents(self.tools))
        self.runtime.tasks = self.tasks
        self.runtime.on_sandbox = _sandbox_events(self)
        if log_dir is None and task_depth == 0:
            log_dir = get_settings().pygent_log_dir
        #: The crash-safe run log (None: not logging); ``run_log.path`` is its file.
        self.run_log: RunLog | None = RunLog(log_dir, model=self.model_name, image=self.runtime.image) if log_dir else None
        #: Steps taken (Agent.step calls), kept in checkpoints.
        self.steps = 0
        self._finalizer = weakref.finalize(self, _cleanup, self.runtime, self.tasks, self.run_log)

    # -- prompt -------------------------------------------------------------
    def _system_msg(self) -> str:
        return self._custom_system or build_system_msg(self.persona, self.tools.schemas(), self.runtime.image)

    @property
    def system_msg(self) -> str:
        return self.history[0]["content"] if self.history and self.history[0].get("role") == "system" else self._system_msg()

    # -- one round ----------------------------------------------------------
    def step(self, user_msg: str | None) -> Message:
        """Send the history (plus `user_msg`) to the model, run its tool calls, return its message.

        Raises ModelError / APIError when the model fails; tool failures are
        returned to the model as tool results instead.
        """
        if user_msg is not None:
            self.history.append({"role": "user", "content": user_msg})
        self.steps += 1
        started = time.monotonic()
        with call_stats.record_calls() as calls:
            try:
                message = models.call_model(self.model, self.history, self.model_name, self.tools.schemas())
            except PygentError as exc:
                self._emit(_model_event(time.monotonic() - started, calls, str(exc)))
                raise
        self._emit(_model_event(time.monotonic() - started, calls, None))
        self.history.append(message.to_dict())
        self._emit(StepEvent("assistant", content=message.content, duration=time.monotonic() - started,
                             data={"tool_calls": [c.function.name for c in message.tool_calls or []]}))
        ctx = self.tool_context()
        for call in message.tool_calls or []:
            t0 = time.monotonic()
            self.runtime.costs = []
            try:
                output = clean_str(self.tools.execute(call, ctx))  # any tool's text, not only bash's
            finally:
                costs, self.runtime.costs = self.runtime.costs, None
            self.history.append({"role": "tool", "tool_call_id": call.id, "content": output})
            self._emit(StepEvent("tool", content=output, tool=call.function.name, arguments=call.function.arguments,
                                 duration=time.monotonic() - t0, data={"cost": sum_costs(costs)} if costs else {}))
        self.steps += 1
        self._emit(StepEvent("step", duration=time.monotonic() - started, data={"n": self.steps}))
        return message

    # -- checkpoints (issue 24) ----------------------------------------------------
    def checkpoint(self) -> Checkpoint:
        """The conversation, the step count and a snapshot of the sandbox, now.
        Raises what Sandbox.snapshot raises (SnapshotTooLarge, SandboxGone...)."""
        return Checkpoint(tuple(copy.deepcopy(self.history)), self.steps, self.runtime.snapshot())

    def restore(self, cp: Checkpoint) -> None:
        """Rewind to `cp`: its conversation and step count, and a sandbox restored from its
        snapshot (the current sandbox is removed). Raises what open_sandbox(snapshot=) raises."""
        self.runtime.restore(cp.snapshot)
        self.history = cp.messages()
        self.steps = cp.steps

    def fork(self, cp: Checkpoint, n: int = 1) -> "list[Agent]":
        """n new agents continuing from `cp`, each with its own sandbox restored from its
        snapshot (started side by side); same model, tools, persona, image and policy.
        Close them (or use them as context managers). Raises what Sandbox.fork raises."""
        from ..sandbox import open_forks

        if not isinstance(n, int) or n < 1:
            raise ValueError("fork(cp, n) needs a positive number of agents")
        sandboxes = open_forks(cp.snapshot, n) if cp.snapshot is not None else [None] * n
        agents = []
        for sandbox in sandboxes:
            runtime = Runtime(image=self.runtime.image, policy=self.runtime.policy, task_depth=self.runtime.task_depth)
            runtime.restore(None, sandbox)
            agent = Agent(self.model, runtime, self.model_name, self._custom_system, cp.messages(),
                          persona=self.persona, on_event=self.on_event, task_depth=self.runtime.task_depth, tools=self.tools)
            agent.steps = cp.steps
            agents.append(agent)
        return agents

    def tool_context(self) -> ToolContext:
        """What this agent's tools may use: its runtime, task manager and event sink.

        Made per step, not kept: the context refers to the Agent (its events),
        and the Agent must stay collectable (its finalizer removes the container).
        """
        return ToolContext(self.runtime, tasks=self.tasks, emit=self._emit, live=self.on_event is not None)

    def run_until_stop(
        self,
        user_msg: str,
        max_steps: int = 20,
        step_timeout: float | None = None,
        max_time: float | None = None,
    ) -> RunResult:
        """Loop until the model calls `stop` or `ask_user`, or a limit is reached; say which.

        step_timeout bounds each step's commands (they are killed at the limit);
        max_time bounds the whole run. Model errors end the run with reason 'error'.
        """
        start = time.monotonic()
        if self.run_log is not None:
            self.run_log.run_started(user_msg, max_steps=max_steps, step_timeout=step_timeout, max_time=max_time)
        msg: str | None = user_msg
        last: Message | None = None
        for n in range(1, max_steps + 1):
            if getattr(self.runtime, "closed", False):
                # Closed (e.g. a cancelled task): every tool would fail; don't keep calling the model.
                return self._end(RunResult("error", n - 1, last, error="the agent was closed"))
            if max_time is not None and time.monotonic() - start >= max_time:
                return self._end(RunResult("max_time", n - 1, last))
            t0 = time.monotonic()
            limits = [d for d in (t0 + step_timeout if step_timeout else None, start + max_time if max_time else None) if d]
            self.runtime.deadline = min(limits) if limits else None
            try:
                last = self.step(msg)
            except PygentError as exc:
                return self._end(RunResult("error", n, last, error=str(exc)))
            finally:
                self.runtime.deadline = None
            calls = [c.function.name for c in last.tool_calls or []]
            for name in tools.STOP_TOOLS:
                if name in calls:
                    return self._end(RunResult(name, n, last))
            if step_timeout is not None and time.monotonic() - t0 > step_timeout:
                return self._end(RunResult("step_timeout", n, last))
            msg = None if calls else "continue"
        return self._end(RunResult("max_steps", max_steps, last))

    def _end(self, result: RunResult) -> RunResult:
        self.last_run = result
        if self.run_log is not None:
            self.run_log.run_ended(result.reason, result.steps, result.error)
        return result

    def _emit(self, event: StepEvent) -> None:
        if self.run_log is not None:
            try:
                self.run_log(event)
            except Exception:
                pass  # a full disk must not break the loop either
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:
                pass  # a display must never break the loop

    # -- lifetime ------------------------------------------------------------
    def close(self) -> None:
        """Cancel delegated tasks and remove every container this agent started."""
        self._finalizer()

    def __enter__(self) -> "Agent":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _task_agents(registry: ToolRegistry) -> AgentFactory:
    """How an agent's delegated tasks build their agents: the default model, the parent's tools.

    A closure over the registry, not a bound method: the task manager must not
    keep its Agent alive (the Agent's finalizer is what removes containers).
    """

    def make(*, runtime: Runtime, persona: str | None, task_depth: int) -> "Agent":
        return Agent(model=models.default_model(), runtime=runtime, persona=persona, task_depth=task_depth, tools=registry)

    return make


def _model_event(latency: float, calls: list[call_stats.CallRecord], error: str | None) -> StepEvent:
    """The "model" event of one model call: its latency, retries and token usage (when reported)."""
    attempts = sum(c["attempts"] for c in calls)
    return StepEvent("model", duration=latency, data={
        "latency_s": round(latency, 6),
        "attempts": attempts,
        "retries": sum(c["retries"] for c in calls),
        "usage": call_stats.sum_usage(calls),
        "error": error[:500] if error else None,
        "requests": list(calls),
    })


def _sandbox_events(agent: "Agent") -> Callable[[str, dict[str, Any]], None]:
    """The runtime's hook for its sandbox's life (created, died, recovered) -> "sandbox" events.

    Holds the Agent weakly: the runtime must not keep it alive (its finalizer removes containers).
    """
    ref = weakref.ref(agent)

    def emit(what: str, data: dict[str, Any]) -> None:
        owner = ref()
        if owner is not None:
            owner._emit(StepEvent("sandbox", content=what, data=data))

    return emit


def _cleanup(runtime: Runtime, tasks: Any, run_log: RunLog | None = None) -> None:
    try:
        tasks.close()
    finally:
        try:
            runtime.cleanup()
        finally:
            if run_log is not None:
                run_log.close()


__all__ = ["Agent", "RunResult", "StepEvent", "ModelError"]
