"""The MCP server object: lists the tool table and runs calls in the session's sandbox.

Built on the SDK's low-level `Server` (not MCPServer's decorators) because
the tools are a table with hand-written JSON schemas and model-facing
descriptions, and their results carry both text and structured content.

What a session is depends on the transport. Over stdio the process serves
one client, so it has one SessionSandbox (made by transports.serve_stdio,
whatever protocol era the client speaks). Over Streamable HTTP a session is
the SDK's connection (`Mcp-Session-Id`, the initialize handshake): its sandbox
is kept in the connection's `state` and removed by the connection's
`exit_stack`, which the SDK unwinds however the session ends (client DELETE,
disconnect, the SDK's idle reaping, server shutdown). A client of the
stateless 2026-07-28 revision over HTTP has no session: `server/discover` is
refused there so that probing clients fall back to the handshake, and a client
that insists gets a fresh sandbox per call, with a note saying so. Every failure of a call becomes an MCP
tool error (`isError`): the server never crashes or hangs on what a client sends.
"""

from __future__ import annotations

import weakref
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import mcp_types as types
from mcp.server import Server
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from ..errors import PygentError, ToolError
from .sessions import SessionConfig, SessionSandbox
from .tools import TOOLS, ToolOutcome, ToolSpec, by_name, run_tool

if TYPE_CHECKING:
    from mcp.server import ServerRequestContext

__all__ = ["build_server", "INSTRUCTIONS", "STATELESS_NOTE"]

STATELESS_NOTE = (
    "note: this client speaks the stateless MCP revision (2026-07-28) over HTTP, which has no session: "
    "each call ran in a fresh sandbox and nothing persists between calls; connect with the initialize "
    "handshake (a session) to keep files and cwd\n"
)

_STATE_KEY = "pygent.session_sandbox"

INSTRUCTIONS = (
    "Tools to run commands and edit files in a disposable, hardened Linux container that belongs to "
    "this session only: no network unless the operator allowed it, a non-root user, bounded memory, "
    "processes, CPU, time and output. Files and the working directory persist for the session; the "
    "container is removed when the session ends."
)


def build_server(config: SessionConfig, session: SessionSandbox | None = None) -> Server:
    """A low-level MCP Server serving `TOOLS`: every call in `session` when given (stdio),
    else in one SessionSandbox per connection (HTTP)."""

    async def list_tools(ctx: "ServerRequestContext", params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[_tool(spec) for spec in TOOLS])

    async def call_tool(ctx: "ServerRequestContext", params: types.CallToolRequestParams) -> types.CallToolResult:
        spec = by_name(params.name)
        if spec is None:
            known = ", ".join(s.name for s in TOOLS)
            return _error(f"error: unknown tool {str(params.name)[:100]!r}; available tools: {known}")
        current = session or _connection_session(ctx, config)
        current.call_started()
        try:
            # The sandbox runs one command at a time anyway; waiting for our turn here, in the
            # event loop, means a session's queued calls hold no worker thread (the pool is
            # shared by every session).
            async with _turn(current):
                # A worker thread: the sandbox API blocks. Abandoned on cancel (client gone):
                # closing the session's sandbox then ends the command it is waiting for.
                outcome = await anyio.to_thread.run_sync(partial(_run, spec, current, params.arguments), abandon_on_cancel=True)
        finally:
            current.call_ended()
        if isinstance(outcome, str):
            return _error(outcome)
        note = STATELESS_NOTE if session is None and ctx.protocol_version in MODERN_PROTOCOL_VERSIONS else ""
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=note + outcome.text)],
            structured_content=outcome.structured,
            is_error=False,
        )

    server = Server(
        "pygent-runner",
        version=_version(),
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )
    if session is None:
        # Over HTTP a sandbox needs a session, which only the initialize handshake makes:
        # answer the 2026-07-28 `server/discover` probe as a handshake-only server does, so
        # clients that probe (the SDK's Client, mode "auto") fall back to initialize.
        server.add_request_handler("server/discover", types.RequestParams, _no_discover)
    return server


async def _no_discover(ctx: "ServerRequestContext", params: Any) -> types.DiscoverResult:
    from mcp.shared.exceptions import MCPError

    raise MCPError(code=types.METHOD_NOT_FOUND, message="Method not found: this server keeps a sandbox per session; use initialize")


def _run(spec: ToolSpec, session: SessionSandbox, arguments: Any) -> ToolOutcome | str:
    """The outcome, or the error text the model reads (the same forms as agent.tools.execute_tool)."""
    try:
        return run_tool(spec, session, arguments)
    except ToolError as exc:
        return f"error: {exc}"
    except PygentError as exc:
        return f"error: {spec.name} failed: {exc}"
    except Exception as exc:  # an engine or host failure: reported, the server keeps serving
        return f"error: {spec.name} raised {type(exc).__name__}: {str(exc)[:2000]}"


def _connection_session(ctx: "ServerRequestContext", config: SessionConfig) -> SessionSandbox:
    """This connection's SessionSandbox, made on its first call (no await: no race between calls)."""
    connection = _connection(ctx)
    session = connection.state.get(_STATE_KEY)
    if session is None:
        session = connection.state[_STATE_KEY] = SessionSandbox(config)

        async def close() -> None:
            await anyio.to_thread.run_sync(session.close)

        connection.exit_stack.push_async_callback(close)
    return session


_turns: "weakref.WeakKeyDictionary[SessionSandbox, anyio.Lock]" = weakref.WeakKeyDictionary()


def _turn(session: SessionSandbox) -> anyio.Lock:
    """The session's call queue (created on its first call; only touched from the event loop)."""
    lock = _turns.get(session)
    if lock is None:
        lock = _turns[session] = anyio.Lock()
    return lock


def _connection(ctx: "ServerRequestContext") -> Any:
    # The SDK's per-connection state and teardown (`Connection.state`, `.exit_stack`) are
    # public; ServerRequestContext does not expose the Connection yet (the SDK's TODO L54),
    # its ServerSession holds it.
    connection = getattr(ctx.session, "connection", None) or getattr(ctx.session, "_connection", None)
    if connection is None or not hasattr(connection, "exit_stack"):  # pragma: no cover - an SDK we do not know
        raise RuntimeError("this mcp SDK version does not expose the connection; install mcp>=2.3,<3")
    return connection


def _tool(spec: ToolSpec) -> types.Tool:
    return types.Tool(
        name=spec.name,
        description=spec.description,
        input_schema=spec.input_schema,
        output_schema=spec.output_schema,
        annotations=types.ToolAnnotations(read_only_hint=spec.read_only, open_world_hint=False),
    )


def _error(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("pygent-runner")
    except Exception:
        return "0"
