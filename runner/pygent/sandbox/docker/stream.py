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
    """Demultiplexes Docker's attach/exec stream: the server's stdout to the channel, its stderr kept small.

    Why recv_into: a forwarded port moves bulk bytes here, and each Python copy
    of them is CPU the engine's own copies (shim, dockerd) need on a small host.
    Bytes go from the socket into one reused buffer, and from there straight
    into the caller's buffer: one copy, not a bytes object per recv, a slice and
    a bytes() of it.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()  # received but not yet demultiplexed (the upgrade's leftover, a TLS peek)
        self.kind = 1
        self.pending = 0  # bytes still to come in the current docker frame
        self.head = bytearray()  # a docker frame header cut by a recv
        self.diagnostics = bytearray()  # the server's own stderr, kept small for error messages
        self._raw = memoryview(bytearray(_RECV))
        self._tls = hasattr(sock, "pending")  # ssl.SSLSocket: no sendmsg, no MSG_PEEK

    def recv_into(self, out: bytearray, deadline: float | None) -> None:
        """Append the server's next stdout bytes to `out` (at least one byte of stdout or
        stderr came); raises ChannelBroken on EOF or past the deadline."""
        # Checked before handing out buffered data too: a command that never stops
        # printing (`yes`) must not keep the caller past its deadline.
        timeout = None if deadline is None else deadline - time.monotonic()
        if timeout is not None and timeout <= 0:
            raise ChannelBroken("the sandbox stopped answering (engine down or container killed)")
        if self.buf:
            data, self.buf = self.buf, bytearray()
            self._split(data, out)
            return
        while True:
            # Waits are chunked: a huge timeout (1e10 s) would overflow the socket's time_t.
            self.sock.settimeout(None if timeout is None else min(timeout, 3600.0))
            try:
                n = self.sock.recv_into(self._raw)
                break
            except (socket.timeout, TimeoutError):
                timeout = None if deadline is None else deadline - time.monotonic()
                if timeout is not None and timeout <= 0:
                    raise ChannelBroken("the sandbox stopped answering (engine down or container killed)") from None
            except OSError as exc:
                raise ChannelBroken(f"lost the sandbox's stream: {exc}") from None
        if not n:
            tail = self.diagnostics.decode("utf-8", "replace").strip()[-300:]
            raise ChannelBroken("the sandbox's main process exited" + (f": {tail}" if tail else ""))
        with self._raw[:n] as data:
            self._split(data, out)

    def _split(self, data: "bytes | bytearray | memoryview", out: bytearray) -> None:
        pos, end = 0, len(data)
        while pos < end:
            if self.pending:
                n = min(self.pending, end - pos)
                if self.kind == 1:
                    out += data[pos : pos + n]
                else:
                    self.diagnostics += data[pos : pos + n]
                    del self.diagnostics[:-2000]
                self.pending -= n
                pos += n
                continue
            take = min(8 - len(self.head), end - pos)
            self.head += data[pos : pos + take]
            pos += take
            if len(self.head) == 8:
                self.kind, self.pending = _DOCKER_HEADER.unpack(self.head)
                self.head.clear()

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

    def send_parts(self, head: bytes, payload: "bytes | memoryview") -> None:
        """head + payload in one write where the socket can (sendmsg), without joining them:
        a restore's and an upload's bulk bytes are not copied once more. TLS: joined."""
        if not self._tls:
            parts = [memoryview(head), memoryview(payload)]
            while parts:
                sent = self.sock.sendmsg(parts)
                while parts and sent >= len(parts[0]):
                    sent -= len(parts.pop(0))
                if sent:
                    parts[0] = parts[0][sent:]
            return
        self.sock.sendall(bytes(head) + bytes(payload))

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass
