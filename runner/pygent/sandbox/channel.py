"""Host side of the command server protocol, over any byte stream (a `Transport`).

The backend supplies the transport (Docker: the attach stream, demultiplexed by
docker/stream.py); inside it the server speaks the frames defined in
`protocol.py`. Reading is done by the thread that waits for a
command, so a sandbox costs no thread and almost no memory while idle.
"""

from __future__ import annotations

import contextlib
import json
import marshal
import math
import os
import queue
import socket
import struct
import threading
import time
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Protocol

from ..errors import SandboxError
from . import protocol as proto
from .result import ExecResult

if TYPE_CHECKING:
    from .handoff import Listener

#: Seconds past a command's own timeout before we decide the sandbox (or engine) is gone.
GRACE = 15.0
#: Seconds a file operation may take before we decide the sandbox (or engine) is gone.
FILE_TIMEOUT = 300.0
#: Seconds a restore waits for the socket the server said it handed over (handoff.py).
HANDOFF_WAIT = 5.0
#: Payloads from this size on are written beside their header, not joined to it (a copy less).
_JOIN_BELOW = 16384


def command_spec(
    cmd: str,
    timeout: float,
    env: dict[str, str] | None,
    workdir: str | None,
    max_output: int,
    *,
    shell_state: bool = False,
    idle_timeout: float | None = None,
) -> dict:
    """The server's run request for one command, checked (raises SandboxError). timeout: math.inf = none."""
    if not isinstance(cmd, str) or "\0" in cmd:
        raise SandboxError("the command must be a string without NUL bytes")
    timeout = float(timeout)
    if not timeout > 0:  # also refuses NaN
        raise SandboxError("timeout must be positive (math.inf for no limit)")
    spec = {
        "cmd": cmd,
        "timeout": None if math.isinf(timeout) else timeout,
        "env": {str(k): str(v) for k, v in (env or {}).items()},
        "cwd": workdir,
        "max_output": max_output,
    }
    if shell_state:
        spec["state"] = STATE_KEY
    if idle_timeout is not None:
        if not float(idle_timeout) > 0 or math.isinf(float(idle_timeout)):
            raise SandboxError("idle_timeout must be a positive number of seconds")
        spec["idle_timeout"] = float(idle_timeout)
    return spec


#: The one shell state of a sandbox (the server keys states by name; one is all the API needs).
STATE_KEY = "default"


def _call_quietly(func: Callable[[str, bytes], None], stream: str, data: bytes) -> None:
    """A display's callback: its failure must not lose the command's result."""
    try:
        func(stream, data)
    except Exception:
        pass


class ChannelBroken(SandboxError):
    """The attach stream closed or stopped answering: the container or the engine is gone."""


class Transport(Protocol):
    """A byte stream to one command server: Docker's attach stream today, a Kubernetes
    attach websocket later. recv_into() appends the server's next stdout bytes to a
    buffer (its stderr goes to `diagnostics`, kept small) and raises ChannelBroken on
    EOF or past the deadline; send_parts() writes a frame's header and payload."""

    diagnostics: bytearray

    def recv_into(self, out: bytearray, deadline: float | None) -> None: ...

    def sendall(self, data: bytes) -> None: ...

    def send_parts(self, head: bytes, payload: "bytes | memoryview") -> None: ...

    def close(self) -> None: ...


