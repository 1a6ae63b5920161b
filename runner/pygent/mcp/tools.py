"""The MCP tools: one table entry each (name, model-facing description, schemas, handler).

Why a table: the server lists and dispatches from it and nothing else, so a
new tool (e.g. the background-process tools) is one `ToolSpec` appended to
`TOOLS`. Handlers are plain blocking functions of (session sandbox, validated
arguments); the server runs them in a worker thread and turns whatever they
raise into an MCP tool error.

What a client reads back is what pygent's own agent reads: the same argument
checks (the table is also an agent ToolRegistry, whose parse_arguments checks
every call against the tool's schema), the same cleaning of output
(agent.format.clean_text: no ANSI escapes, no NUL, invalid UTF-8 replaced) and
the same `bash` text (agent.format.format_result).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, TypedDict

from ..agent.format import clean_text, format_result
from ..agent.registry import MAX_ARGUMENT_BYTES, ToolRegistry
from ..errors import ToolError

if TYPE_CHECKING:
    from .sessions import SessionSandbox

__all__ = ["TOOLS", "ToolOutcome", "ToolSpec", "BashResult", "by_name", "run_tool"]


class BashResult(TypedDict):
    """The structured content of a `bash` result (also its output schema, below)."""

    exit_code: int
    stdout: str
    stderr: str
    stdout_truncated: int
    stderr_truncated: int
    truncated: bool
    timed_out: bool
    oom_killed: bool
    cwd: str | None
    duration: float


@dataclass(frozen=True)
class ToolOutcome:
    """What a handler returns: the text a model reads, and the same as structured data."""

    text: str
    structured: dict[str, Any] | None = None


@dataclass(frozen=True)
class ToolSpec:
    """One MCP tool. `handler(session, arguments)` may raise; the server makes that an error result."""

    name: str
    description: str
    input_schema: dict[str, Any]
    handler: Callable[["SessionSandbox", dict[str, Any]], ToolOutcome]
    output_schema: dict[str, Any] | None = None
    read_only: bool = False


# ---- handlers ------------------------------------------------------------------------------


def _bash(session: "SessionSandbox", args: dict[str, Any]) -> ToolOutcome:
    limit = session.time_limit(args.get("timeout"))
    result = session.exec(args["cmd"], timeout=limit)
    text = format_result(result, round(limit, 2) if limit != float("inf") else None, session.policy.memory)
    structured: BashResult = {
        "exit_code": result.exit_code,
        "stdout": clean_text(result.stdout),
        "stderr": clean_text(result.stderr),
        "stdout_truncated": result.stdout_truncated,
        "stderr_truncated": result.stderr_truncated,
        "truncated": result.truncated,
        "timed_out": result.timed_out,
        "oom_killed": result.oom_killed,
        "cwd": result.cwd,
        "duration": round(result.duration, 4),
    }
    return ToolOutcome(session.notice() + text, dict(structured))


#: Seconds expose_port waits for something to answer on the port before returning the URL anyway.
EXPOSE_WAIT = 10.0


def _expose_port(session: "SessionSandbox", args: dict[str, Any]) -> ToolOutcome:
    port = args["port"]
    fwd = session.sandbox().forward(port)  # loopback on the MCP server's host: never wider from a tool
    answering = fwd.wait_answering(EXPOSE_WAIT)
    state = "answering" if answering else f"nothing listens on port {port} inside yet; the URL works once something does"
    return ToolOutcome(f"{fwd.url} ({state})", {"url": fwd.url, "port": port, "answering": answering})


def _write_file(session: "SessionSandbox", args: dict[str, Any]) -> ToolOutcome:
    sandbox = session.sandbox()
    full = session.absolute(args["path"])
    try:
        data = args["content"].encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ToolError(f"content is not valid Unicode text ({exc.reason} at {exc.start}); send UTF-8 text") from None
    sandbox.write_file(full, data)
    return ToolOutcome(session.notice() + f"Wrote {len(data)} bytes to {full}", {"path": full, "bytes": len(data)})


def _read_file(session: "SessionSandbox", args: dict[str, Any]) -> ToolOutcome:
    sandbox = session.sandbox()
    full = session.absolute(args["path"])
    try:
        data = sandbox.read_file(full)  # symlinks resolve inside the container; size-bounded
    except FileNotFoundError:
        raise ToolError(f"{full}: no such file in the sandbox") from None
    except IsADirectoryError:
        raise ToolError(f"{full} is not a regular file (use list_files for directories)") from None
    text = clean_text(data)
    return ToolOutcome(session.notice() + text, {"path": full, "bytes": len(data), "content": text})


#: Entries list_files reports at most (the rest is counted, not listed).
MAX_LIST_ENTRIES = 1000

# One bash run: type by builtin tests, size by one stat per regular file; names NUL-separated
# so newlines or tabs in names cannot forge entries. Works with coreutils and busybox.
_LIST_SCRIPT = r"""cd -- {dir} || exit 3
shopt -s nullglob dotglob; n=0
for f in *; do
  n=$((n+1)); [ $n -gt {limit} ] && continue
  if [ -L "$f" ]; then t=symlink; s=0; elif [ -d "$f" ]; then t=directory; s=0
  elif [ -f "$f" ]; then t=file; s=$(stat -c %s -- "$f" 2>/dev/null || echo 0); else t=other; s=0; fi
  printf '%s\0%s\0%s\0' "$t" "$s" "$f"
