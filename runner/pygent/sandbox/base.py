"""What a sandbox can do, independent of how (Docker today, other backends later)."""

from __future__ import annotations

import abc
import io
import os
import posixpath
import stat
import tarfile
from pathlib import Path
from typing import Callable, Iterable

from ..errors import FileTooLarge, PathOutsideSandbox, SandboxError
from .files import chunks_of, host_tree
from .result import ExecResult

OutputCallback = Callable[[bytes], None]

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
    ) -> ExecResult:
        """Run `cmd` with bash. Never raises for the command's own failure or timeout:
        those are in the result. With on_stdout/on_stderr, output is streamed to them
        as it comes (and not kept in the result).

        Raises: SandboxClosed, EngineUnavailable, SandboxError (the sandbox broke).
        """

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

    # -- files: as the sandbox user, over two primitives (_put_file, _get_file) ----
    def write_file(self, path: str, data: bytes | str, mode: int = 0o644) -> None:
        """Create or replace one file inside the sandbox, with the sandbox user's rights.

        Missing parents are created wherever the user may write. A new file is the
        user's, with `mode`; an existing one keeps its owner and mode; either way
        its modification time is now. Symlinks resolve inside the container.

        Raises: PermissionError (the user may not write there), IsADirectoryError
        (`path` is a directory: nothing is changed), NotADirectoryError (a parent is
        a file), PathOutsideSandbox (an invalid path), SandboxClosed, SandboxError
        (the sandbox is gone), OSError (e.g. no space left).
        """
        blob = data.encode() if isinstance(data, str) else bytes(data)
        self._put_file({"path": self.absolute(path), "mode": int(mode)}, [blob])

    def read_file(self, path: str, max_bytes: int = MAX_READ_BYTES) -> bytes:
        """Read one regular file, with the sandbox user's rights (symlinks resolve inside).

        Raises: FileNotFoundError, PermissionError (the user may not read it),
        IsADirectoryError, NotADirectoryError, FileTooLarge (over max_bytes: nothing
        is returned), PathOutsideSandbox, SandboxClosed, SandboxError (the sandbox is gone).
        """
        buf = bytearray()
        self._get_file(self.absolute(path), max_bytes, buf.extend)
        return bytes(buf)

    def upload(self, host_path: str | Path, dest: str) -> None:
        """Copy a host file or directory to `dest` inside, with the sandbox user's rights
        (the rules of write_file; files keep their host permission bits, links stay links).

        Raises: FileNotFoundError (no such host path), the errors of write_file.
        """
        for spath, host, st in host_tree(Path(host_path), self.absolute(dest)):
            if stat.S_ISDIR(st.st_mode):
                self._put_file({"path": spath, "kind": "dir"}, [])
            elif stat.S_ISLNK(st.st_mode):
                self._put_file({"path": spath, "kind": "symlink", "target": os.readlink(host)}, [])
            elif stat.S_ISREG(st.st_mode):
                self._put_file({"path": spath, "mode": st.st_mode & 0o777}, chunks_of(host))
            # sockets, FIFOs and devices on the host are not files to copy

    def download(self, path: str, host_dest: str | Path, max_bytes: int = 256 << 20) -> Path:
        """Copy a file or directory out of the sandbox into host directory `host_dest`,
        read with the sandbox user's rights. Returns the host path of the copy.

        A directory comes as a tar made inside the container, so it is untrusted: the
        'data' filter refuses absolute paths, '..', links pointing outside and devices.

        Raises: FileNotFoundError, PermissionError (something in it the user may not
        read), FileTooLarge, PathOutsideSandbox (a hostile entry), SandboxError.
        """
        src = self.absolute(path)
        host_dest = Path(host_dest)
        host_dest.mkdir(parents=True, exist_ok=True)
        target = host_dest / (posixpath.basename(src.rstrip("/")) or "root")
        part = host_dest / f".{target.name}.pygent-part"
        try:
            with open(part, "wb") as f:
                try:
                    answer: dict | None = self._get_file(src, max_bytes, f.write)
                except IsADirectoryError:
                    answer = None  # a directory: a tar of it, below
            if answer is not None:
                part.chmod((int(answer.get("mode", 0o644)) & 0o755) | 0o600)
                os.replace(part, target)
                return target
        finally:
            part.unlink(missing_ok=True)
        raw = self._tree_tar(src, max_bytes)
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            try:
                tar.extractall(host_dest, filter="data")
            except tarfile.FilterError as exc:  # a PygentError, like every refusal of a path
                raise PathOutsideSandbox(f"refused to copy {path} out of the sandbox: {exc}") from None
        return target

    def _put_file(self, spec: dict, chunks: Iterable[bytes]) -> dict:
        """Create a file (or spec["kind"] "dir" / "symlink") from chunks.

        This default, for backends without a command server, goes through the
        engine's archive API, which acts as root: such backends do not get the
        user-rights guarantees. Backends with a server override it.
        """
        path, kind = spec["path"], spec.get("kind") or "file"
        root = "/workspace" if path.startswith("/workspace/") else posixpath.dirname(path)
        rel = posixpath.relpath(path, root)
        parents = [(d, None, 0o755) for d in _parents(rel)]
        if kind == "dir":
            entry = (rel, None, 0o755)
        else:
            entry = (rel, b"".join(chunks), int(spec.get("mode", 0o644)))
        if kind == "symlink":
            raise SandboxError("this sandbox cannot create symbolic links through the file API")
        self.put_archive(root, _tar_of(parents + [entry], self._owner()))
        return {"size": len(entry[1] or b"")}

    def _get_file(self, path: str, max_bytes: int, on_chunk: Callable[[bytes], None]) -> dict:
        """Read a regular file into on_chunk; {"size", "mode"}.

        This default, for backends without a command server, goes through the
        engine's archive API (as root); backends with a server override it.
        """
        target = path
        # The engine's archive of a symlink is the link itself: follow it here, each hop
        # again through the archive API, so resolution stays inside the container.
        for _ in range(40):
            raw = self.get_archive(target, max_bytes=max_bytes + (64 << 10))
            with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
                member = tar.next()
                if member is None:
                    raise FileNotFoundError(2, "No such file or directory", path)
                if member.issym():
                    target = self.absolute(posixpath.join(posixpath.dirname(target), member.linkname))
                    continue
                if member.isdir():
                    raise IsADirectoryError(21, "Is a directory", path)
                if not member.isfile():
                    raise OSError(22, "Not a regular file", path)
                if member.size > max_bytes:
                    raise FileTooLarge(path, member.size, max_bytes)
                on_chunk(tar.extractfile(member).read())  # type: ignore[union-attr]
                return {"size": member.size, "mode": member.mode}
        raise OSError(40, "Too many levels of symbolic links", path)

    def _tree_tar(self, path: str, max_bytes: int) -> bytes:
        """A tar of a directory, read with the user's rights where the backend can (default: the engine's)."""
        return self.get_archive(path, max_bytes)

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