class Channel:
    """Runs commands through the in-container server. One command at a time per channel."""

    def __init__(self, transport: Transport) -> None:
        self.stream = transport
        self.inbuf = bytearray()
        self.lock = threading.Lock()
        self.send_lock = threading.Lock()
        self.next_id = 1
        self.hello: dict | None = None
        self.broken = False
        #: Seconds the sandbox spent paused (issue 24): a command's host-side wait is longer by it.
        self.paused_total = 0.0
        self._paused_seen = 0.0
        #: Set once ports are forwarded (start_demux): one thread then reads the stream,
        #: hands stream frames to the forwarder and everything else to this queue.
        self.frames: "queue.SimpleQueue[tuple[int, int, bytes] | None] | None" = None
        self.on_stream_frame: Callable[[int, int, bytes], None] | None = None
        self.on_broken: Callable[[], None] | None = None

    # -- frames -------------------------------------------------------------
    def send(self, kind: int, cid: int, payload: "bytes | memoryview" = b"") -> None:
        with self.send_lock:
            try:
                if len(payload) < _JOIN_BELOW:  # small: one buffer, one write
                    self.stream.sendall(proto.frame(kind, cid, payload))
                else:  # bulk (uploads, restores, a port's bytes): not copied into a joined frame
                    self.stream.send_parts(proto.HEADER.pack(kind, cid, len(payload)), payload)
            except OSError as exc:
                self.broken = True
                raise ChannelBroken(f"cannot write to the sandbox: {exc}") from None

    def read_frame(self, deadline: float | None) -> tuple[int, int, bytes]:
        frames = self.frames
        if frames is None:
            return self._read_stream(deadline)
        try:
            item = frames.get(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            self.broken = True
            raise ChannelBroken("the sandbox stopped answering (engine down or container killed)") from None
        if item is None:
            frames.put(None)  # every later reader sees the end too
            self.broken = True
            raise ChannelBroken("the sandbox's stream closed")
        return item

    def start_demux(self, on_stream_frame: Callable[[int, int, bytes], None], on_broken: Callable[[], None]) -> None:
        """From now on one thread reads the stream (forwarded ports need their frames while
        a command runs, or while nothing does). Waits for a running command to end: the
        reader of a command owns the stream until then. Raises ChannelBroken."""
        with self.lock:
            if self.broken:
                raise ChannelBroken("the sandbox's stream is broken; create a new sandbox")
            if self.frames is not None:
                return
            self.on_stream_frame, self.on_broken = on_stream_frame, on_broken
            self.frames = queue.SimpleQueue()
            threading.Thread(target=self._demux, name="pygent-channel-reader", daemon=True).start()

    def _demux(self) -> None:
        """Every frame as it comes. A stream frame's payload is lent to its handler as a view
        of the buffer (valid only during the call: the handler copies what it keeps), so a
        forwarded port's bytes go from the engine's socket to the client's with one copy."""
        frames, handle = self.frames, self.on_stream_frame
        assert frames is not None and handle is not None
        inbuf, size = self.inbuf, proto.HEADER.size
        try:
            while True:
                while len(inbuf) >= size:
                    kind, cid, length = proto.HEADER.unpack_from(inbuf)
                    end = size + length
                    if len(inbuf) < end:
                        break
                    with memoryview(inbuf) as view, view[size:end] as payload:
                        if cid >= proto.STREAM_BASE:
                            handle(kind, cid, payload)
                        else:
                            frames.put((kind, cid, bytes(payload)))
                    del inbuf[:end]
                self._fill(None)
        except Exception:
            self.broken = True
            frames.put(None)
            if self.on_broken is not None:
                self.on_broken()

    def _read_stream(self, deadline: float | None) -> tuple[int, int, bytes]:
        size = proto.HEADER.size
        while True:
            if len(self.inbuf) >= size:
                kind, cid, length = proto.HEADER.unpack_from(self.inbuf)
                if len(self.inbuf) >= size + length:
                    with memoryview(self.inbuf) as view:  # one copy, not a slice and then bytes()
                        payload = bytes(view[size : size + length])
                    del self.inbuf[: size + length]
                    return kind, cid, payload
            deadline = self._fill(deadline)

    def _fill(self, deadline: float | None) -> float | None:
        """More of the server's bytes into inbuf; the deadline, moved on by a pause (issue 24).
        Raises ChannelBroken."""
        while True:
            try:
                self.stream.recv_into(self.inbuf, deadline)
                return deadline
            except ChannelBroken:
                if deadline is not None and self.paused_total > self._paused_seen and time.monotonic() >= deadline:
                    # Frozen time is not the command's: wait longer by the pause.
                    deadline += self.paused_total - self._paused_seen
                    self._paused_seen = self.paused_total
                    continue
                self.broken = True
                raise

    def wait_hello(self, timeout: float) -> dict:
        kind, _, payload = self.read_frame(time.monotonic() + timeout)
        if kind != proto.HELLO:
            raise ChannelBroken(f"unexpected first frame {kind!r} from the sandbox server")
        self.hello = json.loads(payload)
        if not isinstance(self.hello, dict) or self.hello.get("protocol") != proto.PROTOCOL:
            raise ChannelBroken(
                f"the image's command server speaks protocol {self.hello.get('protocol') if isinstance(self.hello, dict) else '?'}, "
                f"this pygent speaks {proto.PROTOCOL}: rebuild the image (pygent-runner images build)"
            )
        return self.hello

    def peer_closed(self) -> bool:
        """True when the stream is known dead, or its transport saw the other end close it.

        Why: a sandbox waiting in the pool has nobody reading its stream; when the container
        is removed, killed or the engine restarts, the engine closes the connection, and a
        transport that can tell without consuming anything (Docker: a poll and MSG_PEEK,
        ~2 us) says so. A transport without `peer_closed` is taken to be open.
        """
        if self.broken:
            return True
        if self.lock.locked() or self.frames is not None:
            return False  # a command or the demux thread is reading the stream: it will see the end itself
        probe = getattr(self.stream, "peer_closed", None)
        return bool(probe()) if probe is not None else False

    # -- commands -----------------------------------------------------------
    def run(
        self,
        spec: dict,
        stdin: bytes | Iterable[bytes] | None,
        on_stdout: Callable[[bytes], None] | None,
        on_stderr: Callable[[bytes], None] | None,
        on_chunk: Callable[[str, bytes], None] | None = None,
    ) -> ExecResult:
        """Run one command to its end (or to its idle_timeout). on_chunk(stream, data) sees
        output as it arrives while the result still holds the capped output."""
        if self.broken:
            raise ChannelBroken("the sandbox's stream is broken; create a new sandbox")
        with self.lock:
            cid = self.next_id
            self.next_id += 1
            spec = dict(spec, stdin=stdin is not None, stream=on_stdout is not None or on_stderr is not None)
            if on_chunk is not None and not spec["stream"]:
                spec["live"] = True
            self.send(proto.RUN, cid, marshal.dumps(spec, 4))
            feeder = self._feed_stdin(cid, stdin) if stdin is not None else None
            timeout = spec.get("timeout")
            deadline = None if timeout is None else time.monotonic() + float(timeout) + GRACE
            self._paused_seen = self.paused_total
            out, err = bytearray(), bytearray()
            try:
                while True:
                    kind, fcid, payload = self.read_frame(deadline)
                    if fcid != cid:
                        continue  # a late frame of an earlier, abandoned command
                    if kind in (proto.LIVE_OUT, proto.LIVE_ERR):
                        if on_chunk is not None:
                            _call_quietly(on_chunk, "stdout" if kind == proto.LIVE_OUT else "stderr", payload)
                    elif kind == proto.OUT:
                        on_stdout(payload) if on_stdout and spec["stream"] else out.extend(payload)
                    elif kind == proto.ERR:
                        on_stderr(payload) if on_stderr and spec["stream"] else err.extend(payload)
                    elif kind == proto.DONE:
                        done = json.loads(payload)
                        return ExecResult(
                            exit_code=done["exit_code"],
                            stdout=bytes(out),
                            stderr=bytes(err),
                            duration=done["duration"],
                            timed_out=done["timed_out"],
                            stdout_truncated=done["stdout_truncated"],
                            stderr_truncated=done["stderr_truncated"],
                            oom_killed=done.get("oom_killed", False),
                            cwd=done.get("cwd"),
                            handle=done.get("handle"),
                            state=done.get("state"),
                            cpu_user=done.get("cpu_user"),
                            cpu_sys=done.get("cpu_sys"),
                            max_rss=done.get("max_rss"),
                            egress_refused=done.get("egress_refused") or [],
                        )
                    elif kind == proto.FAILED:  # a malformed request (a command that cannot start is a result)
                        raise SandboxError(f"the sandbox's server refused the command: {json.loads(payload)['error']}")
            except BaseException:
                # Interrupted (Ctrl-C) or broken: make sure nothing keeps running inside.
                if not self.broken:
                    try:
                        self.send(proto.KILL, cid)
                    except ChannelBroken:
                        pass
                raise
            finally:
                if feeder is not None:
                    # An iterable (host stdin) may never end: the command has, so don't wait on it.
                    feeder.join(timeout=0.05)

    def start_background(self, spec: dict, timeout: float = 30.0) -> dict:
        """Start a command that runs on after this returns: {"handle", "pid"}. Raises SandboxError."""
        payload = marshal.dumps(dict(spec, background=True, stdin=True, stream=False), 4)
        kind, answer = self._ask(proto.RUN, payload, (proto.STARTED, proto.FAILED), timeout)
        if kind == proto.FAILED:
            raise SandboxError(f"could not start the command: {answer['error']}")
        return answer

    def process_op(self, op: dict, timeout: float = 30.0) -> dict:
        """One operation on a background command (protocol.ProcessOp); the server's JSON answer."""
        return self._ask(proto.PROC, marshal.dumps(op, 4), (proto.PROC_REPLY,), timeout)[1]

    def look(self, path: str, timeout: float = 30.0) -> dict:
        """The server's look at a directory: {"empty", "mode", "uid", "gid", "mtime"} or {"error"}."""
        return self._ask(proto.LOOK, os.fsencode(path), (proto.LOOKED,), timeout)[1]

    def _ask(self, kind: int, payload: bytes, answers: tuple[int, ...], timeout: float) -> tuple[int, dict]:
        """One request frame and its JSON answer (the first frame of one of `answers` kinds for it)."""
        if self.broken:
            raise ChannelBroken("the sandbox's stream is broken; create a new sandbox")
        with self.lock:
            cid = self.next_id
            self.next_id += 1
            self.send(kind, cid, payload)
            deadline = time.monotonic() + timeout
            while True:
                got, fcid, data = self.read_frame(deadline)
                if fcid == cid and got in answers:
                    return got, json.loads(data)

    @contextlib.contextmanager
    def _request(self) -> Iterator[int]:
        """One request's id, holding the channel until its answer is read."""
        if self.broken:
            raise ChannelBroken("the sandbox's stream is broken; create a new sandbox")
        with self.lock:
            cid = self.next_id
            self.next_id += 1
            yield cid

    # -- files (as the sandbox user, see server.FileOps) ----------------------
    def put_file(self, spec: dict, chunks: Iterable[bytes], timeout: float = FILE_TIMEOUT) -> dict:
        """Create or replace a file (or a directory / symlink, spec["kind"]) inside, chunk
        by chunk; the server's answer: {"size", "created"} or {"errno", "error"}."""
        with self._request() as cid:
            self.send(proto.WRITE, cid, marshal.dumps(spec, 4))
            for chunk in chunks:
                with memoryview(chunk) as view:
                    for i in range(0, len(view), proto.CHUNK):
                        self.send(proto.BYTES, cid, view[i : i + proto.CHUNK])
            self.send(proto.CLOSE, cid)
            return self._answer(cid, None, time.monotonic() + timeout)

    def get_file(self, path: str, max_bytes: int, on_chunk: Callable[[bytes], None], timeout: float = FILE_TIMEOUT) -> dict:
        """Read a regular file inside, its bytes to on_chunk as they come; the server's answer:
        {"size"} or {"errno", "error"[, "too_large"]} (then on_chunk may have had a part)."""
        with self._request() as cid:
            self.send(proto.GET, cid, marshal.dumps({"path": path, "max": int(max_bytes)}, 4))
            return self._answer(cid, on_chunk, time.monotonic() + timeout)

    def _answer(self, cid: int, on_chunk: Callable[[bytes], None] | None, deadline: float) -> dict:
        while True:
            kind, fcid, payload = self.read_frame(deadline)
            if fcid != cid:
                continue  # a late frame of an earlier, abandoned command
            if kind == proto.BYTES and on_chunk is not None:
                on_chunk(payload)
            elif kind == proto.ANSWER:
                return json.loads(payload)
            elif kind == proto.FAILED:
                raise SandboxError(f"the sandbox's server refused the file request: {json.loads(payload)['error']}")

    # -- snapshots and pause (issue 24, see server.snapshot / server.Restore) ------
    def snapshot(self, spec: dict, on_chunk: Callable[[bytes], None], timeout: float = FILE_TIMEOUT) -> dict:
        """Stream the entries of spec["paths"] to on_chunk; the server's answer
        ({"entries", "size", "skipped"...} or {"errno", "error"[, "too_large"]})."""
        with self._request() as cid:
            self.send(proto.SNAPSHOT, cid, marshal.dumps(spec, 4))
            return self._answer(cid, on_chunk, time.monotonic() + timeout)

    def restore(self, spec: dict, stream: Iterable[bytes], timeout: float = FILE_TIMEOUT,
                handoff: "Listener | None" = None) -> dict:
        """Send an entry stream to restore (T, then Y frames, an empty Y ends it); the answer.

        handoff: this process's handoff listener (handoff.py), when the sandbox mounts its
        directory. The server is then asked for a socket of its own to take the stream on,
        off the attach stream (whose engine copy costs ~0.3 s of CPU per 100 MB here); it
        first answers which way the stream goes ({"via": "socket" | "stream"}). The answer
        returned says which it was ("via": "socket" or "channel").
        Raises: ChannelBroken, SandboxError (the socket it said it handed over never came).
        """
        deadline = time.monotonic() + timeout
        with self._request() as cid:
            handed: list[socket.socket] = []
            arrived = threading.Event()
            token = None
            if handoff is not None:
                token = handoff.expect(lambda sock: (handed.append(sock), arrived.set()))
                spec = dict(spec, handoff=[handoff.name, token.hex()])
            try:
                self.send(proto.RESTORE, cid, marshal.dumps(spec, 4))
                via = "channel"
                if token is not None and self._answer(cid, None, deadline).get("via") == "socket":
                    via = "socket"
                    if not arrived.wait(HANDOFF_WAIT):
                        raise SandboxError("the sandbox's server said it handed over a socket for the restore, "
                                           "and none came: retry, or report it with the engine's name")
                    with handed[0] as sock:
                        for chunk in stream:
                            sock.sendall(chunk)
                        sock.shutdown(socket.SHUT_WR)
                else:
                    for chunk in stream:
                        with memoryview(chunk) as view:
                            for i in range(0, len(view), 1 << 20):
                                self.send(proto.BYTES, cid, view[i : i + (1 << 20)])
                    self.send(proto.BYTES, cid, b"")
                return dict(self._answer(cid, None, deadline), via=via)
            except OSError as exc:  # the socket: the server went away under the restore
                raise ChannelBroken(f"the restore's stream broke: {exc}") from None
            finally:
                if token is not None and handoff is not None:
                    handoff.cancel(token)
                    for sock in handed:
                        sock.close()

    def resumed(self, paused_for: float) -> None:
        """The sandbox was paused for `paused_for` seconds: a command's wait here is longer by it
        (the server skips frozen time in its own deadlines, server.skip_frozen)."""
        self.paused_total += paused_for

    def _feed_stdin(self, cid: int, stdin: bytes | Iterable[bytes]) -> threading.Thread | None:
        if isinstance(stdin, (bytes, bytearray, memoryview)):
            data = bytes(stdin)
            for i in range(0, len(data), proto.CHUNK):
                self.send(proto.STDIN, cid, data[i : i + proto.CHUNK])
            self.send(proto.STDIN_EOF, cid)
            return None

        def pump() -> None:  # an iterable (e.g. host stdin) is pumped while output is read
            try:
                for chunk in stdin:
                    if chunk:
                        self.send(proto.STDIN, cid, bytes(chunk))
                self.send(proto.STDIN_EOF, cid)
            except (ChannelBroken, OSError, ValueError):
                pass

        thread = threading.Thread(target=pump, name=f"pygent-stdin-{cid}", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self.broken = True
        self.stream.close()
