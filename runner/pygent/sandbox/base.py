"""What a sandbox can do, independent of how (Docker today, other backends later)."""

from __future__ import annotations

import abc
import os
import posixpath
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from ..errors import NoAllowlist, PathOutsideSandbox, SandboxError
from .files import chunks_of, host_tree
from .result import ExecResult

if TYPE_CHECKING:
    from .changes import Changes
    from .forward import PortForward
    from .processes import ProcessOutput, ProcessStatus
    from .snapshot import Snapshot

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

    # -- ports (issue 25; a backend without them says so) ------------------------
    def expose(self, port: int, host_port: int = 0, bind: str = "127.0.0.1") -> str:
        """Make the sandbox's 127.0.0.1:`port` reachable from the host; returns the URL,
        `http://127.0.0.1:<free port>` by default. Each connection is forwarded over the
        sandbox's own command channel: the sandbox keeps no network interface. A connection
        made while nothing listens inside is reset at once. Exposing a port twice returns the
        same URL; close() stops the listener and resets its connections. `bind` other than
        loopback opens the port to whoever can reach the host: an explicit choice.

        Raises: SandboxError (bad port, host port taken, a backend without ports), SandboxClosed.
        """
        return self.forward(port, host_port, bind).url

    def forward(self, port: int, host_port: int = 0, bind: str = "127.0.0.1") -> "PortForward":
        """expose(), returning the listener itself (its url, wait_answering(), close()). Raises like expose()."""
        raise SandboxError(f"{type(self).__name__} cannot expose ports")

    # -- a live allowlist (issue 25; only a sandbox opened with one has it) ---------
    def allow_hosts(self, *hosts: str) -> tuple[str, ...]:
        """Let this sandbox reach more hosts from its next connection on: entries as in
        SandboxPolicy(network=[...]) ('host', '*.suffix', either with ':PORT', 'ADDR/PREFIX').
        Only this sandbox changes, not the others that share its egress proxy; it lifts
        deny_hosts entries of the same host. Returns the sandbox's allowlist now.

        Raises: NoAllowlist (the sandbox has no network, full network, or a backend without
        allowlists), ConfigError (a bad entry), SandboxError (the change was not confirmed), SandboxClosed.
        """
        raise NoAllowlist(no_allowlist(self))

    def deny_hosts(self, *hosts: str) -> tuple[str, ...]:
        """Refuse hosts to this sandbox from now on, even where an allowed pattern matches
        ('*.example' allowed, 'ads.example' denied); an entry without a port denies every
        port. Open connections to them are cut. Removes the allowlist entries it names (a host
        without a port: all of that host's); returns the allowlist now. Raises like allow_hosts()."""
        raise NoAllowlist(no_allowlist(self))

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
        import io
        import tarfile  # here, not at import: the exec fast path never needs it

        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            try:
                tar.extractall(host_dest, filter="data")
            except tarfile.FilterError as exc:  # a PygentError, like every refusal of a path
                raise PathOutsideSandbox(f"refused to copy {path} out of the sandbox: {exc}") from None
        return target

    @abc.abstractmethod
    def _put_file(self, spec: dict, chunks: Iterable[bytes]) -> dict:
        """Create a file from chunks (or spec["kind"] "dir" / "symlink"), acting as the
        sandbox user inside: protocol.WriteSpec in, the answer's {"size", "created"} out.

        Raises: the stdlib OSError subclass of the failure (files.raise_for), SandboxClosed,
        SandboxError (the sandbox is gone).
        """

    @abc.abstractmethod
    def _get_file(self, path: str, max_bytes: int, on_chunk: Callable[[bytes], None]) -> dict:
        """Read a regular file as the sandbox user; all of it goes to on_chunk, or nothing
        does (an error). Returns {"size", "mode"}.

        Raises: the stdlib OSError subclass of the failure, FileTooLarge, SandboxClosed, SandboxError.
        """

    @abc.abstractmethod
    def _tree_tar(self, path: str, max_bytes: int) -> bytes:
        """A tar of a directory, made with the sandbox user's rights.

        Raises: PermissionError (something in it the user cannot read), FileTooLarge, SandboxError.
        """

    # -- snapshots, forks, changes, pause (issue 24; a backend without them says so) ----
    def snapshot(self, paths: Iterable[str] | None = None, max_bytes: int | None = None) -> "Snapshot":
        """The workspace trees (default /workspace), shell state and cwd, and this sandbox's
        image and policy, taken by the in-container server as the sandbox user.

        Special files (FIFOs, sockets, devices) are left out (listed in `skipped`); hard links
        become copies; links are kept as links, never followed.
        Raises: SnapshotTooLarge (over max_bytes, default snapshot.SNAPSHOT_MAX: nothing kept),
        PermissionError (a file the user cannot read), SnapshotUnsupported, SandboxGone,
        SandboxClosed, SnapshotInvalid (bad paths).
        """
        from ..errors import SnapshotTooLarge
        from .files import raise_for
        from .snapshot import SNAPSHOT_MAX, Snapshot, clean_roots

        roots = clean_roots(tuple(paths) if paths is not None else None)
        limit = SNAPSHOT_MAX if max_bytes is None else int(max_bytes)
        buf = bytearray()
        answer = self._snapshot_stream({"paths": list(roots), "max": limit, "contents": True}, buf.extend)
        if "too_large" in answer:
            raise SnapshotTooLarge(
                f"the snapshot of {', '.join(roots)} is over its {limit} byte limit (at least {answer['too_large']} bytes): "
                "pass a larger max_bytes, or snapshot less (paths=...), or remove build outputs first"
            )
        raise_for(answer, answer.get("path") or roots[0], "snapshotting")
        policy = getattr(self, "policy", None)
        return Snapshot(bytes(buf), image=str(getattr(self, "image", "")),
                        policy=policy.model_dump(mode="json") if policy is not None else None,
                        paths=roots, backend=self.backend_name, sandbox=self.id,
                        skipped=list(answer.get("skipped") or []))

    def fork(self, n: int = 1) -> "list[Sandbox]":
        """n new sandboxes, each with this one's workspace and shell state as of now, the same
        image and policy; independent of each other and of this one. Started side by side.

        Raises: what snapshot() and open_sandbox(snapshot=...) raise (none is left running).
        """
        from . import open_forks

        if not isinstance(n, int) or n < 1:
            raise ValueError("fork(n) needs a positive number of sandboxes")
        return open_forks(self, n)

    def changes(self, since: "Snapshot", max_diff: int | None = None) -> "Changes":
        """Files and symlinks added, modified and deleted in the snapshot's trees since it was
        taken, with unified diffs of text files (bounded: changes.DIFF_MAX per file).

        Raises: SnapshotUnsupported, SandboxGone, SandboxClosed, PermissionError.
        """
        from .changes import DIFF_MAX, compare
        from .files import raise_for
        from .snapshot import parse_stream

        buf = bytearray()
        answer = self._snapshot_stream({"paths": list(since.paths), "max": 1 << 30, "contents": False}, buf.extend)
        raise_for(answer, answer.get("path") or since.paths[0], "listing")
        entries, _, _ = parse_stream(bytes(buf), since.paths, contents=False)

        def fetch(paths: list[str]) -> dict[str, bytes]:
            if not paths:
                return {}
            got = bytearray()
            answer = self._snapshot_stream({"paths": list(since.paths), "max": 1 << 30, "files": paths}, got.extend)
            raise_for(answer, answer.get("path") or paths[0], "reading")
            stream = bytes(got)
            files, _, _ = parse_stream(stream, since.paths, loose=True)
            return {e.path: stream[e.offset : e.offset + e.size] for e in files if e.kind == "file"}

        return compare(since, entries, fetch, DIFF_MAX if max_diff is None else int(max_diff))

    def pause(self) -> None:
        """Freeze every process of the sandbox through the engine (memory kept, no CPU used).
        Any later call resumes it first. Raises SnapshotUnsupported, SandboxGone, SandboxClosed."""
        from ..errors import SnapshotUnsupported

        raise SnapshotUnsupported(f"the {self.backend_name} backend cannot pause sandboxes")

    def resume(self) -> None:
        """Thaw a paused sandbox (nothing happens if it is not paused). Raises as pause()."""
        from ..errors import SnapshotUnsupported

        raise SnapshotUnsupported(f"the {self.backend_name} backend cannot pause sandboxes")

    @property
    def paused(self) -> bool:
        return False

    @property
    def backend_name(self) -> str:
        return getattr(self, "_backend", "") or type(self).__name__

    def _snapshot_stream(self, spec: dict, on_chunk: Callable[[bytes], None]) -> dict:
        """The server's S frame: entry stream to on_chunk, its answer. Raises SnapshotUnsupported."""
        from ..errors import SnapshotUnsupported

        raise SnapshotUnsupported(
            f"the {self.backend_name} backend cannot take snapshots (it has no pygent command server protocol 7)"
        )

    def _restore(self, snapshot: "Snapshot") -> None:
        """Fill this fresh sandbox with a snapshot's trees and shell state (the server's T frame).
        Raises SnapshotUnsupported, SnapshotError, SandboxGone."""
        from ..errors import SnapshotUnsupported

        raise SnapshotUnsupported(
            f"the {self.backend_name} backend cannot restore snapshots (it has no pygent command server protocol 7)"
        )

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


def no_allowlist(sandbox: Sandbox) -> str:
    """What allow_hosts/deny_hosts tell the user on a sandbox whose network is not an allowlist."""
    network = getattr(getattr(sandbox, "policy", None), "network", False)
    fix = ("an allowlist is chosen when a sandbox is created: open one with SandboxPolicy(network=['host', ...]) "
           "(or --allow-host HOST), then allow_hosts/deny_hosts change it while it runs")
    if network is True:
        return f"this sandbox has full network access (network=True): there is no allowlist to change; {fix}"
    if network:
        return f"the {getattr(sandbox, 'backend_name', type(sandbox).__name__)} backend has no live allowlist; {fix} on the docker backend"
    return f"this sandbox has no network at all (network=False), so no allowlist to change; {fix}"
