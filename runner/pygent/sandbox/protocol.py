"""The in-container command protocol: frames, version, request/report shapes, the output cap.

Why one module: the host (channel.py) and the in-container server (server.py)
must agree byte for byte; both import this file and nothing else defines a
frame. Stdlib only and free of side effects at import: it is copied beside the
server into the read-only tooling volume every sandbox mounts, and imported on
the host by the exec fast path, which must stay cheap (no json, no enum).

Frames, both directions: struct ">BII" (type, command id, payload length) + payload.
  host -> server: R run (marshal RunSpec, version 4), I stdin bytes, E stdin EOF, K kill,
                  L look at a directory (path bytes),
                  P an operation on a background command (marshal ProcessOp),
                  W write a file (marshal WriteSpec), Y its bytes (CHUNK at most a frame), C its end,
                  G get a file (marshal GetSpec),
                  S snapshot trees (marshal SnapSpec): answered by Y frames of the entry stream, then A
                  T restore into a fresh sandbox (marshal RestoreSpec), Y frames of the entry stream follow,
                    an empty Y ends it; answered by A
                  V open a stream to a port on the sandbox's loopback (the port, ASCII digits; the id is the stream's;
                    optionally then " NAME TOKENHEX": hand the connected socket to the host's socket NAME in
                    HANDOFF_DIR with that token, and answer v {"ok", "direct"}: see handoff.py),
                  J a stream's bytes, Z its end (empty: half-close; b"x": reset), M credit (">I" bytes consumed)
  server -> host: H hello (JSON Hello), O stdout bytes, X stderr bytes, D done (JSON Done),
                  F failed to start / malformed (JSON {"error"}), N the directory's stat and whether it is empty (JSON),
                  B a background command started (JSON {"handle", "pid"}), Q the answer to a P (JSON),
                  o / x stdout / stderr as it arrives, for displays, while the capped result is kept (run with "live"),
                  Y a got file's bytes (CHUNK at most a frame), A a file operation's answer (JSON FileAnswer),
                  v a stream's open answer (JSON {"ok"} or {"error", "errno"}), j / z / m as J / Z / M

Streams (issue 25, `Sandbox.expose`): each connection to an exposed port is a
stream on this same channel, so a sandbox needs no network interface. Stream
ids live in their own range (STREAM_BASE and up). Each side sends at most
WINDOW bytes of J/j beyond what the other has credited back with M/m, so
neither side buffers more than WINDOW per stream.

File operations run in the server, i.e. as the sandbox user: the kernel applies
exactly the user's rights (no check on the host that a command could race).
"""

import struct

# The wire shapes as TypedDicts, for the host only: `typing` (and `re` with it) costs the
# in-container server ~10 ms of CPU at every sandbox start, and it imports this file as
# plain `protocol` (beside server.pyc in the tooling volume).
TypedDict = None
if __name__ != "protocol":
    from typing import Optional, TypedDict

