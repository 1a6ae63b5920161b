"""A private unix socket whose connections are carried over an endpoint's transport (for docker-py).

Why: docker-py speaks ssh:// only through paramiko (imported even for its
shell-out mode), a large dependency for image builds alone. Instead docker-py
gets a unix socket in a 0700 directory of ours, and each connection to it is
one `transports.connect()` (ssh dial-stdio here), so builds reach the same
engine over the same transport, with the same errors, as the stdlib client.
Two copying threads per open connection; nothing is left once it closes.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import tempfile
import threading
from typing import TYPE_CHECKING

from . import transports

if TYPE_CHECKING:
    from .endpoint import Endpoint


class Relay:
    """Listen on `path` (unix://) and carry every connection to `ep`. close() ends it."""

    def __init__(self, ep: "Endpoint") -> None:
        self.ep = ep
        self._dir = tempfile.mkdtemp(prefix="pygent-relay-")  # 0700: only we may connect
        self.path = os.path.join(self._dir, "engine.sock")
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(64)
        self._closed = False
        atexit.register(self.close)  # the socket's directory goes with the process (exec's os._exit: cli/exec.py)
        threading.Thread(target=self._accept, name="pygent-relay", daemon=True).start()

    @property
    def host(self) -> str:
        return f"unix://{self.path}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._carry, args=(client,), daemon=True).start()

    def _carry(self, client: socket.socket) -> None:
        try:
            upstream = transports.connect(self.ep, 30)
        except Exception:
            client.close()  # the caller's error comes from transports.probe, with the fix
            return
        back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
        back.start()
        _pump(client, upstream)
        back.join()
        client.close()
        upstream.close()

    def close(self) -> None:
        if self._closed:
            return
        atexit.unregister(self.close)
        self._closed = True
        try:
            self._listener.close()
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)


def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy src to dst until src ends, then half-close dst (the other direction goes on)."""
    try:
        while True:
            data = src.recv(1 << 16)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass
