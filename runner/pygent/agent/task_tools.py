"""The task tools a model uses: delegate_task, task_status, list_tasks, cancel_task, wait_tasks, collect_file.

Why apart from tasks.py: they are thin wrappers over the calling agent's
TaskManager, reached through the ToolContext (`ctx.tasks`), so the manager
itself needs neither the tool registry nor the agent loop. Registered in the
default registry when pygent.agent is imported; their output text is the
manager's (JSON statuses, "started <id>", "Copied ...").
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..errors import PygentError, TaskError
from .context import ToolContext
from .tools import tool

if TYPE_CHECKING:
    from .tasks import TaskManager


def _manager(ctx: ToolContext) -> "TaskManager":
    """The calling agent's task manager. Raises TaskError (a runtime no agent owns has none)."""
    if ctx.tasks is None:
        raise TaskError("this runtime has no task manager")
    return ctx.tasks


@tool(
    name="delegate_task",
    description="Start a background sub-agent in its own container; returns its task id at once. "
    "By default its workspace starts empty; with fork: true it starts as a copy of your workspace and shell "
    "state (variables, functions, cwd) as they are now, and what it changes there does not touch yours.",
    parameters={
        "type": "object",
        "properties": {
            "prompt": {"type": "string", "minLength": 1, "description": "Instruction for the sub-agent"},
            "files": {"type": "array", "items": {"type": "string"}, "description": "Files to copy from your sandbox into the task's"},
            "timeout": {"type": "number", "exclusiveMinimum": 0, "description": "Max seconds for the task"},
            "step_timeout": {"type": "number", "exclusiveMinimum": 0, "description": "Max seconds per step"},
            "image": {"type": "string", "description": "Sandbox image for the task"},
            "persona": {"type": "string", "description": "Persona for the sub-agent"},
            "fork": {"type": "boolean", "description": "Start from a copy of your current workspace and shell state (default false: an empty workspace)"},
        },
        "required": ["prompt"],
        "additionalProperties": False,
    },
    context=True,
)
def _delegate_task(ctx: ToolContext, prompt: str, **kw: Any) -> str:
    try:
        task = _manager(ctx).start(prompt, depth=ctx.task_depth, **kw)
    except PygentError as exc:
        return f"error: {exc}"
    return f"started {task.id}"


_TASK_ID = {"type": "object", "properties": {"task_id": {"type": "string"}}, "required": ["task_id"], "additionalProperties": False}


@tool(name="task_status", description="Status of a delegated task.", parameters=_TASK_ID, context=True)
def _task_status(ctx: ToolContext, task_id: str) -> str:
    return json.dumps(_manager(ctx).status(task_id))


@tool(name="list_tasks", description="All delegated tasks and their status.", parameters={"type": "object", "properties": {}}, context=True)
def _list_tasks(ctx: ToolContext) -> str:
    return json.dumps(_manager(ctx).list())


@tool(name="cancel_task", description="Cancel a delegated task and remove its container.", parameters=_TASK_ID, context=True)
def _cancel_task(ctx: ToolContext, task_id: str) -> str:
    return json.dumps(_manager(ctx).cancel(task_id))


@tool(
    name="wait_tasks",
    description="Block until the given tasks (default: all) end or the timeout passes; returns their status.",
    parameters={
        "type": "object",
        "properties": {
            "task_ids": {"type": "array", "items": {"type": "string"}},
            "timeout": {"type": "number", "minimum": 0, "description": "Seconds to wait at most (default 300)"},
        },
        "additionalProperties": False,
    },
    context=True,
)
def _wait_tasks(ctx: ToolContext, task_ids: list[str] | None = None, timeout: float = 300.0) -> str:
    return json.dumps(_manager(ctx).wait(task_ids, timeout))


@tool(
    name="collect_file",
    description="Copy a file or directory from a finished task's workspace into yours.",
    parameters={
        "type": "object",
        "properties": {"task_id": {"type": "string"}, "path": {"type": "string", "minLength": 1}, "dest": {"type": "string"}},
        "required": ["task_id", "path"],
        "additionalProperties": False,
    },
    context=True,
)
def _collect_file(ctx: ToolContext, task_id: str, path: str, dest: str | None = None) -> str:
    return _manager(ctx).collect_file(task_id, path, dest)