done
printf 'total\0%s\0' "$n"
"""


def _list_files(session: "SessionSandbox", args: dict[str, Any]) -> ToolOutcome:
    full = session.absolute(args.get("path") or ".")
    result = session.exec(_LIST_SCRIPT.format(dir=shlex.quote(full), limit=MAX_LIST_ENTRIES), timeout=session.time_limit(30))
    if result.exit_code != 0 or result.timed_out:
        why = clean_text(result.stderr).strip().splitlines()
        raise ToolError(f"cannot list {full}: {why[-1] if why else f'exit code {result.exit_code}'}")
    fields = result.stdout.split(b"\0")
    total = 0
    entries: list[dict[str, Any]] = []
    i = 0
    while i + 1 < len(fields):
        if fields[i] == b"total":
            total = int(fields[i + 1] or 0)
            break
        if i + 2 >= len(fields):
            break
        kind, size, name = fields[i].decode(), int(fields[i + 1] or 0), clean_text(fields[i + 2])
        entries.append({"name": name, "type": kind, "size": size})
        i += 3
    lines = [f"{full}: {total} entries" + (f" (first {len(entries)} listed)" if total > len(entries) else "")]
    for e in entries:
        mark = "/" if e["type"] == "directory" else "@" if e["type"] == "symlink" else ""
        lines.append(f"{e['type']:<9} {e['size']:>10}  {e['name']}{mark}")
    structured = {"path": full, "entries": entries, "total": total, "truncated": total > len(entries)}
    return ToolOutcome(session.notice() + "\n".join(lines), structured)


# ---- the table ------------------------------------------------------------------------------

_SANDBOX = (
    "It runs in this session's own disposable Linux container (user 1000, no network unless the "
    "server was started with --network, bounded memory, processes and time); files and the working "
    "directory persist between calls of the session."
)

TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec(
        name="bash",
        description=(
            "Run a bash command and get its exit code, stdout and stderr. " + _SANDBOX + " Relative paths "
            "start in /workspace; `cd` persists. A command running past its time limit is killed with all "
            "its children (exit code 124, timed_out true). Output beyond 64 kB per stream keeps its head "
            "and tail with a '[... N bytes truncated ...]' marker. stdin is empty: do not wait for input."
        ),
        input_schema={
            "type": "object",
            "properties": {
                "cmd": {"type": "string", "minLength": 1, "description": "The bash command line to run, e.g. 'ls -la && python3 test.py'."},
                "timeout": {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "description": "Seconds before the command is killed (default and maximum: the server's --timeout).",
                },
            },
            "required": ["cmd"],
            "additionalProperties": False,
        },
        handler=_bash,
        output_schema={
            "type": "object",
            "properties": {
                "exit_code": {"type": "integer"},
                "stdout": {"type": "string"},
                "stderr": {"type": "string"},
                "stdout_truncated": {"type": "integer", "description": "bytes cut from the middle of stdout (0: complete)"},
                "stderr_truncated": {"type": "integer"},
                "truncated": {"type": "boolean"},
                "timed_out": {"type": "boolean"},
                "oom_killed": {"type": "boolean"},
                "cwd": {"type": ["string", "null"], "description": "working directory after the command"},
                "duration": {"type": "number"},
            },
            "required": ["exit_code", "stdout", "stderr", "truncated", "timed_out"],
        },
    ),
    ToolSpec(
        name="write_file",
        description=(
            "Create or overwrite a text file with the given content (parent directories are created). "
            + _SANDBOX
            + " Relative paths are under /workspace. Prefer this over shell heredocs for source files."
        ),
        input_schema={
            "type": "object",
            "properties": {
                "path": {"type": "string", "minLength": 1, "description": "File path; relative paths are under /workspace."},
                "content": {"type": "string", "description": "The whole new content of the file (UTF-8)."},
            },
            "required": ["path", "content"],
            "additionalProperties": False,
        },
        handler=_write_file,
    ),
    ToolSpec(
        name="read_file",
        description=(
            "Read a file as text (invalid UTF-8 shows as U+FFFD, terminal escapes are removed). "
            + _SANDBOX
            + " Relative paths are under /workspace. Files over 16 MiB are refused: use bash (head, grep) for those."
        ),
        input_schema={
            "type": "object",
            "properties": {"path": {"type": "string", "minLength": 1, "description": "File path; relative paths are under /workspace."}},
            "required": ["path"],
            "additionalProperties": False,
        },
        handler=_read_file,
        read_only=True,
    ),
    ToolSpec(
        name="expose_port",
        description=(
            "Make a server you started in the sandbox (listening on 127.0.0.1:PORT there, e.g. with "
            "`nohup python3 -m http.server 8000 --bind 127.0.0.1 &`) reachable from the user's machine; "
            "returns its URL on the user's loopback (http://127.0.0.1:NNNN). Connections are carried over the "
            "sandbox container's own channel: the container gets no network. Waits up to 10 s for the port to answer."
        ),
        input_schema={
            "type": "object",
            "properties": {"port": {"type": "integer", "minimum": 1, "maximum": 65535, "description": "The port inside the sandbox."}},
            "required": ["port"],
            "additionalProperties": False,
        },
        handler=_expose_port,
        output_schema={
            "type": "object",
            "properties": {"url": {"type": "string"}, "port": {"type": "integer"}, "answering": {"type": "boolean"}},
            "required": ["url", "port", "answering"],
        },
    ),
    ToolSpec(
        name="list_files",
        description=(
            "List one directory: each entry's name, type (file, directory, symlink, other) and size in bytes. "
            + _SANDBOX
            + f" Default: /workspace. At most {MAX_LIST_ENTRIES} entries are listed."
        ),
        input_schema={
            "type": "object",
            "properties": {"path": {"type": "string", "description": "Directory; relative paths are under /workspace. Default: /workspace."}},
            "additionalProperties": False,
        },
        handler=_list_files,
        read_only=True,
    ),
)

_BY_NAME = {spec.name: spec for spec in TOOLS}

# The same registry type the agent uses: schemas checked at import, arguments checked (and
# errors worded) exactly as for pygent's own tools. Its funcs are never called from here.
_REGISTRY = ToolRegistry()
for _spec in TOOLS:
    _REGISTRY.register(_spec.name, _spec.description, _spec.input_schema, _spec.handler)


def by_name(name: object) -> ToolSpec | None:
    return _BY_NAME.get(name) if isinstance(name, str) else None


def run_tool(spec: ToolSpec, session: "SessionSandbox", arguments: Any) -> ToolOutcome:
    """Check the arguments the way the agent does, then run the handler (blocking).

    Raises:
        ToolError: arguments too large, not an object, or invalid for the schema; or the handler refused.
        PygentError: the sandbox could not start or broke (engine down, image missing, ...).
        OSError: a host-side failure while talking to the engine.
    """
    # Over MCP arguments arrive parsed: bound their size as the agent bounds its JSON text.
    if len(json.dumps(arguments, default=str, ensure_ascii=False).encode("utf-8", "surrogatepass")) > MAX_ARGUMENT_BYTES:
        raise ToolError(f"arguments of {spec.name} are larger than {MAX_ARGUMENT_BYTES} bytes")
    return spec.handler(session, _REGISTRY.parse_arguments(spec.name, arguments))

