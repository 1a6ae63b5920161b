"""The agent layer: loop, tools, runtime and delegated tasks."""

from . import process_tools as _process_tools  # noqa: F401  registers the background-command tools
from . import tasks as _tasks  # noqa: F401  registers the task tools
from .loop import Agent, RunResult, StepEvent
from .runtime import Runtime
from .tasks import TaskManager, TaskStatus
from .tools import _snapshot_builtins, execute_tool, register_tool, remove_tool, reset_tools, tool

_snapshot_builtins()

__all__ = [
    "Agent", "RunResult", "Runtime", "StepEvent", "TaskManager", "TaskStatus",
    "execute_tool", "register_tool", "remove_tool", "reset_tools", "tool",
]
