"""A tool registry: names -> functions and JSON schemas, validation, dispatch that never raises.

Why a class: tools are registered per agent (`Agent(tools=ToolRegistry(...))`),
so two agents in one process can offer different tools. The module-level API
in tools.py (`register_tool`, `@tool`, `remove_tool`, `reset_tools`, ...) is one
instance of this class, the default every Agent uses unless given its own.

Two tool signatures are dispatched:

- `func(rt, **arguments)`: pygent's, for tools registered by users; `rt` is
  the calling agent's Runtime (or whatever the caller of `execute` passed as
  the runtime, e.g. None).
- `func(ctx, **arguments)` when registered with `context=True`: `ctx` is a
  ToolContext (context.py), the small set of runtime operations a tool needs.
  The built-in tools use it, so they do not depend on Runtime's internals.

Arguments are checked against the tool's JSON schema first, so a tool body
only ever sees well-formed input; any failure becomes an error string the
model can read and react to.
"""

from __future__ import annotations

import json
import threading
from copy import deepcopy
from typing import TYPE_CHECKING, Any, Callable

from ..errors import PygentError, ToolError

if TYPE_CHECKING:
    from .context import ToolContext

ToolFunc = Callable[..., str]

#: Tool-call argument JSON larger than this is refused before parsing.
MAX_ARGUMENT_BYTES = 1 << 20


