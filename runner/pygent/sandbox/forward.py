"""Host side of `Sandbox.expose()`: a listener whose connections are streams on the sandbox's channel.

Why over the channel: a sandbox has no network interface (only loopback), and
giving it one to publish a port would loosen the default for every sandbox that
serves something. The command server already runs in every image and runtime
(runc, crun, runsc, Podman) and speaks to us over the attach stream; each
accepted connection becomes a stream there (protocol.py, "Streams"), which the
server connects to 127.0.0.1:PORT inside.

Threads: the channel's demux thread hands us the sandbox's frames and must
never block (it also carries every other stream and the commands' frames), so
it writes to a client only without waiting, and leaves the rest to the
connection's writer thread; a pump thread per connection reads the client.
Memory: the server sends at most protocol.WINDOW bytes beyond what we credited
back, so a slow client holds at most that much here per connection.

Handoff (handoff.py): on an engine on this machine, the open asks the server to
hand us its connected socket instead, and the connection's bytes then go
between the client and that socket, off the channel: two threads copy, one
RELAY_BUFFER each way. A server that cannot hand it over (gVisor, a remote
engine, a sandbox made without the mount) says so, and the stream is used.
"""

from __future__ import annotations

import itertools
import json
import socket
import struct
import threading
import time
from typing import TYPE_CHECKING, Any

from ..errors import SandboxError
from . import protocol as proto

if TYPE_CHECKING:
    from .channel import Channel
    from .handoff import Listener

#: Seconds an open request may take before the connection is given up.
OPEN_TIMEOUT = 30.0
_ACK_AT = proto.WINDOW // 4
#: Bytes one copy of a handed-over connection moves at most (per direction).
RELAY_BUFFER = 256 * 1024
#: Seconds a connection waits for the socket the server said it handed over.
HANDOFF_TIMEOUT = 5.0
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


class StreamMux:
    """One per channel: stream ids, and the sandbox's stream frames routed to their connection."""

    def __init__(self, channel: "Channel", handoff: "Listener | None" = None) -> None:
        self.channel = channel
        #: Where the server can hand us its connected sockets (None: streams only).
        self.handoff = handoff
        #: Connections the server handed over so far, and those streamed on the channel
        #: (counts for doctor and tests: under the GIL, not worth a lock).
        self.handed_over = self.streamed = 0
        self.conns: dict[int, Connection] = {}
        self.lock = threading.Lock()
        self.ids = itertools.count(proto.STREAM_BASE)
        channel.start_demux(self.on_frame, self.on_broken)

    def on_frame(self, kind: int, sid: int, payload: "bytes | memoryview") -> None:
        conn = self.conns.get(sid)
        if conn is not None:
            conn.on_frame(kind, payload)

    def on_broken(self) -> None:
        for conn in list(self.conns.values()):
            conn.abort(notify=False)

    def add(self, conn: "Connection") -> int:
        with self.lock:
            sid = next(self.ids)
            self.conns[sid] = conn
        return sid

    def remove(self, sid: int) -> None:
        with self.lock:
            self.conns.pop(sid, None)

    def connection(self, sock: socket.socket, port: int) -> "Connection":
        """A client's connection to `port` inside, opened (its run() pumps it). Raises SandboxError (the sandbox is gone)."""
        return Connection(self, sock, port)

    def probe(self, port: int, timeout: float = OPEN_TIMEOUT) -> dict:
        """Open a stream to `port` inside and reset it: {"ok": True} when something listens,
        else the server's {"error", "errno"}."""
        conn = Connection(self, None, port)
        try:
            return conn.wait_open(timeout)
        finally:
            conn.abort()


