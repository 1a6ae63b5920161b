"""expose() through the Ray backend: the driver's listener, each connection tunnelled to the node agent.

Why a tunnel per connection on the agent's direct channel (direct.py), not a listener on
the node: a port opened on the node's address would be open to every machine that reaches
the node, and a listener on the node's loopback is out of the driver's reach. The driver
listens where the caller asked (loopback by default, as locally), and each accepted client
gets a connection of its own to the agent, opened with the secret only this driver knows;
the agent hands it to the sandbox's port exactly as a local expose() does (NodeAgent.tunnel).
So the sandbox still has no network interface, and the node opens no port for it.

A driver without the direct channel (a firewall between it and the node) cannot expose:
the error says so. Ray's actor calls would carry a connection's bytes as one call per
chunk, which is not worth building for a driver that cannot reach the node anyway.
"""

from __future__ import annotations

import itertools
import socket
import threading
from typing import TYPE_CHECKING, Any

from ...errors import SandboxError, SandboxGone
from ..forward import copy_half, reset

if TYPE_CHECKING:
    from .direct import DirectClient

_ids = itertools.count(1)


class Tunnels:
    """PortForward's carrier for one Ray sandbox (forward.PortForward's `mux`)."""

    def __init__(self, sandbox: Any) -> None:
        self.sandbox = sandbox

    def channel(self) -> "DirectClient":
        """Raises SandboxGone (its agent died), SandboxError (no direct channel from here)."""
        sb = self.sandbox
        if not sb.healthy():
            raise SandboxGone(f"sandbox {sb.id[:12]} on Ray node {sb.node_id[:12]} is gone",
                              reason=sb._dead or "its node agent died")
        channel = sb._backend._channel(sb.node_id, sb._agent)
        if channel is None:
            raise SandboxError(f"expose() through Ray needs the direct channel to the node agent of node "
                               f"{sb.node_id[:12]}, and this driver cannot reach it (its port on the node's address, "
                               "see docs/scale.md); open the node's ports to the driver")
        return channel

    def connection(self, sock: socket.socket, port: int) -> "Tunnel":
        """Raises SandboxError (no direct channel, or the agent cannot be reached: the client is reset)."""
        request = f"{self.sandbox.id} {port}".encode("ascii")
        try:
            peer = self.channel().open_tunnel(request)
        except OSError as exc:
            raise SandboxError(f"the node agent of node {self.sandbox.node_id[:12]} cannot be reached: {exc}") from None
        return Tunnel(sock, peer)

    def probe(self, port: int, timeout: float) -> dict:
        """{"ok": True} once something listens on `port` inside (asked on the node)."""
        try:
            return self.sandbox._call("_probe_port", port, timeout)
        except SandboxError as exc:
            return {"error": str(exc)}


class Tunnel:
    """One client's connection and its tunnel to the agent, copied both ways; an end is passed
    on as a half-close, a reset (the port had no listener inside, the node died) as a reset."""

    def __init__(self, sock: socket.socket, peer: socket.socket) -> None:
        self.sock, self.peer = sock, peer
        self.sid = next(_ids)
        self.closed = False
        self._halves = 0
        self._lock = threading.Lock()

    def run(self) -> None:
        threading.Thread(target=self._copy, args=(self.peer, self.sock), name=f"pygent-ray-fwd-d-{self.sid}",
                         daemon=True).start()
        self._copy(self.sock, self.peer)

    def _copy(self, src: socket.socket, dst: socket.socket) -> None:
        if not copy_half(src, dst):
            self.abort()
            return
        with self._lock:
            self._halves += 1
            if self._halves < 2 or self.closed:
                return
            self.closed = True
        src.close()
        dst.close()

    def abort(self) -> None:
        """Reset both ends (PortForward.close(), or an error on either side)."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
        reset(self.sock)
        reset(self.peer)
