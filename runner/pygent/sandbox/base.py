"""What a sandbox can do, independent of how (Docker today, other backends later)."""

from __future__ import annotations

import abc
import io
import posixpath
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from ..errors import PathOutsideSandbox, SandboxError
from .result import ExecResult

if TYPE_CHECKING:
    from .processes import ProcessOutput, ProcessStatus

OutputCallback = Callable[[bytes], None]
#: on_chunk(stream, data): output as it arrives ("stdout"/"stderr"), for displays.
ChunkCallback = Callable[[str, bytes], None]

#: Largest single file read_file() returns, unless asked for more.
MAX_READ_BYTES = 16 << 20


class Sandbox(abc.ABC):
    """A disposable, isolated place to run commands. Always close() it (or use `with`)."""

    id: str

    @abc.abstractmethod
    def exec(
        self,
        cmd: str,
        *,
        timeout: float | None = None,
        env: dict[str, str] | None = None,
        workdir: str | None = None,
        stdin: bytes | Iterable[bytes] | None = None,
        max_output: int | None = None,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
        shell_state: bool = False,
        idle_timeout: float | None = None,
        on_chunk: ChunkCallback | None = None,
    ) -> ExecResult:
        """Run `cmd` with bash. Never raises for the command's own failure or timeout:
        those are in the result. With on_stdout/on_stderr, output is streamed to them
        as it comes (and not kept in the result). With on_chunk, output is shown to it
        as it comes and kept (capped) in the result too.

        shell_state=True: the command starts with the variables, functions, aliases,
        options and umask the previous shell_state command of this sandbox left, and
        leaves its own for the next (README, "Shell state"). Without it: a clean bash.
        idle_timeout: after that many seconds without output the call returns what
        was printed and the command runs on in the background (result.handle).

        Raises: SandboxClosed, EngineUnavailable, SandboxError (the sandbox broke).
        """

    # -- background commands (a backend without them says so) ------------------
    def exec_background(
        self,
        cmd: str,
        *,
        timeout: float | None = None,
        env: dict[str, str] | None = None,
        workdir: str | None = None,
        shell_state: bool = False,
    ) -> str:
        """Start `cmd` and return its handle at once; it runs until it ends, is killed, or
        the sandbox closes (timeout: none unless given). Its output is kept (the newest
        1 MiB) for process_output. Raises SandboxError, SandboxClosed."""
        raise SandboxError(f"{type(self).__name__} cannot run background commands")

    def process_output(self, handle: str, since: int = 0, max_bytes: int = 16000) -> "ProcessOutput":
        """Output of a background command after offset `since` (head and tail within max_bytes)."""
        raise SandboxError(f"{type(self).__name__} cannot run background commands")

    def process_status(self, handle: str) -> "ProcessStatus":
        raise SandboxError(f"{type(self).__name__} cannot run background commands")

    def process_input(self, handle: str, data: bytes | str, eof: bool = False) -> "ProcessStatus":
        """Write to a background command's stdin (eof=True closes it after)."""
        raise SandboxError(f"{type(self).__name__} cannot run background commands")

    def process_kill(self, handle: str) -> "ProcessStatus":
        """SIGKILL the background command's whole tree."""
        raise SandboxError(f"{type(self).__name__} cannot run background commands")

    def process_list(self) -> "list[ProcessStatus]":
        raise SandboxError(f"{type(self).__name__} cannot run background commands")

    @abc.abstractmethod
    def put_archive(self, dest_dir: str, tar_bytes: bytes) -> None:
        """Unpack a tar into `dest_dir` inside the sandbox (resolved by the engine, in the container)."""

    @abc.abstractmethod
    def get_archive(self, path: str, max_bytes: int = 256 << 20) -> bytes:
        """A tar of `path` (file or directory) as the container sees it."""

    @abc.abstractmethod
    def close(self, wait: bool = True) -> None:
        """Remove the container. Idempotent. wait=False may finish the removal in the background."""

    def export_tree(self, path: str, max_bytes: int = 256 << 20) -> bytes:
        """A tar of a directory tree, by the fastest way the backend has (default: get_archive)."""
        return self.get_archive(path, max_bytes)

    @property
    @abc.abstractmethod
    def closed(self) -> bool: ...

    def healthy(self) -> bool:
        """Can it still run a command? Cheap enough to ask before every use (no round trip).

        Why: a sandbox can die under its owner (removed or killed from outside, its
        server killed by a command, OOM of the whole sandbox, an engine restart);
        the pool must not hand such a one out, and an Agent must start afresh.
        Backends override it; by default only close() makes a sandbox unhealthy.
        """
        return not self.closed

    @property
    def memory_limit(self) -> str:
        """The memory limit as the policy wrote it (for messages such as an OOM kill)."""
        return "512m"

    def recipe(self) -> dict | None:
        """A JSON-able description the backend can start an identical sandbox from
        (`Backend.start_from_recipe`), or None. The exec fast path stores it."""
        return None

    # -- files, built on the two archive primitives --------------------------
    def write_file(self, path: str, data: bytes | str, mode: int = 0o644) -> None:
        """Create or replace one file inside the sandbox (parents are created)."""
        path = self.absolute(path)
        blob = data.encode() if isinstance(data, str) else data
        root = "/workspace" if path.startswith("/workspace/") else posixpath.dirname(path)
        rel = posixpath.relpath(path, root)
        parents = [(d, None, 0o755) for d in _parents(rel)]
        self.put_archive(root, _tar_of(parents + [(rel, blob, mode)], self._owner()))

    def read_file(self, path: str, max_bytes: int = MAX_READ_BYTES) -> bytes:
        """Read one regular file from the sandbox (symlinks resolve inside the container)."""
        target = self.absolute(path)
        # The engine's archive of a symlink is the link itself: follow it here, each hop
        # again through the archive API, so resolution stays inside the container.
        for _ in range(40):
            raw = self.get_archive(target, max_bytes=max_bytes + (64 << 10))
            with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
                member = tar.next()
                if member is None:
                    raise FileNotFoundError(path)
                if member.issym():
                    target = self.absolute(posixpath.join(posixpath.dirname(target), member.linkname))
                    continue
                if not member.isfile():
                    raise IsADirectoryError(f"{path} is not a regular file in the sandbox")
                if member.size > max_bytes:
                    raise PathOutsideSandbox(f"{path} is {member.size} bytes, over the {max_bytes} byte limit")
                return tar.extractfile(member).read()  # type: ignore[union-attr]
        raise PathOutsideSandbox(f"{path}: too many levels of symbolic links")

    def upload(self, host_path: str | Path, dest: str) -> None:
        """Copy a host file or directory to `dest` inside the sandbox."""
        host_path = Path(host_path)
        dest = self.absolute(dest)
        buf = io.BytesIO()
        uid, gid = self._owner()
        with tarfile.open(fileobj=buf, mode="w") as tar:

            def owned(ti: tarfile.TarInfo) -> tarfile.TarInfo:
                ti.uid, ti.gid, ti.uname, ti.gname = uid, gid, "", ""
                return ti

            tar.add(str(host_path), arcname=posixpath.basename(dest), filter=owned)
        parent = posixpath.dirname(dest) or "/"
        self.put_archive(parent, buf.getvalue())

    def download(self, path: str, host_dest: str | Path) -> Path:
        """Copy a file or directory out of the sandbox into host directory `host_dest`.

        The tar comes from the container, so it is untrusted: the 'data' filter
        refuses absolute paths, '..', links pointing outside and device files.
        """
        host_dest = Path(host_dest)
        host_dest.mkdir(parents=True, exist_ok=True)
        raw = self.get_archive(self.absolute(path))
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            try:
                tar.extractall(host_dest, filter="data")
            except tarfile.FilterError as exc:  # a PygentError, like every refusal of a path
                raise PathOutsideSandbox(f"refused to copy {path} out of the sandbox: {exc}") from None
        return host_dest / posixpath.basename(self.absolute(path).rstrip("/"))

    def absolute(self, path: str) -> str:
        """Relative paths are relative to /workspace; the result is normalised."""
        if not isinstance(path, str) or not path or "\0" in path:
            raise PathOutsideSandbox(f"invalid sandbox path {path!r}")
        return posixpath.normpath(posixpath.join("/workspace", path))

    def _owner(self) -> tuple[int, int]:
        return (1000, 1000)

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _parents(rel: str) -> list[str]:
    """'a/b/c.txt' -> ['a', 'a/b']: tar entries so the engine creates missing directories."""
    parts = rel.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _tar_of(entries: list[tuple[str, bytes | None, int]], owner: tuple[int, int]) -> bytes:
    """A tar of (name, data or None for a directory, mode), owned by the sandbox user."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data, mode in entries:
            ti = tarfile.TarInfo(name)
            ti.uid, ti.gid = owner
            ti.mode = mode
            if data is None:
                ti.type = tarfile.DIRTYPE
                tar.addfile(ti)
            else:
                ti.size = len(data)
                tar.addfile(ti, io.BytesIO(data))
    return buf.getvalue()