HEADER = struct.Struct(">BII")
RUN, STDIN, STDIN_EOF, KILL, LOOK = b"R"[0], b"I"[0], b"E"[0], b"K"[0], b"L"[0]
HELLO, OUT, ERR, DONE, FAILED, LOOKED = b"H"[0], b"O"[0], b"X"[0], b"D"[0], b"F"[0], b"N"[0]
# shell state and background commands (issue 14)
PROC, PROC_REPLY, STARTED, LIVE_OUT, LIVE_ERR = b"P"[0], b"Q"[0], b"B"[0], b"o"[0], b"x"[0]
# files as the sandbox user (issue 13): Y carries file bytes both ways, A answers
WRITE, BYTES, CLOSE, GET, ANSWER = b"W"[0], b"Y"[0], b"C"[0], b"G"[0], b"A"[0]
# ports forwarded over the channel (issue 25): see "Streams" above
PORT_OPEN, PORT_BYTES, PORT_END, PORT_CREDIT = b"V"[0], b"J"[0], b"Z"[0], b"M"[0]
PORT_OPENED, PORT_DATA, PORT_EOF, PORT_ACK = b"v"[0], b"j"[0], b"z"[0], b"m"[0]
STREAM_BASE = 1 << 31
#: Where a sandbox on a local engine sees the host's handoff sockets (read-only: handoff.py).
HANDOFF_DIR = "/run/pygent"
WINDOW = 1 << 20
CHUNK = 65536
# snapshots, restore and pause (issue 24)
SNAPSHOT, RESTORE = b"S"[0], b"T"[0]
#: One entry of a snapshot's stream: kind (d dir, f file, l symlink, s shell state, c cwd),
#: mode, size of the data that follows the path, mtime in ns, path length; then path, data.
ENTRY = struct.Struct(">BIQQI")
MARKER_ENV = "PYGENT_CMD"
#: The fd of the pipe on which the egress relay reports refusals to the server (issue 25;
#: egress_proxy.NOTES_ENV is the same name: that file is stdlib-only and imports nothing of ours).
EGRESS_NOTES_ENV = "PYGENT_EGRESS_NOTES_FD"
#: The sandbox's process bound when the engine sets no pids limit (rootless on cgroup v1):
#: the server makes it its RLIMIT_NPROC before any command (docker/config.py sets it).
NPROC_ENV = "PYGENT_NPROC"
PROTOCOL = 8  # 2: run requests are marshal, not JSON; 3: L/N (look at a directory); 4: protocol.py, tooling volume;
# 5: shell state, background commands (P/Q/B), idle_timeout, live output (o/x);
# 6: W/Y/C/G/A file operations as the sandbox user, the command's script on an fd (not argv)
# 7: issue 24: S snapshot, T restore (+ Y frames), deadlines skip time frozen by a pause;
#    issue 25: V/J/Z/M and v/j/z/m, connections to the sandbox's ports as streams on the channel
# 8: V may ask for the connected socket to be handed to the host (HANDOFF_DIR)


def cut_marker(omitted):
    return ("\n[... %d bytes truncated ...]\n" % omitted).encode()


class HeadTail:
    """Keeps the first and last `cap // 2` bytes of a stream; memory never exceeds cap."""

    def __init__(self, cap):
        self.cap = cap
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, data):
        self.total += len(data)
        half = self.cap // 2
        room = half - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data[-half:] if len(data) >= half else data
            if len(self.tail) > half:
                del self.tail[: len(self.tail) - half]

    @property
    def omitted(self):
        return self.total - len(self.head) - len(self.tail)

    def value(self):
        """The kept bytes, with a visible marker where the middle was cut."""
        if self.omitted:
            return bytes(self.head) + cut_marker(self.omitted) + bytes(self.tail)
        return bytes(self.head) + bytes(self.tail)


def frame(kind, cid, payload=b""):
    return HEADER.pack(kind, cid, len(payload)) + payload


_JSON_ESCAPES = {'"': '\\"', "\\": "\\\\"}


def to_json(obj):
    """JSON text of None/bool/int/float/str/list/dict, for the server's reports.

    Why not the json module: importing it (and re, enum) costs ~7 ms of CPU at
    every sandbox start, which is what bounds sandboxes per second. The host
    parses this with json.loads; the host -> server direction uses marshal.
    Everything outside printable ASCII is a \\u escape (lone surrogates too).
    """
    if obj is None or obj is True or obj is False:
        return "null" if obj is None else ("true" if obj else "false")
    if isinstance(obj, int):
        return str(int(obj))
    if isinstance(obj, float):
        return repr(obj) if obj - obj == 0 else "null"  # inf and nan are not JSON
    if isinstance(obj, str):
        return '"' + "".join(_JSON_ESCAPES.get(c) or (c if " " <= c < "\x7f" else _json_unicode(c)) for c in obj) + '"'
    if isinstance(obj, dict):
        return "{" + ",".join(to_json(str(k)) + ":" + to_json(v) for k, v in obj.items()) + "}"
    if isinstance(obj, (list, tuple)):
        return "[" + ",".join(to_json(v) for v in obj) + "]"
    raise TypeError("cannot report a %s" % type(obj).__name__)


