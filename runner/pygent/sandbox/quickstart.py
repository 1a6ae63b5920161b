"""Start a sandbox from a remembered engine create body: no docker-py, no pydantic.

Why: `pygent-runner exec` is one process per command. Importing pydantic (policy,
settings) and docker-py with requests costs ~150 ms, more than the engine's own
work (~100 ms). The first `exec` with a given configuration takes the full path
and remembers the create body it sent (cli/exec_cache.py); later ones start the
same hardened container here: create, attach and start over the engine's unix
socket, then the same server protocol (channel.py).

Anything unexpected before the command runs raises QuickStartUnavailable (the
container, if any, is removed first): the caller then takes the full path,
which builds missing images, falls back from a broken runtime and explains
errors. Only the engine's unix socket is spoken to; other DOCKER_HOSTs, and
images without the command server, never get here.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from typing import Any, Callable, Iterable

from . import lifecycle
from .channel import Channel, ChannelBroken, command_spec
from .result import ExecResult

#: Seconds a freshly started server has to say hello (as DockerSandbox).
START_TIMEOUT = 30.0
#: Seconds one engine API call may take.
API_TIMEOUT = 60.0
#: Seconds close() waits for the engine's auto-remove before forcing the removal.
REMOVE_WAIT = 10.0


class QuickStartUnavailable(Exception):
    """The fast path cannot start this sandbox; take the full path."""


def engine_socket() -> str | None:
    """The engine's unix socket path (DOCKER_HOST or the default), or None for other transports."""
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    return host[len("unix://"):] if host.startswith("unix://") else None


def _request(
    path: str, method: str, url: str, body: Any = None, *, upgrade: bool = False, timeout: float = API_TIMEOUT
) -> tuple[int, Any, bytes]:
    """One HTTP/1.1 request on a fresh connection: (status, socket if upgraded else None, rest).

    `rest` is the response body, or for an upgrade the stream bytes read past the headers.
    """
    data = b"" if body is None else json.dumps(body).encode()
    head = (
        f"{method} {url} HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n"
        + ("Connection: Upgrade\r\nUpgrade: tcp\r\n" if upgrade else "Connection: close\r\n")
        + "\r\n"
    )
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(head.encode() + data)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("the engine closed the connection")
            buf += chunk
        header, rest = buf.split(b"\r\n\r\n", 1)
        status = int(header.split(b" ", 2)[1])
        if upgrade and status == 101:
            sock.settimeout(None)
            return status, sock, rest
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
    except BaseException:
        sock.close()
        raise
    sock.close()
    if b"transfer-encoding: chunked" in header.lower():
        rest = _unchunk(rest)
    return status, None, rest


def _unchunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return bytes(out)


class QuickSandbox:
    """A sandbox started by `start()`: runs commands over the server channel, removed on close()."""

    def __init__(self, path: str, api: str, cid: str, memory: str, default_timeout: float, max_output: int) -> None:
        self._path = path
        self._api = api
        self.id = cid
        self._memory = memory
        self._timeout = default_timeout
        self._max_output = max_output
        self._channel: Channel | None = None
        self._closed = False
        lifecycle.track(self)

    @classmethod
    def start(cls, entry: dict[str, Any]) -> "QuickSandbox":
        """Create, attach, start, hello. Raises QuickStartUnavailable (nothing is left behind)."""
        path = engine_socket()
        if path is None:
            raise QuickStartUnavailable("not a unix-socket engine")
        config = dict(entry["config"])
        hostname = f"sandbox-{uuid.uuid4().hex[:8]}"
        config["Hostname"] = hostname
        config["Labels"] = lifecycle.owner_labels()
        name = f"pygent-{hostname.removeprefix('sandbox-')}-{uuid.uuid4().hex[:8]}"
        base = f"/v{entry['api']}/containers"
        sandbox: QuickSandbox | None = None
        try:
            try:
                status, _, body = _request(path, "POST", f"{base}/create?name={name}", config)
            except OSError as exc:
                raise QuickStartUnavailable(f"engine: {exc}") from None
            if status != 201:
                raise QuickStartUnavailable(f"create answered {status}: {body[:200]!r}")
            sandbox = cls(path, entry["api"], json.loads(body)["Id"], entry["memory"], entry["timeout"], entry["max_output"])
            status, sock, rest = _request(path, "POST", f"{base}/{sandbox.id}/attach?stdin=1&stdout=1&stderr=1&stream=1", upgrade=True)
            if status != 101:
                raise QuickStartUnavailable(f"attach answered {status}")
            sandbox._channel = Channel(sock)
            sandbox._channel.stream.buf += rest
            status, _, body = _request(path, "POST", f"{base}/{sandbox.id}/start")
            if status not in (204, 304):
                raise QuickStartUnavailable(f"start answered {status}: {body[:200]!r}")
            sandbox._channel.wait_hello(START_TIMEOUT)
            return sandbox
        except BaseException as exc:
            # Leave nothing behind, even when interrupted (Ctrl-C, SIGTERM) between the engine
            # creating the container and its answer reaching us: it carries our name.
            if sandbox is not None:
                sandbox._remove()
            else:
                try:
                    _request(path, "DELETE", f"{base}/{name}?force=1&v=1")
                except OSError:
                    pass  # gc reclaims it by label
            if isinstance(exc, Exception) and not isinstance(exc, QuickStartUnavailable):
                raise QuickStartUnavailable(str(exc)) from None
            raise

    def exec(
        self,
        cmd: str,
        *,
        timeout: float | None = None,
        env: dict[str, str] | None = None,
        workdir: str | None = None,
        stdin: bytes | Iterable[bytes] | None = None,
        on_stdout: Callable[[bytes], None] | None = None,
        on_stderr: Callable[[bytes], None] | None = None,
    ) -> ExecResult:
        """As DockerSandbox.exec on a server image (same spec, same channel)."""
        spec = command_spec(cmd, self._timeout if timeout is None else timeout, env, workdir, self._max_output)
        started, wall = time.monotonic(), time.time()
        try:
            return self._channel.run(spec, stdin, on_stdout, on_stderr)  # type: ignore[union-attr]
        except ChannelBroken as exc:
            from .docker import after_broken_stream  # the slow path only when something broke

            return after_broken_stream(self.id, self._memory, exc, started, wall, "/workspace")

    def close(self, wait: bool = True) -> None:
        """Close the stream: the server exits and the engine's auto-remove deletes the container.
        wait: return once it is gone (forcing the removal if that does not happen in time)."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._channel is None:
                self._remove()
                return
            self._channel.close()
            if wait:
                try:
                    status, _, _ = _request(
                        self._path, "POST", f"/v{self._api}/containers/{self.id}/wait?condition=removed", timeout=REMOVE_WAIT
                    )
                except OSError:
                    status = 0
                if status not in (200, 404):
                    self._remove()
        finally:
            lifecycle.untrack(self)

    def _remove(self) -> None:
        self._closed = True
        if self._channel is not None:
            self._channel.close()
        try:
            _request(self._path, "DELETE", f"/v{self._api}/containers/{self.id}?force=1&v=1")
        except OSError:
            pass  # engine gone: gc reclaims it by label
        lifecycle.untrack(self)

