"""The tool registry (pygent's API) and the dispatcher that never lets a bad call crash the loop.

A tool is `func(rt, **arguments) -> str`, where `rt` is the calling agent's
Runtime. Arguments are checked against the tool's JSON schema first, so a tool
body only ever sees well-formed input; any failure becomes an error string the
model can read and react to.
"""

from __future__ import annotations

import json
import threading
from copy import deepcopy
from typing import TYPE_CHECKING, Any, Callable

from ..errors import PygentError, ToolError

if TYPE_CHECKING:
    from .runtime import Runtime

ToolFunc = Callable[..., str]

TOOLS: dict[str, ToolFunc] = {}
TOOL_SCHEMAS: list[dict[str, Any]] = []
_lock = threading.RLock()

#: Tool-call argument JSON larger than this is refused before parsing.
MAX_ARGUMENT_BYTES = 1 << 20


def register_tool(name: str, description: str, parameters: dict[str, Any], func: ToolFunc) -> None:
    """Register a tool. Raises ToolError if the name is taken or the schema is invalid."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum() or len(name) > 64:
        raise ToolError(f"tool name {name!r} must be 1-64 letters, digits, '_' or '-'")
    try:
        Draft202012Validator.check_schema(parameters)
    except SchemaError as exc:
        raise ToolError(f"tool {name}: invalid parameters schema: {exc.message}") from None
    with _lock:
        if name in TOOLS:
            raise ToolError(f"tool {name} already registered (remove_tool first)")
        TOOLS[name] = func
        TOOL_SCHEMAS.append({"type": "function", "function": {"name": name, "description": description, "parameters": parameters}})
        _validators.pop(name, None)


def tool(name: str, description: str, parameters: dict[str, Any]) -> Callable[[ToolFunc], ToolFunc]:
    """Decorator form of register_tool."""

    def decorator(func: ToolFunc) -> ToolFunc:
        register_tool(name, description, parameters, func)
        return func

    return decorator


def remove_tool(name: str) -> None:
    with _lock:
        if name not in TOOLS:
            raise ToolError(f"tool {name} not registered")
        del TOOLS[name]
        TOOL_SCHEMAS[:] = [s for s in TOOL_SCHEMAS if s["function"]["name"] != name]
        _validators.pop(name, None)


def clear_tools() -> None:
    with _lock:
        TOOLS.clear()
        TOOL_SCHEMAS.clear()
        _validators.clear()


def reset_tools() -> None:
    """Back to exactly the built-in tools."""
    with _lock:
        clear_tools()
        TOOLS.update(_BUILTIN_TOOLS)
        TOOL_SCHEMAS.extend(deepcopy(_BUILTIN_SCHEMAS))


def schemas() -> list[dict[str, Any]]:
    with _lock:
        return deepcopy(TOOL_SCHEMAS)


_validators: dict[str, Any] = {}


def _validator(name: str) -> Any:
    from jsonschema import Draft202012Validator

    v = _validators.get(name)
    if v is None:
        schema = next((s["function"]["parameters"] for s in TOOL_SCHEMAS if s["function"]["name"] == name), {})
        v = _validators[name] = Draft202012Validator(schema)
    return v


def parse_arguments(name: str, raw: Any) -> dict[str, Any]:
    """JSON text -> validated dict. Raises ToolError with a message meant for the model."""
    if raw is None or raw == "":
        args: Any = {}
    elif isinstance(raw, dict):
        args = raw
    elif isinstance(raw, str):
        if len(raw.encode("utf-8", "surrogatepass")) > MAX_ARGUMENT_BYTES:
            raise ToolError(f"arguments of {name} are larger than {MAX_ARGUMENT_BYTES} bytes")
        try:
            args = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise ToolError(f"arguments of {name} are not valid JSON ({exc}); send a JSON object") from None
    else:
        raise ToolError(f"arguments of {name} must be a JSON object")
    if not isinstance(args, dict):
        raise ToolError(f"arguments of {name} must be a JSON object, got {type(args).__name__}")
    with _lock:
        validator = _validator(name)
    errors = sorted(validator.iter_errors(args), key=lambda e: list(e.path))
    if errors:
        detail = "; ".join(f"{'/'.join(map(str, e.path)) or 'arguments'}: {e.message}" for e in errors[:5])
        raise ToolError(f"invalid arguments for {name}: {detail}")
    return args


def execute_tool(call: Any, rt: "Runtime") -> str:
    """Run one tool call; every failure is returned as an 'error: ...' string, never raised."""
    try:
        name = call.function.name
        raw = call.function.arguments
    except AttributeError:
        return "error: malformed tool call (no function name)"
    with _lock:
        func = TOOLS.get(name) if isinstance(name, str) else None
        known = ", ".join(TOOLS)
    if func is None:
        return f"error: unknown tool {str(name)[:100]!r}; available tools: {known}"
    try:
        args = parse_arguments(name, raw)
        out = func(rt, **args)
    except ToolError as exc:
        return f"error: {exc}"
    except PygentError as exc:
        return f"error: {name} failed: {exc}"
    except Exception as exc:  # a user tool raised: report it to the model, keep the loop going
        return f"error: {name} raised {type(exc).__name__}: {str(exc)[:2000]}"
    return out if isinstance(out, str) else json.dumps(out, default=str)


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
)
def _bash(rt: "Runtime", cmd: str, timeout: float | None = None, background: bool = False, idle_timeout: float | None = None) -> str:
    return rt.bash(cmd, timeout=timeout, background=background, idle_timeout=idle_timeout)


@tool(
    name="write_file",
    description="Create or overwrite a file in the sandbox (relative paths are under /workspace).",
    parameters={
        "type": "object",
        "properties": {"path": {"type": "string", "minLength": 1}, "content": {"type": "string"}},
        "required": ["path", "content"],
        "additionalProperties": False,
    },
)
def _write_file(rt: "Runtime", path: str, content: str) -> str:
    return rt.write_file(path, content)


@tool(
    name="read_file",
    description="Read a text file from the sandbox (relative paths are under /workspace).",
    parameters={
        "type": "object",
        "properties": {"path": {"type": "string", "minLength": 1}},
        "required": ["path"],
        "additionalProperties": False,
    },
)
def _read_file(rt: "Runtime", path: str) -> str:
    return rt.read_file(path)


@tool(
    name="stop",
    description="Stop the autonomous loop: call it when the task is finished.",
    parameters={"type": "object", "properties": {}},
)
def _stop(rt: "Runtime") -> str:
    return "Stopping."


@tool(
    name="ask_user",
    description="Stop and ask the user a question; the loop ends until the user answers.",
    parameters={"type": "object", "properties": {"question": {"type": "string"}}},
)
def _ask_user(rt: "Runtime", question: str = "") -> str:
    return "Waiting for the user's answer."


_BUILTIN_TOOLS: dict[str, ToolFunc] = {}
_BUILTIN_SCHEMAS: list[dict[str, Any]] = []


def _snapshot_builtins() -> None:
    """Called once the task tools are registered too (agent/__init__)."""
    _BUILTIN_TOOLS.clear()
    _BUILTIN_TOOLS.update(TOOLS)
    _BUILTIN_SCHEMAS[:] = deepcopy(TOOL_SCHEMAS)


#: Tool names that end the run_until_stop loop.
STOP_TOOLS = ("stop", "ask_user")