class Connection:
    """One forwarded connection: the client's socket (None for a probe) and its stream."""

    def __init__(self, mux: StreamMux, sock: socket.socket | None, port: int) -> None:
        self.mux, self.sock = mux, sock
        self.cond = threading.Condition()
        self.write_lock = threading.Lock()  # whoever writes to the client holds it: bytes stay in order
        self.opened: dict | None = None
        self.credit = proto.WINDOW  # bytes we may still send the server
        self.outbuf = bytearray()  # the server's bytes not yet written to the client
        self.unacked = 0  # written to the client, not yet credited back
        self.eof_from_server = self.eof_to_server = self.writer_done = self.closed = False
        self.peer: socket.socket | None = None  # the server's socket to the port, when handed over
        self.halves = 0  # directions of a handed-over connection that have ended
        self.sid = mux.add(self)
        self.token = None
        request = b"%d" % port
        if sock is not None and mux.handoff is not None:
            self.token = mux.handoff.expect(self._handed)
            request += b" %s %s" % (mux.handoff.name.encode(), self.token.hex().encode())
        try:
            mux.channel.send(proto.PORT_OPEN, self.sid, request)
        except SandboxError:
            self._forget_token()
            mux.remove(self.sid)
            raise

    # -- called by the channel's demux thread: never blocks, keeps no view of payload ----
    def on_frame(self, kind: int, payload: "bytes | memoryview") -> None:
        if kind == proto.PORT_OPENED:
            with self.cond:
                try:
                    self.opened = json.loads(bytes(payload))
                except ValueError:
                    self.opened = {"error": "malformed answer"}
                self.cond.notify_all()
        elif kind == proto.PORT_DATA:
            self._deliver(payload)
        elif kind == proto.PORT_EOF:
            if payload:
                self.abort(notify=False)
                return
            with self.cond:
                self.eof_from_server = True
                self.cond.notify_all()
        elif kind == proto.PORT_ACK and len(payload) == 4:
            with self.cond:
                self.credit += int.from_bytes(payload, "big")
                self.cond.notify_all()

    def _deliver(self, data: "bytes | memoryview") -> None:
        sock = self.sock
        if sock is None or self.closed:
            return
        sent = 0
        # The fast path (a small answer): straight to the client when nothing is queued.
        if self.write_lock.acquire(blocking=False):
            try:
                if not self.outbuf:
                    try:
                        sent = sock.send(data, socket.MSG_DONTWAIT)
                    except OSError:  # full, or the client is gone: the writer thread finds out which
                        sent = 0
            finally:
                self.write_lock.release()
        with self.cond:
            if sent < len(data):
                self.outbuf += data[sent:]
            self.unacked += sent
            if self.outbuf or self.unacked >= _ACK_AT:
                self.cond.notify_all()

    # -- called by the handoff's thread ---------------------------------------------
    def _handed(self, peer: socket.socket) -> None:
        with self.cond:
            if self.closed:
                peer.close()
                return
            self.peer = peer
            self.cond.notify_all()

    def _forget_token(self) -> None:
        if self.token is not None and self.mux.handoff is not None:
            self.mux.handoff.cancel(self.token)

    # -- the connection's own threads -----------------------------------------------
    def wait_open(self, timeout: float) -> dict:
        with self.cond:
            self.cond.wait_for(lambda: self.opened is not None or self.closed, timeout)
            if self.opened is None:
                return {"error": "the sandbox did not answer" if not self.closed else "closed"}
            return self.opened

    def run(self) -> None:
        """Pump the client's bytes to the sandbox (this thread) and start the writer."""
        assert self.sock is not None
        answer = self.wait_open(OPEN_TIMEOUT)
        if not answer.get("ok"):
            self.abort()  # nobody listens inside: the client sees its connection reset at once
            return
        if answer.get("direct"):
            self._relay()
            return
        self._forget_token()
        self.mux.streamed += 1
        threading.Thread(target=self._write_loop, name=f"pygent-fwd-w-{self.sid}", daemon=True).start()
        send = self.mux.channel.send
        try:
            while True:
                with self.cond:
                    self.cond.wait_for(lambda: self.credit > 0 or self.closed)
                    if self.closed:
                        return
                    room = min(self.credit, proto.CHUNK)
                data = self.sock.recv(room)
                if not data and self.closed:
                    return
                if not data:
                    with self.cond:
                        self.eof_to_server = True
                    send(proto.PORT_END, self.sid)
                    self._maybe_done()
                    return
                with self.cond:
                    self.credit -= len(data)
                send(proto.PORT_BYTES, self.sid, data)
        except (OSError, SandboxError):  # the client reset, the listener closed, or the channel broke (ChannelBroken)
            self.abort()

    def _relay(self) -> None:
        """A handed-over connection: the client and the server's socket, copied both ways."""
        with self.cond:
            self.cond.wait_for(lambda: self.peer is not None or self.closed, HANDOFF_TIMEOUT)
            peer = self.peer
        if peer is None or self.closed:
            self._forget_token()
            self.abort()
            return
        assert self.sock is not None
        self.mux.handed_over += 1
        threading.Thread(target=self._copy, args=(peer, self.sock), name=f"pygent-fwd-d-{self.sid}", daemon=True).start()
        self._copy(self.sock, peer)

    def _copy(self, src: socket.socket, dst: socket.socket) -> None:
        """One direction until its end (passed on as a half-close) or an error (both reset)."""
        if not copy_half(src, dst):
            self.abort(notify=False)
            return
        with self.cond:
            self.halves += 1
            if self.halves < 2 or self.closed:
                return
            self.closed = True
            self.cond.notify_all()
        self.mux.remove(self.sid)
        dst.close()
        src.close()

    def _write_loop(self) -> None:
        assert self.sock is not None
        try:
            while True:
                with self.write_lock:
                    with self.cond:
                        self.cond.wait_for(
                            lambda: self.outbuf or self.unacked >= _ACK_AT or self.eof_from_server or self.closed)
                        if self.closed:
                            return
                        chunk, self.outbuf = self.outbuf, bytearray()  # taken whole: no copy
                    if chunk:
                        self.sock.sendall(chunk)
                with self.cond:
                    self.unacked += len(chunk)
                    ack = self.unacked if (self.unacked >= _ACK_AT or not self.outbuf) else 0
                    self.unacked -= ack
                    finished = self.eof_from_server and not self.outbuf
                if ack:
                    self.mux.channel.send(proto.PORT_CREDIT, self.sid, ack.to_bytes(4, "big"))
                if finished:
                    try:
                        self.sock.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    self._maybe_done(writer_done=True)
                    return
        except (OSError, SandboxError):  # as the read loop: a channel closed under a credit is an abort
            self.abort()

    def _maybe_done(self, writer_done: bool = False) -> None:
        with self.cond:
            if writer_done:
                self.writer_done = True
            if not (self.eof_to_server and self.writer_done) or self.closed:
                return
            self.closed = True
            self.cond.notify_all()
        self.mux.remove(self.sid)
        if self.sock is not None:
            self.sock.close()

    def abort(self, notify: bool = True) -> None:
        """Reset both ends: the client's socket (RST) and, unless it started there, the stream."""
        with self.cond:
            if self.closed:
                return
            self.closed = True
            self.cond.notify_all()
        self.mux.remove(self.sid)
        self._forget_token()
        if notify and self.peer is None:
            try:
                self.mux.channel.send(proto.PORT_END, self.sid, b"x")
            except SandboxError:
                pass
        for sock in (self.sock, self.peer):
            if sock is not None:
                reset(sock)


