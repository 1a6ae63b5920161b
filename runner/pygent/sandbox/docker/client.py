"""The Docker Engine API over its socket, with the stdlib only: the backend's one client.

Why not docker-py on the hot path: importing it (with requests and urllib3) costs
~57 ms, and `pygent-runner exec` is one process per command. Every call a sandbox
makes (create, attach, start, wait, remove, archives, events, inspect) is written
here once; the library, the exec fast path, the pool, gc and doctor share it.
docker-py is kept only where it adds value: image builds (sandbox/images.py).

The same API is served by Podman (`podman system service`), so this client is
also the Podman backend's.

Transport: one HTTP/1.1 request per connection (`Connection: close`) on the
byte stream transports.py opens to the endpoint endpoint.py resolves (unix,
tcp, tcp+TLS, ssh). A connect on a unix socket costs ~0.1 ms here; no pool
means nothing to leak and nothing shared across threads. Attach upgrades the
connection and hands the stream (a socket) to the caller.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.parse
from typing import Any, Iterator

from ...errors import EngineUnavailable, SandboxError
from .. import endpoint as endpoints
from .. import transports

#: Seconds one API call may take before the engine counts as unresponsive.
API_TIMEOUT = 60.0
#: The newest API version we speak; older engines get their own (negotiated once).
MAX_API = (1, 43)


class EngineAPIError(SandboxError):
    """The engine answered with an error status. `status` and `message` say which."""

    def __init__(self, status: int, message: str, what: str = "") -> None:
        self.status = status
        self.message = message
        super().__init__(f"{what + ': ' if what else ''}engine answered {status}: {message}{fix_for(message)}")


#: Engine messages whose cause is the engine's own state, with what the user does about it.
_ENGINE_STATE_FIXES = {
    # Podman's lock table (in /dev/shm) no longer matches its database, e.g. after /dev/shm
    # was cleared under a kept storage directory; every container start fails until renumbered.
    "lock mismatch": "Podman's lock table no longer matches its containers: stop its service and run "
                     "`podman system renumber` as the engine's user, then start the service again",
    # runsc's "am I in the root netns" probe misfires on newer kernels; gVisor then cannot
    # start at all. Its own network is not needed: sandboxes have none by default.
    "root network namespace": 'gVisor cannot set up its network on this kernel: register runsc with '
                              '"runtimeArgs": ["--network=none"] in /etc/docker/daemon.json and reload dockerd (kill -HUP)',
}


def fix_for(message: str) -> str:
    """' (what to do)' for an engine message caused by the engine's own state; '' for others."""
    for needle, fix in _ENGINE_STATE_FIXES.items():
        if needle in message:
            return f" ({fix})"
    return ""


class NotFound(EngineAPIError):
    """404: no such container, image, volume or path."""


class Conflict(EngineAPIError):
    """409: e.g. a removal already in progress, a name in use."""


class Response:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class EngineClient:
    """One engine endpoint. Thread-safe: every request opens its own connection."""

    def __init__(self, host: "str | endpoints.Endpoint | None" = None, api_version: str | None = None,
                 timeout: float = API_TIMEOUT) -> None:
        """`host`: an Endpoint, a DOCKER_HOST-style address (tcp:// takes DOCKER_TLS_VERIFY's material),
        or None for the resolver's choice. Raises ConfigError for an address no transport speaks."""
        self.endpoint = ep = _endpoint(host)
        self.host, self.kind, self.address = ep.host, ep.scheme, ep.address
        self.timeout = timeout
        self._version = api_version

    # -- transport ----------------------------------------------------------
    def _connect(self, timeout: float | None) -> socket.socket:
        return transports.connect(self.endpoint, timeout)

    @property
    def version(self) -> str:
        """The API version used in every path: min(ours, the engine's), asked once."""
        if self._version is None:
            resp = self._send("GET", "/version", None, {}, self.timeout, versioned=False)
            info = resp.json() or {}
            theirs = tuple(int(x) for x in str(info.get("ApiVersion") or "1.41").split(".")[:2])
            self._version = "%d.%d" % min(theirs, MAX_API)  # type: ignore[str-format]
        return self._version

    def _send(
        self, method: str, path: str, body: Any, params: dict[str, Any], timeout: float | None,
        *, versioned: bool = True, raw: bytes | None = None, content_type: str = "application/json",
        upgrade: bool = False, stream: bool = False,
    ) -> Any:
        url = (f"/v{self.version}" if versioned else "") + path
        query = {k: _param(v) for k, v in params.items() if v is not None}
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        head = (
            f"{method} {url} HTTP/1.1\r\nHost: docker\r\nUser-Agent: pygent-runner\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(data)}\r\n"
            + ("Connection: Upgrade\r\nUpgrade: tcp\r\n" if upgrade else "Connection: close\r\n")
            + "\r\n"
        ).encode()
        sock = self._connect(timeout)
        try:
            sock.sendall(head + data if len(data) < (1 << 20) else head)
            if len(data) >= (1 << 20):
                sock.sendall(data)
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = sock.recv(65536)
                if not chunk:
                    raise transports.explain(self.endpoint, None, buf, sock)
                buf += chunk
            header, rest = buf.split(b"\r\n\r\n", 1)
            lines = header.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            headers = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            if status == 400 and self.endpoint.tls is None and self.kind == "tcp" and transports.PLAIN_TO_TLS in buf:
                raise transports.explain(self.endpoint, None, buf)
            if upgrade and status == 101:
                sock.settimeout(None)
                return status, sock, rest
            if stream and status < 400:
                return status, _body_stream(sock, headers, rest)
            body_bytes = _read_body(sock, headers, rest)
        except (socket.timeout, TimeoutError):
            sock.close()
            raise EngineUnavailable(f"the engine at {self.host} did not answer {method} {path} within {timeout:.0f}s") from None
        except EngineUnavailable:
            sock.close()
            raise
        except OSError as exc:
            error = transports.explain(self.endpoint, exc, sock=sock)
            sock.close()
            raise error from None
        except BaseException:
            sock.close()
            raise
        sock.close()
        if upgrade or stream:
            return status, None, body_bytes
        return Response(status, headers, body_bytes)

    # -- calls --------------------------------------------------------------
    def call(
        self, method: str, path: str, body: Any = None, *, params: dict[str, Any] | None = None,
        ok: tuple[int, ...] = (200, 201, 204, 304), what: str = "", timeout: float | None = None,
        raw: bytes | None = None, content_type: str = "application/json",
    ) -> Any:
        """One request; the decoded JSON answer (or None). Raises NotFound, Conflict, EngineAPIError, EngineUnavailable."""
        resp = self._send(method, path, body, params or {}, self.timeout if timeout is None else timeout,
                          raw=raw, content_type=content_type)
        if resp.status not in ok:
            raise _error(resp.status, resp.body, what)
        if resp.body and resp.headers.get("content-type", "").startswith("application/json"):
            return resp.json()
        return resp.body or None

    def upgrade(self, path: str, *, params: dict[str, Any] | None = None) -> tuple[socket.socket, bytes]:
        """POST with Upgrade: tcp (attach): the raw socket and the bytes already read past the headers."""
        result = self._send("POST", path, None, params or {}, self.timeout, upgrade=True)
        status, sock, rest = result
        if status != 101 or sock is None:
            raise _error(status, rest, f"attach {path}")
        return sock, rest

    def stream(self, method: str, path: str, *, params: dict[str, Any] | None = None,
               timeout: float | None = None, what: str = "") -> Iterator[bytes]:
        """The answer's body as it comes (archives, events). Raises as call() before the first chunk."""
        answer = self._send(method, path, None, params or {}, self.timeout if timeout is None else timeout, stream=True)
        if answer[0] >= 400:  # (status, None, body): the body says why
            raise _error(answer[0], answer[2], what)
        return answer[1]

    def json_stream(self, path: str, *, params: dict[str, Any] | None = None, timeout: float | None = None) -> Iterator[dict]:
        """Newline-delimited JSON objects (the events endpoint)."""
        buf = b""
        for chunk in self.stream("GET", path, params=params, timeout=timeout):
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.strip():
                    yield json.loads(line)
        if buf.strip():
            yield json.loads(buf)

    def ping(self, timeout: float = 5.0) -> None:
        """Raises EngineUnavailable unless the engine answers."""
        resp = self._send("GET", "/_ping", None, {}, timeout, versioned=False)
        if resp.status != 200:
            raise EngineUnavailable(f"the engine at {self.host} answered /_ping with {resp.status}")