def _json_unicode(c):
    n = ord(c)
    if n < 0x10000:
        return "\\u%04x" % n
    n -= 0x10000
    return "\\u%04x\\u%04x" % (0xD800 + (n >> 10), 0xDC00 + (n & 0x3FF))




if TypedDict is not None:

    class RunSpec(TypedDict, total=False):
        """One command, as the host asks for it (marshal-encoded R frame)."""

        cmd: str
        timeout: Optional[float]  # None: no limit
        env: dict
        cwd: Optional[str]
        max_output: int
        stdin: bool  # I/E frames follow
        stream: bool  # O/X frames as output comes, else once at the end (capped)
        state: str  # the key of the shell state to load before and save after (absent: a plain bash -c)
        state_max: int  # the state's size cap in bytes
        background: bool  # answer B at once; output goes to a ring read with P {"op": "output"}
        idle_timeout: float  # no output for this long: answer D with "handle", keep it running
        live: bool  # o/x frames as output comes (at most 1 MiB), the capped result at the end too

    class ProcessOp(TypedDict, total=False):
        """An operation on a background command (marshal-encoded P frame)."""

        op: str  # "output" | "status" | "input" | "kill" | "list"
        handle: str
        since: int  # output: the offset to read from
        max: int  # output: at most this many bytes (head and tail)
        data: bytes  # input
        eof: bool  # input: close its stdin after data

    class WriteSpec(TypedDict, total=False):
        """A file to create or replace (W frame); Y frames carry its bytes, C ends it."""

        path: str  # absolute
        mode: int  # for a new file (existing files keep theirs)
        kind: str  # "file" (default), "dir" (makedirs), "symlink" (target in `target`)
        target: str

    class GetSpec(TypedDict):
        """A regular file to read (G frame), refused when over `max` bytes."""

        path: str
        max: int

    class FileAnswer(TypedDict, total=False):
        """The end of a file operation (A frame): `size` on success, else `errno` + `error`."""

        size: int
        created: bool
        errno: int
        error: str
        too_large: int  # a get over its limit: the file's size

    class SnapSpec(TypedDict, total=False):
        """Trees to snapshot (S frame): absolute paths, a byte limit, contents or only the listing."""

        paths: list
        max: int
        contents: bool  # False: entries without file data (size is the file's), for changes()
        files: list  # only these regular files (under paths), with their data: what changes() compares

    class RestoreSpec(TypedDict, total=False):
        """A restore (T frame): the roots the stream's entries must lie under."""

        paths: list

    class Hello(TypedDict):
        """The server's first frame."""

        protocol: int
        pid: int
        cwd: str

    class Done(TypedDict):
        """A command's end (D frame)."""

        exit_code: int
        timed_out: bool
        duration: float
        cwd: str
        stdout_truncated: int
        stderr_truncated: int
        oom_killed: bool
        state: Optional[str]  # "saved", "kept: why" or "too_large: why"; None without state
        handle: str  # idle_timeout moved it to the background (exit_code is -1)
        # issue 26, what the command cost (absent when it could not start or went to the background):
        cpu_user: float  # seconds of user CPU of the command's process tree (wait4 rusage)
        cpu_sys: float  # seconds of system CPU, same tree
        max_rss: int  # bytes: the peak resident memory of the command's process tree (sampled sum, or its largest process)
        # issue 25, absent when none: the egress proxy's refusals while the command ran, one per
        # host:port, at most 5: {"host", "port", "reason" (not_allowed | private | raw_ip | unresolvable),
        # "count", and "allowed" + "more" (not_allowed), "addresses" (private)}; the last may carry
        # "others": refusals of further hosts beyond the 5
        egress_refused: list