def copy_half(src: socket.socket, dst: socket.socket) -> bool:
    """Copy src to dst until src ends, passed on as a half-close (True), or an error (False:
    the caller resets both). One RELAY_BUFFER, reused."""
    buf = bytearray(RELAY_BUFFER)
    view = memoryview(buf)
    try:
        while True:
            n = src.recv_into(buf)
            if not n:
                break
            dst.sendall(view[:n])
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        return False
    return True


def reset(sock: socket.socket) -> None:
    """Close with a reset, not an orderly end (linger 0); SHUT_RD first wakes a thread in recv()."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass
    sock.close()


class PortForward:
    """An exposed port: a host listener (loopback unless asked) whose connections go to
    127.0.0.1:`port` inside the sandbox. close() stops it and resets its connections.

    `mux` carries them: anything with connection(sock, port) (an object with run(), abort(),
    closed and sid; raises SandboxError when the sandbox is gone) and probe(port, timeout).
    A StreamMux here; on a Ray node's sandbox, tunnels to its node agent (ray/ports.py)."""

    def __init__(self, mux: "StreamMux | Any", port: int, host_port: int = 0, bind: str = "127.0.0.1") -> None:
        self.mux, self.port, self.bind = mux, port, bind
        family = socket.AF_INET6 if ":" in bind else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.listener.bind((bind, host_port))
        except OSError as exc:
            self.listener.close()
            raise SandboxError(f"cannot listen on {bind}:{host_port} for the sandbox's port {port}: "
                               f"{exc.strerror or exc}; pick another host port (PORT:HOSTPORT) or leave it out") from None
        self.listener.listen(128)
        self.host_port = self.listener.getsockname()[1]
        host = f"[{bind}]" if ":" in bind else bind
        self.url = f"http://{host}:{self.host_port}"
        self.conns: set[Connection] = set()
        self.closed = False
        threading.Thread(target=self._accept_loop, name=f"pygent-fwd-{port}", daemon=True).start()

    def _accept_loop(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return  # closed
            if self.closed:
                sock.close()
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                conn = self.mux.connection(sock, self.port)
            except SandboxError:  # the sandbox is gone
                sock.close()
                continue
            self.conns = {c for c in self.conns if not c.closed} | {conn}
            threading.Thread(target=conn.run, name=f"pygent-fwd-r-{conn.sid}", daemon=True).start()

    def wait_answering(self, timeout: float, interval: float = 0.1) -> bool:
        """Poll until something inside accepts connections on the port (True), or timeout."""
        end = time.monotonic() + timeout
        while not self.closed:
            if self.mux.probe(self.port, max(0.1, min(OPEN_TIMEOUT, end - time.monotonic()))).get("ok"):
                return True
            if time.monotonic() >= end:
                return False
            time.sleep(interval)
        return False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() of our thread
        except OSError:
            pass
        self.listener.close()
        for conn in list(self.conns):
            conn.abort()


def check_expose(port: int, host_port: int, bind: str) -> None:
    """Arguments of expose(), checked. Raises SandboxError."""
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise SandboxError(f"port must be an integer from 1 to 65535, not {port!r}")
    if not isinstance(host_port, int) or isinstance(host_port, bool) or not 0 <= host_port < 65536:
        raise SandboxError(f"host_port must be an integer from 0 (any free port) to 65535, not {host_port!r}")
    if not isinstance(bind, str) or not bind:
        raise SandboxError("bind must be an address such as 127.0.0.1")


def is_loopback(bind: str) -> bool:
    return bind in _LOOPBACK or bind.startswith("127.")
