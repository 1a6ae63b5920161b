"""The tools on background commands (`bash` with background/idle_timeout gives the handle).

Registered like the other built-ins (with a ToolContext); each returns the compact text of format.py.
"""

from __future__ import annotations

from .context import ToolContext
from .tools import tool

_HANDLE = {"type": "string", "minLength": 1, "description": "The handle bash returned"}


@tool(
    name="process_output",
    description="New output of a background command since an offset (head and tail when long).",
    parameters={
        "type": "object",
        "properties": {"handle": _HANDLE, "since": {"type": "integer", "minimum": 0, "description": "Offset from the last call"}},
        "required": ["handle"],
        "additionalProperties": False,
    },
    context=True,
)
def _process_output(ctx: ToolContext, handle: str, since: int = 0) -> str:
    return ctx.process_output(handle, since)


@tool(
    name="process_status",
    description="Whether a background command still runs, or its exit code.",
    parameters={"type": "object", "properties": {"handle": _HANDLE}, "required": ["handle"], "additionalProperties": False},
    context=True,
)
def _process_status(ctx: ToolContext, handle: str) -> str:
    return ctx.process_status(handle)


@tool(
    name="process_input",
    description="Write text to a background command's stdin (eof: close it after).",
    parameters={
        "type": "object",
        "properties": {"handle": _HANDLE, "text": {"type": "string"}, "eof": {"type": "boolean"}},
        "required": ["handle", "text"],
        "additionalProperties": False,
    },
    context=True,
)
def _process_input(ctx: ToolContext, handle: str, text: str, eof: bool = False) -> str:
    return ctx.process_input(handle, text, eof)


@tool(
    name="process_kill",
    description="Stop a background command and everything it started.",
    parameters={"type": "object", "properties": {"handle": _HANDLE}, "required": ["handle"], "additionalProperties": False},
    context=True,
)
def _process_kill(ctx: ToolContext, handle: str) -> str:
    return ctx.process_kill(handle)


@tool(name="process_list", description="Every background command of this sandbox.", parameters={"type": "object", "properties": {}},
      context=True)
def _process_list(ctx: ToolContext) -> str:
    return ctx.process_list()
