"""The agent loop (pygent's Agent): model -> tool calls -> results, until `stop`.

History is a list of plain OpenAI wire dicts, so it is JSON-serialisable and an
Agent can resume from it (`Agent(history=saved)`). Models receive that list.

Tools come from the agent's ToolRegistry (`Agent(tools=...)`; by default the
module-level one in tools.py) and are called with a ToolContext made per step.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .. import call_stats, models, openai_compat
from ..errors import ModelError, PygentError
from ..openai_compat import Message
from ..sandbox import SandboxPolicy
from . import tools
from .context import ToolContext
from .events import StepEvent
from .format import clean_str
from .prompt import DEFAULT_PERSONA, build_system_msg
from .registry import ToolRegistry
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
          persona=None, on_event=None, task_depth=0, tools=None)

    `tools`: this agent's ToolRegistry (default: the module-level registry, so
    `register_tool` reaches every agent without one). Delegated tasks' agents
    get the same registry.
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
        self._finalizer = weakref.finalize(self, _cleanup, self.runtime, self.tasks)

    # -- prompt -------------------------------------------------------------
    def _system_msg(self) -> str:
        return self._custom_system or build_system_msg(self.persona, self.tools.schemas(), self.runtime.image, self.runtime.policy.network)

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
            output = clean_str(self.tools.execute(call, ctx))  # any tool's text, not only bash's
            self.history.append({"role": "tool", "tool_call_id": call.id, "content": output})
            self._emit(StepEvent("tool", content=output, tool=call.function.name, arguments=call.function.arguments,
                                 duration=time.monotonic() - t0))
        return message

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
        return result

    def _emit(self, event: StepEvent) -> None:
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


def _cleanup(runtime: Runtime, tasks: Any) -> None:
    try:
        tasks.close()
    finally:
        runtime.cleanup()


__all__ = ["Agent", "RunResult", "StepEvent", "ModelError"]
