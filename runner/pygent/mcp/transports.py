"""How the server is reached: stdio (default) or Streamable HTTP with a required bearer token.

Why a token even on loopback: any local process (or a web page, through the
browser) can reach 127.0.0.1, and what this server gives is a shell. The
token is compared in constant time; a request without it, or with a wrong
one, gets 401 before the MCP layer sees it. Why loopback by default: the
sandbox is hardened, the server's own HTTP endpoint is not meant to face a
network; binding elsewhere takes an explicit flag (cli/mcp.py).
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import socket
from typing import TYPE_CHECKING, Any, Awaitable, Callable

if TYPE_CHECKING:
    from .sessions import SessionConfig

__all__ = ["BearerAuth", "new_token", "is_loopback", "bind", "serve_stdio", "serve_http", "MCP_PATH"]

MCP_PATH = "/mcp"

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


def new_token() -> str:
    """A random bearer token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class BearerAuth:
    """ASGI middleware: every HTTP request must carry `Authorization: Bearer <token>`."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") == "http" and not self._authorized(scope):
            body = b'{"error":"unauthorized","error_description":"send Authorization: Bearer <token> (printed on the server\'s stderr at start)"}'
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"www-authenticate", b'Bearer realm="pygent-runner mcp"'),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)

    def _authorized(self, scope: dict) -> bool:
        values = [v for k, v in scope.get("headers", ()) if k == b"authorization"]
        return len(values) == 1 and hmac.compare_digest(values[0], self._expected)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: any free port). Raises OSError (in use, no such address)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


async def serve_stdio(config: "SessionConfig") -> None:
    """Serve one client over our stdin/stdout until it closes stdin; its sandbox goes with it.

    One process, one client: the session is the process's, whichever protocol era the
    client opens (the 2026-07-28 revision makes a new SDK connection per request).
    """
    import anyio
    from mcp.server.stdio import stdio_server

    from .server import build_server
    from .sessions import SessionSandbox

    session = SessionSandbox(config)
    server = build_server(config, session)
    try:
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(session.close)


async def serve_http(config: "SessionConfig", sock: socket.socket, token: str, max_sessions: int = 16) -> None:
    """Serve Streamable HTTP at MCP_PATH on an already bound socket until SIGINT/SIGTERM.

    One sandbox per HTTP session (server.py). Sessions the client abandons (no request
    and no open stream for the idle timeout) are ended by the SDK, removing their sandboxes.
    """
    import uvicorn
    from mcp.server.transport_security import TransportSecuritySettings

    from .server import build_server

    server = build_server(config)

    host = sock.getsockname()[0]
    if is_loopback(host):
        # DNS-rebinding protection: a page can't reach us through a name it controls.
        names = ["127.0.0.1:*", "localhost:*", "[::1]:*", f"{host}:*"]
        security = TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=names,
            allowed_origins=[f"http://{n}" for n in names],
        )
    else:  # the operator chose to listen elsewhere: the names clients use are theirs to know
        security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    app = server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        transport_security=security,
        host=host,
        session_idle_timeout=config.idle_timeout or None,
        max_sessions=max_sessions,  # each may hold a sandbox: beyond this, 503 until one ends
    )
    settings = uvicorn.Config(BearerAuth(app, token), log_level="warning", lifespan="on", access_log=False, timeout_graceful_shutdown=5)
    await uvicorn.Server(settings).serve(sockets=[sock])
