"""A direct channel from a driver to its node agent, beside Ray's actor calls (the transport;
the agent's protocol, bytes in and bytes out, is NodeAgent.run's).

Why: an actor call costs ~1.6 ms round trip here, as much as the whole overhead issue 23
allows an `echo hi` through the Ray backend (1.5 ms p50); the same bytes over a TCP
connection of the agent's own cost ~0.1 ms. Ray still makes, places, owns and kills the
agent, and carries the secret that opens the channel: only the driver that made the agent
learns it (NodeAgent.hello), where any Ray client may call the actor itself. A driver that
cannot connect (a firewall between it and the node's ports) keeps using Ray's calls.

Wire: the client sends the 32-byte secret once; then each call is a frame (8-byte big-endian
length, body) answered by a frame. One call at a time per connection; the client keeps a
pool, so calls on several sandboxes run at once as they do through the threaded actor.
Nothing is unpickled by the agent before the secret matched (NodeAgent.run unpickles).

Tunnels (expose() through Ray, ray/ports.py): a connection whose first frame is TUNNEL, then
"SANDBOX_ID PORT", is no longer framed: the agent hands it to that sandbox's port inside
(NodeAgent.tunnel) and its bytes are the client's, both ways. Nothing is unpickled there.
"""

from __future__ import annotations

import hmac
import os
import socket
import struct
import threading
from typing import Callable

SECRET_BYTES = 32
#: First bytes of a tunnel's only frame (a pickled call starts with b"\x80": never this).
TUNNEL = b"TUNNEL "
_LEN = struct.Struct(">Q")
#: Seconds a new connection has to present the secret; to connect at all (else Ray's calls).
AUTH_TIMEOUT, CONNECT_TIMEOUT = 5.0, 2.0
#: TCP keepalive: a node that vanishes (its machine off) is noticed in about 11 s.
KEEPALIVE = (5, 2, 3)


class Broken(Exception):
    """The connection failed mid-call: the call's outcome is unknown (the caller asks Ray why)."""


def _keepalive(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for opt, value in zip(("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT"), KEEPALIVE):
        if hasattr(socket, opt):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)


def _recv_exactly(sock: socket.socket, n: int) -> bytearray:
    """n bytes, read in place (an upload's frame is not copied again: pickle reads a bytearray)."""
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = sock.recv_into(view[got:])
        if not k:
            raise ConnectionError("the peer closed the connection")
        got += k
    return buf


def _send_frame(sock: socket.socket, body: bytes) -> None:
    head = _LEN.pack(len(body))
    if len(body) < 65536:
        sock.sendall(head + body)  # one segment for the common small call
    else:
        sock.sendall(head)
        sock.sendall(body)


def _recv_frame(sock: socket.socket) -> bytearray:
    (n,) = _LEN.unpack(_recv_exactly(sock, _LEN.size))
    return _recv_exactly(sock, n)


class DirectServer:
    """The agent's side: listens on the node's address, one thread per connection.
    `tunnel(request, sock)`, when given, takes over a connection that asks for a tunnel
    (it owns the socket from then on, and runs on the connection's thread)."""

    def __init__(self, handler: Callable[[bytes], bytes], host: str,
                 tunnel: Callable[[bytes, socket.socket], None] | None = None) -> None:
        self.handler, self.tunnel = handler, tunnel
        self.secret = os.urandom(SECRET_BYTES)
        self.sock = socket.create_server((host, 0), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.address = (host, self.sock.getsockname()[1])
        threading.Thread(target=self._accept, name="pygent-direct-accept", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), name="pygent-direct", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            _keepalive(conn)
            conn.settimeout(AUTH_TIMEOUT)
            if not hmac.compare_digest(_recv_exactly(conn, SECRET_BYTES), self.secret):
                conn.close()
                return
            conn.settimeout(None)
            while True:
                body = _recv_frame(conn)
                if self.tunnel is not None and body.startswith(TUNNEL):
                    self.tunnel(bytes(body[len(TUNNEL):]), conn)  # its socket now
                    return
                _send_frame(conn, self.handler(body))
        except Exception:  # noqa: BLE001 - a broken peer (or a frame too large to hold): drop it
            conn.close()


class DirectClient:
    """The driver's side: a pool of authenticated connections to one agent.

    Raises OSError from the constructor when the agent cannot be reached (the caller keeps Ray's calls).
    """

    def __init__(self, address: tuple[str, int], secret: bytes) -> None:
        self.address, self.secret = address, secret
        self._idle: list[socket.socket] = []
        self._lock = threading.Lock()
        self._idle.append(self._connect())

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(self.address, timeout=CONNECT_TIMEOUT)
        try:
            _keepalive(sock)
            sock.sendall(self.secret)
            sock.settimeout(None)
        except OSError:
            sock.close()
            raise
        return sock

    def open_tunnel(self, request: bytes) -> socket.socket:
        """A new connection to the agent that, after its one frame, carries a client's bytes
        to `request`'s sandbox port (see TUNNEL). Raises OSError (the agent cannot be reached)."""
        sock = self._connect()
        try:
            _send_frame(sock, TUNNEL + request)
        except OSError:
            sock.close()
            raise
        return sock

    def call(self, body: bytes, timeout: float | None = None) -> bytes:
        """One frame out, its answer back. Raises Broken (connection lost or no answer in `timeout`)."""
        with self._lock:
            sock = self._idle.pop() if self._idle else None
        try:
            if sock is None:
                sock = self._connect()
            sock.settimeout(timeout)
            _send_frame(sock, body)
            answer = _recv_frame(sock)
        except OSError as exc:  # reset, EOF (ConnectionError), timeout
            if sock is not None:
                sock.close()
            raise Broken(f"{type(exc).__name__}: {exc}") from None
        with self._lock:
            self._idle.append(sock)
        return answer

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for sock in idle:
            sock.close()