class ToolRegistry:
    """The tools one agent (or the default registry) offers the model.

    `ToolRegistry(*sources)` starts with a copy of each source's tools, e.g.
    `ToolRegistry(tools.builtin_registry())` for the built-ins plus your own.

    `tools` (name -> function) and `tool_schemas` (OpenAI tool dicts) are the
    live contents, kept as plain dict/list because pygent exposes them as
    `TOOLS` / `TOOL_SCHEMAS`; change them through the methods, which validate.
    """

    def __init__(self, *sources: "ToolRegistry") -> None:
        self.tools: dict[str, ToolFunc] = {}
        self.tool_schemas: list[dict[str, Any]] = []
        self._takes_context: set[str] = set()
        self._validators: dict[str, Any] = {}
        self._lock = threading.RLock()
        for source in sources:
            self.update(source)

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (the Ray backend sends a parent's tools to its tasks' nodes): the lock and
        the compiled validators (a cache) are made anew on the other side."""
        with self._lock:
            return {k: v for k, v in vars(self).items() if k not in ("_lock", "_validators")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state, _validators={}, _lock=threading.RLock())

    # -- registering ----------------------------------------------------------
    def register(self, name: str, description: str, parameters: dict[str, Any], func: ToolFunc, *, context: bool = False) -> None:
        """Add a tool; `context=True`: it is called with a ToolContext instead of the Runtime.

        Raises:
            ToolError: the name is taken or malformed, or the schema is invalid.
        """
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import SchemaError

        if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum() or len(name) > 64:
            raise ToolError(f"tool name {name!r} must be 1-64 letters, digits, '_' or '-'")
        try:
            Draft202012Validator.check_schema(parameters)
        except SchemaError as exc:
            raise ToolError(f"tool {name}: invalid parameters schema: {exc.message}") from None
        with self._lock:
            if name in self.tools:
                raise ToolError(f"tool {name} already registered (remove_tool first)")
            self.tools[name] = func
            self.tool_schemas.append({"type": "function", "function": {"name": name, "description": description, "parameters": parameters}})
            self._validators.pop(name, None)
            if context:
                self._takes_context.add(name)

    def tool(self, name: str, description: str, parameters: dict[str, Any], *, context: bool = False) -> Callable[[ToolFunc], ToolFunc]:
        """Decorator form of register(); returns the function unchanged. Raises ToolError as register()."""

        def decorator(func: ToolFunc) -> ToolFunc:
            self.register(name, description, parameters, func, context=context)
            return func

        return decorator

    def remove(self, name: str) -> None:
        """Raises ToolError if no tool has this name."""
        with self._lock:
            if name not in self.tools:
                raise ToolError(f"tool {name} not registered")
            del self.tools[name]
            self.tool_schemas[:] = [s for s in self.tool_schemas if s["function"]["name"] != name]
            self._validators.pop(name, None)
            self._takes_context.discard(name)

    def clear(self) -> None:
        with self._lock:
            self.tools.clear()
            self.tool_schemas.clear()
            self._validators.clear()
            self._takes_context.clear()

    def update(self, other: "ToolRegistry") -> None:
        """Add every tool of `other` (names already here are replaced); no re-validation needed."""
        with other._lock:
            funcs, specs, ctx = dict(other.tools), deepcopy(other.tool_schemas), set(other._takes_context)
        with self._lock:
            names = set(funcs)
            self.tool_schemas[:] = [s for s in self.tool_schemas if s["function"]["name"] not in names] + specs
            self.tools.update(funcs)
            self._takes_context = (self._takes_context - names) | ctx
            for name in names:
                self._validators.pop(name, None)

    def reset(self, to: "ToolRegistry") -> None:
        """Exactly the tools of `to`, in place (agents holding this registry see the change)."""
        with self._lock:
            self.clear()
            self.update(to)

    def copy(self) -> "ToolRegistry":
        return ToolRegistry(self)

    # -- reading --------------------------------------------------------------
    def schemas(self) -> list[dict[str, Any]]:
        """The OpenAI `tools` list the model is sent (a copy: callers may not change the registry)."""
        with self._lock:
            return deepcopy(self.tool_schemas)

    def names(self) -> list[str]:
        with self._lock:
            return list(self.tools)

    def __contains__(self, name: object) -> bool:
        return name in self.tools

    def __len__(self) -> int:
        return len(self.tools)

    def __repr__(self) -> str:
        return f"ToolRegistry({', '.join(self.names())})"

    # -- dispatch ---------------------------------------------------------------
    def _validator(self, name: str) -> Any:
        from jsonschema import Draft202012Validator

        v = self._validators.get(name)
        if v is None:
            schema = next((s["function"]["parameters"] for s in self.tool_schemas if s["function"]["name"] == name), {})
            v = self._validators[name] = Draft202012Validator(schema)
        return v

    def parse_arguments(self, name: str, raw: Any) -> dict[str, Any]:
        """JSON text -> validated dict.

        Raises:
            ToolError: with a message meant for the model (bad JSON, too large, schema errors).
        """
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
        with self._lock:
            validator = self._validator(name)
        errors = sorted(validator.iter_errors(args), key=lambda e: list(e.path))
        if errors:
            detail = "; ".join(f"{'/'.join(map(str, e.path)) or 'arguments'}: {e.message}" for e in errors[:5])
            raise ToolError(f"invalid arguments for {name}: {detail}")
        return args

    def execute(self, call: Any, ctx: "ToolContext | None") -> str:
        """Run one tool call; every failure is returned as an 'error: ...' string, never raised.

        A `context=True` tool gets `ctx`; a pygent-style tool gets `ctx.runtime`
        (None when `ctx` is None, as when pygent callers pass no runtime).
        """
        try:
            name = call.function.name
            raw = call.function.arguments
        except AttributeError:
            return "error: malformed tool call (no function name)"
        with self._lock:
            func = self.tools.get(name) if isinstance(name, str) else None
            takes_context = func is not None and name in self._takes_context
            known = ", ".join(self.tools)
        if func is None:
            return f"error: unknown tool {str(name)[:100]!r}; available tools: {known}"
        try:
            args = self.parse_arguments(name, raw)
            first = ctx if takes_context or ctx is None else ctx.runtime
            out = func(first, **args)
        except ToolError as exc:
            return f"error: {exc}"
        except PygentError as exc:
            return f"error: {name} failed: {exc}"
        except Exception as exc:  # a user tool raised: report it to the model, keep the loop going
            return f"error: {name} raised {type(exc).__name__}: {str(exc)[:2000]}"
        return out if isinstance(out, str) else json.dumps(out, default=str)
