"""A sandbox's state as a value: its workspace trees, its shell state, its image and policy.

Why in the server: the in-container server takes the trees as the sandbox user
(what the user cannot read is an error, not a silent hole) and restores them
inside a fresh sandbox, so every backend that speaks the protocol (Docker,
Podman, anything forwarding `Sandbox` calls) gets snapshots, forks and
`changes()` without engine features; no `docker commit`, no image layers.

The entry stream (protocol.ENTRY records) is parsed here with `struct` only:
it was made by a sandbox, so it is untrusted; every path is checked to be
normalised and under one of the snapshot's roots, parents before children.

A snapshot file: MAGIC, format version (>H), header length (>I), the JSON
header (image, policy, roots, sizes), the entry stream, and the SHA-256 of all
that. A truncated, tampered or foreign file is `SnapshotInvalid` at load, so a
restore never starts from it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import posixpath
import struct
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from ..errors import SnapshotInvalid
from . import protocol as proto

if TYPE_CHECKING:
    from .policy import SandboxPolicy

#: The snapshot file format this pygent writes and reads.
FORMAT = 1
MAGIC = b"PYGENT-SNAPSHOT\n"
_FIXED = struct.Struct(">HI")
#: Default limit of a snapshot's entry stream (file bytes + ~40 bytes and the path per entry):
#: the size of the default /workspace tmpfs, so a full default workspace fits and nothing bigger
#: sits in the owner's memory unasked. Pass max_bytes to snapshot() for more.
SNAPSHOT_MAX = 256 << 20
#: The trees a snapshot holds unless asked for others.
DEFAULT_PATHS = ("/workspace",)
#: Largest header a snapshot file may carry (the policy, a few names).
_HEADER_MAX = 1 << 20
#: Largest shell state / cwd / link target entry (the server's state cap is 256 KiB).
_SMALL_MAX = (256 << 10) + 4096

_KINDS = {b"d"[0]: "dir", b"f"[0]: "file", b"l"[0]: "symlink", b"s"[0]: "state", b"c"[0]: "cwd"}


@dataclasses.dataclass(frozen=True)
class Entry:
    """One directory, regular file or symlink of a snapshot (special files are never kept)."""

    kind: str  # "dir" | "file" | "symlink"
    path: str  # absolute, inside the sandbox
    mode: int
    size: int  # a file's bytes (0 for directories; the target's length for a symlink)
    mtime_ns: int
    offset: int  # where its data starts in the stream (files, symlinks)
    target: str = ""  # a symlink's target


def clean_roots(paths: Any) -> tuple[str, ...]:
    """Absolute, normalised, distinct, not nested in each other. Raises SnapshotInvalid."""
    roots = tuple(paths or DEFAULT_PATHS)
    if isinstance(paths, str) or not all(isinstance(p, str) for p in roots):
        raise SnapshotInvalid("snapshot paths must be a list of absolute paths")
    for p in roots:
        if not p.startswith("/") or posixpath.normpath(p) != p or p == "/" or "\0" in p:
            raise SnapshotInvalid(f"snapshot path {p!r} must be an absolute, normalised directory other than /")
    for a in roots:
        for b in roots:
            if a != b and b.startswith(a + "/"):
                raise SnapshotInvalid(f"snapshot paths {a} and {b} overlap: give only {a}")
    if len(set(roots)) != len(roots):
        raise SnapshotInvalid("snapshot paths repeat")
    return roots


def _plain_path(path: str) -> bool:
    """Absolute and normalised (what posixpath.normpath leaves as it is), without its cost
    per entry: no empty, '.' or '..' component, no trailing slash, no NUL."""
    return (path.startswith("/") and len(path) > 1 and not path.endswith(("/", "/.", "/.."))
            and "//" not in path and "/./" not in path and "/../" not in path and "\0" not in path)


def parse_stream(stream: bytes, roots: tuple[str, ...], contents: bool = True,
                 loose: bool = False) -> tuple[list[Entry], bytes | None, str]:
    """The entries, shell state and cwd of an entry stream, every record checked.
    loose=True: single files under the roots, without their directories (changes()).

    Raises SnapshotInvalid: a cut record, an unknown kind, a path outside the roots or
    not normalised, a child before its directory, a root that is not a directory.
    """
    entries: list[Entry] = []
    state: bytes | None = None
    cwd = ""
    dirs: set[str] = set()
    seen: set[str] = set()
    pos, end = 0, len(stream)
    view = memoryview(stream)
    while pos < end:
        if end - pos < proto.ENTRY.size:
            raise SnapshotInvalid("the snapshot's entries end inside a record (truncated)")
        kind_b, mode, size, mtime_ns, plen = proto.ENTRY.unpack_from(view, pos)
        pos += proto.ENTRY.size
        kind = _KINDS.get(kind_b)
        if kind is None:
            raise SnapshotInvalid(f"the snapshot holds an entry of unknown kind {kind_b!r}")
        data_size = size if (contents or kind != "file") else 0
        if plen > 4096 or end - pos < plen + data_size:
            raise SnapshotInvalid("the snapshot's entries end inside a record (truncated)")
        path = bytes(view[pos : pos + plen]).decode("utf-8", "surrogateescape")
        pos += plen
        offset = pos
        pos += data_size
        if kind in ("state", "cwd"):
            if size > _SMALL_MAX or plen:
                raise SnapshotInvalid(f"the snapshot's {kind} record is malformed")
            if kind == "state":
                state = bytes(view[offset:pos])
            else:
                cwd = bytes(view[offset:pos]).decode("utf-8", "surrogateescape")
            continue
        if not _plain_path(path) or path in seen:
            raise SnapshotInvalid(f"the snapshot holds a bad path {path!r}")
        if path in roots:
            if kind != "dir":
                raise SnapshotInvalid(f"the snapshot's root {path} is not a directory")
        elif loose:
            if not any(path.startswith(r + "/") for r in roots):
                raise SnapshotInvalid(f"the snapshot holds {path!r} outside its roots")
        elif path.rpartition("/")[0] not in dirs:
            raise SnapshotInvalid(f"the snapshot holds {path!r} outside its roots or before its directory")
        seen.add(path)
        target = ""
        if kind == "symlink":
            if size > 4096:
                raise SnapshotInvalid(f"the snapshot's link {path} has a target over 4096 bytes")
            target = bytes(view[offset:pos]).decode("utf-8", "surrogateescape")
        if kind == "dir":
            dirs.add(path)
        entries.append(Entry(kind, path, mode & 0o7777, size, mtime_ns, offset, target))
    return entries, state, cwd


class Snapshot:
    """A sandbox's workspace trees, shell state (variables, functions, aliases, options,
    umask, cwd), and the image and policy it came from. Restore it with
    `open_sandbox(snapshot=...)`, branch it with `Sandbox.fork()`, keep it with save()."""

    def __init__(self, stream: bytes, *, image: str, policy: dict | None, paths: tuple[str, ...],
                 backend: str = "", sandbox: str = "", taken_at: float | None = None, skipped: list | None = None) -> None:
        self.paths = clean_roots(paths)
        self.stream = bytes(stream)
        self.entries, self.state, self.cwd = parse_stream(self.stream, self.paths)
        self.image = image
        self.policy_data = policy
        self.backend = backend
        self.sandbox = sandbox
        self.taken_at = time.time() if taken_at is None else taken_at
        #: Special files (FIFOs, sockets, devices) that were left out, the first 20.
        self.skipped = list(skipped or [])

    # -- what it holds -----------------------------------------------------
    @property
    def size(self) -> int:
        """Bytes of the entry stream (what save() writes, give or take the header)."""
        return len(self.stream)

    def files(self) -> dict[str, Entry]:
        """Every entry by path (directories, files, symlinks)."""
        return {e.path: e for e in self.entries}

    def data(self, entry: Entry) -> bytes:
        """A file's bytes."""
        return self.stream[entry.offset : entry.offset + entry.size] if entry.kind == "file" else b""

    def policy(self) -> "SandboxPolicy":
        """The policy to restore under: the one it was taken with, but a host directory
        bound as /workspace is not reused (a fork must not write into its original's files):
        the restored sandbox gets its own /workspace. Raises pydantic.ValidationError."""
        from . import default_policy
        from .policy import SandboxPolicy

        if self.policy_data is None:
            return default_policy()
        return SandboxPolicy.model_validate(dict(self.policy_data, workspace=None))

    def chunks(self, size: int = 1 << 20) -> Iterator[bytes]:
        """The entry stream, in pieces for the channel."""
        view = memoryview(self.stream)
        for i in range(0, len(view), size):
            yield view[i : i + size]

    def header(self) -> dict:
        return {
            "format": FORMAT, "image": self.image, "policy": self.policy_data, "paths": list(self.paths),
            "backend": self.backend, "sandbox": self.sandbox, "taken_at": self.taken_at,
            "skipped": self.skipped, "stream_size": len(self.stream),
        }

    # -- files ---------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the snapshot to a host file (atomically: a crash leaves the old file or none).
        Raises OSError."""
        path = Path(path)
        head = json.dumps(self.header(), sort_keys=True).encode()
        prefix = MAGIC + _FIXED.pack(FORMAT, len(head)) + head
        digest = hashlib.sha256(prefix)
        digest.update(self.stream)
        part = path.with_name(f".{path.name}.pygent-part")
        try:
            with open(part, "wb") as f:
                f.write(prefix)
                f.write(self.stream)
                f.write(digest.digest())
            os.replace(part, path)
        finally:
            part.unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: str | Path, max_bytes: int = SNAPSHOT_MAX) -> "Snapshot":
        """Read a file save() wrote, checked whole before anything is returned.

        Raises: SnapshotInvalid (not a pygent snapshot, another format version, truncated,
        its hash does not match: tampered, a bad entry), FileNotFoundError / OSError.
        """
        path = Path(path)
        size = path.stat().st_size
        if size > max_bytes + _HEADER_MAX + 64:
            raise SnapshotInvalid(f"{path} is {size} bytes, over the {max_bytes} byte snapshot limit (pass max_bytes)")
        raw = path.read_bytes()
        if not raw.startswith(MAGIC):
            raise SnapshotInvalid(f"{path} is not a pygent snapshot")
        fixed = len(MAGIC) + _FIXED.size
        if len(raw) < fixed + 32:
            raise SnapshotInvalid(f"{path} is truncated")
        version, hlen = _FIXED.unpack_from(raw, len(MAGIC))
        if version != FORMAT:
            raise SnapshotInvalid(f"{path} is snapshot format {version}; this pygent reads format {FORMAT}")
        if hlen > _HEADER_MAX or len(raw) < fixed + hlen + 32:
            raise SnapshotInvalid(f"{path} is truncated")
        body, digest = raw[:-32], raw[-32:]
        if hashlib.sha256(body).digest() != digest:
            raise SnapshotInvalid(f"{path} does not match its content hash: truncated or modified")
        try:
            head = json.loads(raw[fixed : fixed + hlen])
            stream = body[fixed + hlen :]
            if not isinstance(head, dict) or head.get("stream_size") != len(stream):
                raise ValueError("sizes")
            return cls(stream, image=str(head["image"]), policy=head.get("policy"), paths=tuple(head["paths"]),
                       backend=str(head.get("backend") or ""), sandbox=str(head.get("sandbox") or ""),
                       taken_at=float(head.get("taken_at") or 0), skipped=list(head.get("skipped") or []))
        except SnapshotInvalid:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise SnapshotInvalid(f"{path} has a malformed header: {exc}") from None

    def __repr__(self) -> str:
        return f"<Snapshot of {self.sandbox[:12] or '?'} {len(self.entries)} entries {self.size} bytes image={self.image}>"