def _endpoint(host: "str | endpoints.Endpoint | None") -> "endpoints.Endpoint":
    """The Endpoint for a client: the resolver's when host is None or names the same engine (so a
    context's TLS material and the reason it was chosen come along, e.g. in a child process given
    only the address), else host parsed, with DOCKER_TLS_VERIFY's material for tcp://."""
    if isinstance(host, endpoints.Endpoint):
        return host
    if not host or host == os.environ.get("DOCKER_HOST"):
        return endpoints.resolve()
    try:
        resolved = endpoints.resolve()
    except ValueError:  # ConfigError: an unreadable context; host itself may still be fine
        resolved = None
    if resolved is not None and resolved.host == host:
        return resolved
    tls = endpoints.env_tls(os.environ) if host.startswith("tcp://") else None
    return endpoints.parse(host, tls)


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _error(status: int, body: bytes, what: str) -> EngineAPIError:
    try:
        message = str((json.loads(body) or {}).get("message") or "")
    except (ValueError, AttributeError):
        message = body.decode("utf-8", "replace")
    message = message.strip()[:500] or f"HTTP {status}"
    cls = NotFound if status == 404 else Conflict if status == 409 else EngineAPIError
    return cls(status, message, what)


def _read_body(sock: socket.socket, headers: dict[str, str], rest: bytes) -> bytes:
    return b"".join(_body_stream(sock, headers, rest))


def _body_stream(sock: socket.socket, headers: dict[str, str], rest: bytes) -> Iterator[bytes]:
    """Yield the body's bytes (chunked or not), closing the socket at the end."""
    try:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            buf = bytearray(rest)
            while True:
                while b"\r\n" not in buf:
                    more = sock.recv(65536)
                    if not more:
                        return
                    buf += more
                line, _, tail = bytes(buf).partition(b"\r\n")
                size = int(line.split(b";")[0].strip() or b"0", 16)
                buf = bytearray(tail)
                if size == 0:
                    return
                while len(buf) < size + 2:
                    more = sock.recv(max(65536, size + 2 - len(buf)))
                    if not more:
                        if buf:
                            yield bytes(buf[:size])
                        return
                    buf += more
                yield bytes(buf[:size])
                del buf[: size + 2]
        else:
            length = headers.get("content-length")
            left = int(length) if length is not None and length.isdigit() else None
            if rest:
                yield rest if left is None else rest[:left]
                if left is not None:
                    left -= len(rest)
            while left is None or left > 0:
                more = sock.recv(65536 if left is None else min(65536, left))
                if not more:
                    return
                if left is not None:
                    left -= len(more)
                yield more
    except (socket.timeout, TimeoutError):
        raise EngineUnavailable("the engine stopped sending in the middle of an answer") from None
    except OSError as exc:
        raise EngineUnavailable(f"lost the engine in the middle of an answer: {exc}") from None
    finally:
        sock.close()
