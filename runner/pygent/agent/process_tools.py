"""The tools on background commands (`bash` with background/idle_timeout gives the handle).

Registered like the other built-ins; each returns the compact text of format.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .tools import tool

if TYPE_CHECKING:
    from .runtime import Runtime

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
)
def _process_output(rt: "Runtime", handle: str, since: int = 0) -> str:
    return rt.process_output(handle, since)


@tool(
    name="process_status",
    description="Whether a background command still runs, or its exit code.",
    parameters={"type": "object", "properties": {"handle": _HANDLE}, "required": ["handle"], "additionalProperties": False},
)
def _process_status(rt: "Runtime", handle: str) -> str:
    return rt.process_status(handle)


@tool(
    name="process_input",
    description="Write text to a background command's stdin (eof: close it after).",
    parameters={
        "type": "object",
        "properties": {"handle": _HANDLE, "text": {"type": "string"}, "eof": {"type": "boolean"}},
        "required": ["handle", "text"],
        "additionalProperties": False,
    },
)
def _process_input(rt: "Runtime", handle: str, text: str, eof: bool = False) -> str:
    return rt.process_input(handle, text, eof)


@tool(
    name="process_kill",
    description="Stop a background command and everything it started.",
    parameters={"type": "object", "properties": {"handle": _HANDLE}, "required": ["handle"], "additionalProperties": False},
)
def _process_kill(rt: "Runtime", handle: str) -> str:
    return rt.process_kill(handle)


@tool(name="process_list", description="Every background command of this sandbox.", parameters={"type": "object", "properties": {}})
def _process_list(rt: "Runtime") -> str:
    return rt.process_list()
