"""What the model reads back from a command: compact, clean text.

Why cleaned: ANSI colour codes, NUL bytes and invalid UTF-8 waste tokens and
confuse models; the exit code and the place where output was cut must be
unmistakable so the model does not reason over half a log as if it were whole.
"""

from __future__ import annotations

import re

from ..sandbox.result import ExecResult

_ANSI = re.compile(rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")


def clean_text(data: bytes) -> str:
    """Strip ANSI escapes and NUL bytes; replace invalid UTF-8 with U+FFFD."""
    return _ANSI.sub(b"", data).replace(b"\x00", b"").decode("utf-8", "replace")


def format_result(result: ExecResult, timeout: float | None = None, memory: str | None = None) -> str:
    """The `bash` tool's answer. Documented in the README ("What the model sees").

        exit code: 1
        stdout:
        ...
        stderr:
        ...
    """
    head = f"exit code: {result.exit_code}"
    if result.timed_out:
        head += f" (timed out after {timeout:g}s; the command and all its children were killed)" if timeout else " (timed out)"
    elif result.oom_killed:
        head += f" (killed: out of memory{f', limit {memory}' if memory else ''})"
    parts = [head]
    for name, data in (("stdout", result.stdout), ("stderr", result.stderr)):
        if data:
            text = clean_text(data)
            parts.append(f"{name}:\n{text}" if text.endswith("\n") else f"{name}:\n{text}\n")
    if len(parts) == 1:
        parts.append("(no output)")
    return "\n".join(p.rstrip("\n") for p in parts)
