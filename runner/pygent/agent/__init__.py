"""The agent layer: loop, tools, runtime and delegated tasks.

Import order matters once: every built-in tool must be registered (tools.py,
task_tools.py) before `_snapshot_builtins()` records them as the built-ins.
"""

from . import process_tools as _process_tools  # noqa: F401  registers the background-command tools
from . import task_tools as _task_tools  # noqa: F401  registers the task tools
from .context import ToolContext
from .events import StepEvent
from .loop import Agent, RunResult
from .registry import ToolRegistry
from .runtime import Runtime
from .tasks import TaskManager, TaskStatus
from .tools import _snapshot_builtins, builtin_registry, execute_tool, register_tool, remove_tool, reset_tools, tool

_snapshot_builtins()

__all__ = [
    "Agent", "RunResult", "Runtime", "StepEvent", "TaskManager", "TaskStatus", "ToolContext", "ToolRegistry",
    "builtin_registry", "execute_tool", "register_tool", "remove_tool", "reset_tools", "tool",
]
