"""The host end of a socket handoff: the command server passes us its connected socket to an exposed port.

Why: a forwarded connection streamed over the attach stream is bounded by the
engine's copy of that stream (about 340 MB/s here, a quarter of `docker run -p`),
and each request pays its frames there. On an engine on this machine the server
can instead connect to 127.0.0.1:PORT inside and hand the connected socket to
us over a unix socket (SCM_RIGHTS): the kernel keeps that socket in the
sandbox's network namespace, the sandbox still has no interface but loopback,
and we copy between the client and it directly.

Where: every sandbox of a local engine mounts this user's handoff directory
read-only at protocol.HANDOFF_DIR. Connecting to a socket needs no write access to its
mount, and nothing in the sandbox can create a file there. Each process listens
on a socket of its own, named at random; the server learns the name and a
per-connection token only over the sandbox's channel, so it can hand over only
what we asked it for, and any other handshake is dropped.

What the server sends is untrusted: one fd, which must be a socket, with the
16-byte token of a connection we are waiting for; anything else is closed.
"""

from __future__ import annotations

import os
import secrets
import selectors
import socket
import stat
import threading
import time
from typing import Callable

TOKEN_BYTES = 16
#: A handshake not complete within this is dropped: the server sends it right after connecting.
HANDSHAKE_TIMEOUT = 2.0
#: Handshakes in progress at most; more are refused at once (a sandbox flooding the listener).
MAX_PENDING = 64

Deliver = Callable[[socket.socket], None]


def directory() -> str:
    """This user's handoff directory (made 0711: sandboxes may enter it, not list it).

    $XDG_RUNTIME_DIR when set, else /tmp with the uid in the name; a /tmp path that
    exists but is not our own directory is refused, never used.
    Raises: OSError.
    """
    run = os.environ.get("XDG_RUNTIME_DIR")
    path = os.path.join(run, "pygent-runner-ports") if run else f"/tmp/pygent-runner-ports-{os.getuid()}"
    try:
        os.mkdir(path, 0o711)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise OSError(f"{path} is not a directory of this user's")
    if stat.S_IMODE(st.st_mode) != 0o711:
        os.chmod(path, 0o711)
    return path


class Listener:
    """This process's handoff socket, and the connections waiting for their socket."""

    def __init__(self, where: str) -> None:
        self.name = f"{secrets.token_hex(12)}.sock"
        self.path = os.path.join(where, self.name)
        self.pid = os.getpid()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        os.chmod(self.path, 0o666)  # the sandbox user is another uid: it needs write access to connect
        self.sock.listen(128)
        self.sock.setblocking(False)
        self.waiting: dict[bytes, Deliver] = {}
        self.lock = threading.Lock()
        threading.Thread(target=self._serve, name="pygent-handoff", daemon=True).start()

    def expect(self, deliver: Deliver) -> bytes:
        """A fresh token: the socket handed over with it goes to `deliver` (on our thread)."""
        token = secrets.token_bytes(TOKEN_BYTES)
        with self.lock:
            self.waiting[token] = deliver
        return token

    def cancel(self, token: bytes) -> None:
        with self.lock:
            self.waiting.pop(token, None)

    def close(self) -> None:
        try:
            os.unlink(self.path)
        except OSError:
            pass
        self.sock.close()

    def _serve(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ)
        pending: dict[socket.socket, float] = {}  # oldest first
        while True:
            try:
                ready = sel.select(0.5)
            except (OSError, ValueError):
                return  # closed
            for key, _ in ready:
                conn = key.fileobj
                if conn is self.sock:
                    try:
                        conn, _ = self.sock.accept()
                    except BlockingIOError:
                        continue
                    except OSError:
                        return
                    conn.setblocking(False)
                    if self._receive(conn):
                        continue  # the usual case: the server sent its handshake as it connected
                    if len(pending) >= MAX_PENDING:  # a flood: the oldest silent one goes, not the newest
                        oldest = next(iter(pending))
                        sel.unregister(oldest)
                        del pending[oldest]
                        oldest.close()
                    pending[conn] = time.monotonic() + HANDSHAKE_TIMEOUT
                    sel.register(conn, selectors.EVENT_READ)
                else:
                    sel.unregister(conn)
                    del pending[conn]  # type: ignore[arg-type]
                    self._receive(conn, wait=False)  # type: ignore[arg-type]
            now = time.monotonic()
            for conn in [c for c, end in pending.items() if end < now]:
                sel.unregister(conn)
                del pending[conn]
                conn.close()

    def _receive(self, conn: socket.socket, wait: bool = True) -> bool:
        """One handshake: the token and one socket. Anything else is closed, and nothing waits on it.
        False (conn kept) when nothing has arrived yet and `wait`: the caller waits for it."""
        fds: list[int] = []
        try:
            token, fds, _flags, _addr = socket.recv_fds(conn, TOKEN_BYTES, 1)
        except BlockingIOError:
            if wait:
                return False
            token = b""
        except OSError:
            token = b""
        conn.close()
        with self.lock:
            deliver = self.waiting.pop(token, None) if len(token) == TOKEN_BYTES else None
        peer = None
        for fd in fds:
            try:
                if deliver is not None and peer is None and stat.S_ISSOCK(os.fstat(fd).st_mode):
                    peer = socket.socket(fileno=fd)
                    peer.setblocking(True)  # it was the server's non-blocking socket: the flag came with it
                    continue
            except OSError:
                pass
            os.close(fd)
        if deliver is not None:
            try:
                if peer is None:
                    raise OSError("the sandbox handed over no socket")
                deliver(peer)
            except OSError:
                if peer is not None:
                    peer.close()
        return True


_listener: Listener | None = None
_lock = threading.Lock()


def listener() -> Listener | None:
    """This process's listener, made on first use; None when the directory cannot be had
    (the forward then streams over the channel)."""
    global _listener
    with _lock:
        if _listener is not None and _listener.pid == os.getpid():
            return _listener
        try:
            where = directory()
            _sweep(where)
            _listener = Listener(where)
        except OSError:
            return None
        import atexit

        atexit.register(_listener.close)
        return _listener


def _sweep(where: str) -> None:
    """Remove the sockets of processes that are gone (a SIGKILL leaves its socket): nobody accepts on them."""
    for name in os.listdir(where):
        if not name.endswith(".sock"):
            continue
        path = os.path.join(where, name)
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.setblocking(False)
            probe.connect(path)
        except ConnectionRefusedError:
            try:
                os.unlink(path)
            except OSError:
                pass
        except OSError:
            pass  # busy (EAGAIN) or not ours to judge: leave it
        finally:
            probe.close()
