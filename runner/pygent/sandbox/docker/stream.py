"""Docker's attach stream as a channel transport: the 8-byte stdout/stderr multiplexing.

Why its own module: the channel speaks the server's frames over any byte
stream; only this file knows how Docker (and Podman's compatible API) wrap a
non-tty container's stdout and stderr.
"""

from __future__ import annotations

import select
import socket
import struct
import time

from ..channel import ChannelBroken

_DOCKER_HEADER = struct.Struct(">BxxxI")
_RECV = 1 << 18


class DockerStream:
    """Demultiplexes Docker's attach/exec stream into (stream kind, bytes): 1 stdout, 2 stderr."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.kind = 1
        self.pending = 0  # bytes still to come in the current docker frame
        self.diagnostics = bytearray()  # the server's own stderr, kept small for error messages

    def recv(self, deadline: float | None) -> tuple[int, bytes]:
        """Next chunk; raises ChannelBroken on EOF or past the deadline."""
        while True:
            # Checked before handing out buffered data too: a command that never stops
            # printing (`yes`) must not keep the caller past its deadline.
            timeout = None if deadline is None else deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                raise ChannelBroken("the sandbox stopped answering (engine down or container killed)")
            out = self._take()
            if out:
                return self.kind, out
            # Waits are chunked: a huge timeout (1e10 s) would overflow the socket's time_t.
            self.sock.settimeout(None if timeout is None else min(timeout, 3600.0))
            try:
                data = self.sock.recv(_RECV)
            except (socket.timeout, TimeoutError):
                continue
            except OSError as exc:
                raise ChannelBroken(f"lost the sandbox's stream: {exc}") from None
            if not data:
                tail = self.diagnostics.decode("utf-8", "replace").strip()[-300:]
                raise ChannelBroken("the sandbox's main process exited" + (f": {tail}" if tail else ""))
            self.buf += data

    def _take(self) -> bytes:
        while True:
            if self.pending:
                n = min(self.pending, len(self.buf))
                if not n:
                    return b""
                out = bytes(self.buf[:n])
                del self.buf[:n]
                self.pending -= n
                return out
            if len(self.buf) < 8:
                return b""
            self.kind, self.pending = _DOCKER_HEADER.unpack_from(self.buf)
            del self.buf[:8]

    def peer_closed(self) -> bool:
        """Has the engine closed the connection? A zero-timeout poll and a MSG_PEEK: nothing consumed.

        Buffered or readable data means open (a late frame); only the end of the stream,
        or a socket error, means closed. Never blocks. Over TLS (no MSG_PEEK on an
        SSLSocket) readable bytes are read into the buffer instead, where recv finds them.
        """
        pending = getattr(self.sock, "pending", None)  # ssl.SSLSocket: bytes decrypted, not yet read
        try:
            if pending is not None and pending():
                return False
            poller = select.poll()
            poller.register(self.sock, select.POLLIN)
            if not poller.poll(0):
                return False  # nothing to read: the connection is open
            if pending is None:
                data = self.sock.recv(1, socket.MSG_PEEK)  # readable: the poll says it will not block
            else:
                data = self._read_now()
                if data is None:
                    return False
                self.buf += data
        except (BlockingIOError, InterruptedError):
            return False
        except (OSError, ValueError):
            return True
        return not data

    def _read_now(self) -> bytes | None:
        """What a TLS socket has without waiting; None when the bytes were only TLS records (no data yet)."""
        previous = self.sock.gettimeout()
        self.sock.settimeout(0)
        try:
            return self.sock.recv(_RECV)
        except OSError as exc:
            if type(exc).__name__ in ("SSLWantReadError", "SSLWantWriteError"):
                return None
            raise
        finally:
            self.sock.settimeout(previous)

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass
