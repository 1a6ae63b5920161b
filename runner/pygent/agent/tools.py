"""The module-level tool registry (pygent's API) and the built-in bash/file/stop/ask_user tools.

pygent's tool API is module-level: `register_tool`, `@tool`, `remove_tool`,
`clear_tools`, `reset_tools`, `TOOLS`, `TOOL_SCHEMAS`, `execute_tool(call, rt)`.
They all act on DEFAULT_TOOLS, one ToolRegistry (registry.py): the registry
every Agent uses unless it is given its own (`Agent(tools=ToolRegistry(...))`).

A user tool is `func(rt, **arguments) -> str`, where `rt` is the calling
agent's Runtime. A tool registered with `context=True` is `func(ctx, ...)`
with a ToolContext (context.py) instead: the built-ins are written that way.

Built-in tools are the tools registered while pygent.agent is imported (here,
in task_tools.py, and any agent module imported before `_snapshot_builtins()`
in agent/__init__.py); `reset_tools()` and `builtin_registry()` restore them.
"""

from __future__ import annotations

from typing import Any, Callable

from .context import ToolContext
from .registry import MAX_ARGUMENT_BYTES, ToolFunc, ToolRegistry

#: The default registry: what the module-level functions change and Agents use by default.
DEFAULT_TOOLS = ToolRegistry()
#: pygent's names for its live contents (name -> function; the OpenAI tool dicts).
TOOLS: dict[str, ToolFunc] = DEFAULT_TOOLS.tools
TOOL_SCHEMAS: list[dict[str, Any]] = DEFAULT_TOOLS.tool_schemas
#: The built-in tools, as registered at import (filled by _snapshot_builtins; never changed after).
_BUILTINS = ToolRegistry()

__all__ = [
    "DEFAULT_TOOLS", "MAX_ARGUMENT_BYTES", "STOP_TOOLS", "TOOLS", "TOOL_SCHEMAS", "ToolContext", "ToolFunc",
    "ToolRegistry", "builtin_registry", "clear_tools", "execute_tool", "parse_arguments", "register_tool",
    "remove_tool", "reset_tools", "schemas", "tool",
]


def register_tool(name: str, description: str, parameters: dict[str, Any], func: ToolFunc, *, context: bool = False) -> None:
    """Register a tool in the default registry (`context=True`: func gets a ToolContext, not the Runtime).

    Raises:
        ToolError: the name is taken or malformed, or the schema is invalid.
    """
    DEFAULT_TOOLS.register(name, description, parameters, func, context=context)


def tool(name: str, description: str, parameters: dict[str, Any], *, context: bool = False) -> Callable[[ToolFunc], ToolFunc]:
    """Decorator form of register_tool. Raises ToolError as register_tool."""
    return DEFAULT_TOOLS.tool(name, description, parameters, context=context)


def remove_tool(name: str) -> None:
    """Raises ToolError if no tool has this name."""
    DEFAULT_TOOLS.remove(name)


def clear_tools() -> None:
    DEFAULT_TOOLS.clear()


def reset_tools() -> None:
    """Back to exactly the built-in tools."""
    DEFAULT_TOOLS.reset(_BUILTINS)


def builtin_registry() -> ToolRegistry:
    """A new registry holding the built-in tools, to extend for one agent: `Agent(tools=builtin_registry())`."""
    return ToolRegistry(_BUILTINS)


def schemas() -> list[dict[str, Any]]:
    return DEFAULT_TOOLS.schemas()


def parse_arguments(name: str, raw: Any) -> dict[str, Any]:
    """JSON text -> validated dict for a default-registry tool. Raises ToolError (a message for the model)."""
    return DEFAULT_TOOLS.parse_arguments(name, raw)


def execute_tool(call: Any, rt: Any, registry: ToolRegistry | None = None) -> str:
    """Run one tool call with `rt` (a Runtime, a ToolContext, or None); never raises.

    pygent's entry point, kept for callers outside the loop (tests, benchmarks):
    the Agent itself calls `registry.execute(call, ctx)` with its own context.
    """
    ctx = rt if rt is None or isinstance(rt, ToolContext) else ToolContext.of(rt)
    return (registry or DEFAULT_TOOLS).execute(call, ctx)


# ---- built-ins ---------------------------------------------------------------------------


@tool(
    name="bash",
    description=(
        "Run a bash command in the sandboxed container. Like one terminal: the working directory, "
        "files, variables, functions, aliases and set/shopt options persist between calls."
    ),
    parameters={
        "type": "object",
        "properties": {
            "cmd": {"type": "string", "description": "Command to execute"},
            "timeout": {"type": "number", "exclusiveMinimum": 0, "description": "Seconds before the command is killed"},
            "background": {"type": "boolean", "description": "Start it and return its handle at once (servers, watchers)"},
            "idle_timeout": {"type": "number", "exclusiveMinimum": 0,
                             "description": "Seconds without output after which it returns and runs on as a handle"},
        },
        "required": ["cmd"],
        "additionalProperties": False,
    },
    context=True,
)
def _bash(ctx: ToolContext, cmd: str, timeout: float | None = None, background: bool = False,
          idle_timeout: float | None = None) -> str:
    return ctx.bash(cmd, timeout=timeout, background=background, idle_timeout=idle_timeout)


@tool(
    name="write_file",
    description="Create or overwrite a file in the sandbox (relative paths are under /workspace).",
    parameters={
        "type": "object",
        "properties": {"path": {"type": "string", "minLength": 1}, "content": {"type": "string"}},
        "required": ["path", "content"],
        "additionalProperties": False,
    },
    context=True,
)
def _write_file(ctx: ToolContext, path: str, content: str) -> str:
    return ctx.write_file(path, content)


@tool(
    name="read_file",
    description="Read a text file from the sandbox (relative paths are under /workspace).",
    parameters={
        "type": "object",
        "properties": {"path": {"type": "string", "minLength": 1}},
        "required": ["path"],
        "additionalProperties": False,
    },
    context=True,
)
def _read_file(ctx: ToolContext, path: str) -> str:
    return ctx.read_file(path)


@tool(
    name="stop",
    description="Stop the autonomous loop: call it when the task is finished.",
    parameters={"type": "object", "properties": {}},
    context=True,
)
def _stop(ctx: ToolContext) -> str:
    return "Stopping."


@tool(
    name="ask_user",
    description="Stop and ask the user a question; the loop ends until the user answers.",
    parameters={"type": "object", "properties": {"question": {"type": "string"}}},
    context=True,
)
def _ask_user(ctx: ToolContext, question: str = "") -> str:
    return "Waiting for the user's answer."


def _snapshot_builtins() -> None:
    """Called once every built-in tool is registered (end of agent/__init__)."""
    _BUILTINS.reset(DEFAULT_TOOLS)


#: Tool names that end the run_until_stop loop.
STOP_TOOLS = ("stop", "ask_user")
