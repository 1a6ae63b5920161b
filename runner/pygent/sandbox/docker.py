"""The Docker backend: one container per sandbox, hardened from its creation.

Commands go to the in-container server over the attach stream when the image
has one (label io.pygent.server), else through plain `docker exec` with the
same guarantees enforced from the host (slower: ~50 ms a call).
"""

from __future__ import annotations

import posixpath
import queue
import shlex
import re
import threading
import time
import uuid
from typing import TYPE_CHECKING, Callable, Iterable

from ..errors import (
    EngineUnavailable,
    FileTooLarge,
    ImageNotFound,
    RuntimeUnavailable,
    SandboxClosed,
    SandboxError,
)
from . import lifecycle
from .base import OutputCallback, Sandbox
from .channel import GRACE, Channel, ChannelBroken, DockerStream, command_spec
from .engine import get_client, is_engine_error
from .files import raise_for
from .policy import SandboxPolicy
from .result import SIGKILL_EXIT_CODE, TIMEOUT_EXIT_CODE, ExecResult, HeadTail

if TYPE_CHECKING:
    import docker

#: Seconds a freshly started server has to say hello.
START_TIMEOUT = 30.0
class _TooLarge(Exception):
    pass


_CWD_MARK = b"\x1ePYGENT_CWD="
_CWD_END = b"\x1e"  # ends the path: background children may write to stderr after the trap
#: Run (bash builtins only: nothing can be forked at the limit) before each plain-exec command:
#: at 3/4 of the pids limit, kill every process an earlier command left running (a fork bomb),
#: as the server does (server.Server.reclaim). Background jobs are otherwise left alone.
_RECLAIM = (
    "for _f in /sys/fs/cgroup /sys/fs/cgroup/pids; do"
    " if read -r _c <$_f/pids.current && read -r _m <$_f/pids.max; then"
    " if [[ $_m =~ ^[0-9]+$ ]] && (( _c * 4 >= _m * 3 )); then _k=1;"
    " for _i in {1..100}; do _x=; for _d in /proc/[0-9]*; do _p=${_d#/proc/}; (( _p == 1 || _p == $$ )) && continue;"
    " while IFS= read -r -d '' _v; do if [[ $_v == PYGENT_CMD=* ]]; then"
    ' [[ $_v != "PYGENT_CMD=$PYGENT_CMD" ]] && kill -9 $_p && _x=1; break; fi; done <$_d/environ;'
    " done; [[ -z $_x ]] && break; done; fi; break; fi; done 2>/dev/null;"
    " [[ -n $_k ]] && builtin printf '[pygent] the sandbox was at its process limit:"
    " killed the processes that earlier commands left running\\n' >&2;"
    " unset _f _c _m _k _i _x _d _p _v; "
)
#: Seconds without output after which the plain-exec path checks the container still runs.
_PLAIN_POLL = 1.0
_runtimes: dict[str, dict] | None = None
#: The runtime a policy without one gets when the engine registers it (`make engine` does).
PREFERRED_RUNTIME = "crun"
_preferred_broken = False


def _engine_runtimes(client: "docker.DockerClient") -> dict[str, dict]:
    """Runtime name -> its registration (path, runtimeArgs), asked once per process."""
    global _runtimes
    if _runtimes is None:
        _runtimes = dict(client.info().get("Runtimes") or {})
    return _runtimes


def chosen_runtime(policy: SandboxPolicy, client: "docker.DockerClient") -> str | None:
    """The policy's runtime; without one, crun when the engine has it, else the engine's default.

    Why crun: a container start costs the engine ~25% less CPU with crun than with
    runc here (create/start/remove, 8 threads: 16 -> 20 a second; `make bench`'s
    tasks section runs docker run with and without it), and engine CPU is what
    bounds sandboxes a second on a 2-core machine. Same OCI spec, same hardening.
    """
    if policy.runtime:
        return policy.runtime
    if not _preferred_broken and PREFERRED_RUNTIME in _engine_runtimes(client):
        return PREFERRED_RUNTIME
    return None


def container_config(image: str, policy: SandboxPolicy, server: str | None, pooled: bool, runtime: str | None = None) -> tuple[dict, dict]:
    """(create_container kwargs, host_config kwargs): every hardening in one place."""
    command = ["python3", "-I", "-S", server] if server else ["/bin/sh", "-c", "cat >/dev/null"]
    mounts = []
    from docker.types import DriverConfig, Mount

    if policy.workspace is not None:
        mounts.append(Mount("/workspace", str(policy.workspace), type="bind", read_only=False))
    else:
        # A tmpfs-backed anonymous volume, not a plain tmpfs: the engine's archive API
        # (put/get files) sees volumes but not tmpfs mounts. Removed with the container.
        opts = f"size={policy.workspace_size},uid={policy.uid},gid={policy.gid},mode=0755"
        mounts.append(
            Mount("/workspace", None, type="volume", driver_config=DriverConfig("local", {"type": "tmpfs", "device": "tmpfs", "o": opts}))
        )
    # /tmp too is a tmpfs-backed volume and not a plain --tmpfs: with a plain tmpfs,
    # write_file('/tmp/x') failed ("rootfs is marked read-only") and read_file('/tmp/x')
    # said "no such file" for a file the command had just written there.
    if not any(m.target.rstrip("/") == "/tmp" for m in policy.mounts):
        tmp_opts = f"size={policy.tmp_size},mode=1777,nosuid,nodev,noexec"
        mounts.append(
            Mount("/tmp", None, type="volume", driver_config=DriverConfig("local", {"type": "tmpfs", "device": "tmpfs", "o": tmp_opts}))
        )
    for m in policy.mounts:
        mounts.append(Mount(m.target, str(m.source), type="bind", read_only=m.read_only))
    host = dict(
        init=True,  # tini as PID 1: reaps zombies, forwards signals
        auto_remove=True,  # the engine removes it when the main process ends (owner gone)
        cap_drop=["ALL"],
        cap_add=list(policy.cap_add) or None,
        security_opt=["no-new-privileges:true"],
        read_only=policy.read_only_root,
        mem_limit=policy.memory,
        memswap_limit=policy.memory,  # equal to memory: no extra swap
        nano_cpus=int(policy.cpus * 1e9),
        pids_limit=policy.pids,
        mounts=mounts,
        runtime=runtime or policy.runtime,
        # No log driver: the stream carries everything, and untrusted output must not
        # fill the engine's disk (json-file keeps all of it, unbounded, by default).
        log_config={"Type": "none", "Config": {}},
    )
    if policy.network:
        host["network_mode"] = "bridge"
    create = dict(
        image=image,
        command=command,
        user=policy.user,
        working_dir="/workspace",
        environment=dict(policy.env),
        stdin_open=True,
        detach=False,  # with stdin_open: StdinOnce, stdin closes when the owner's attach stream does
        tty=False,
        labels=lifecycle.owner_labels(pooled=pooled),
        # NetworkDisabled is the strictest "no network" and starts ~2x faster than --network none.
        network_disabled=not policy.network,
        hostname=f"sandbox-{uuid.uuid4().hex[:8]}",
    )
    return create, host


class DockerSandbox(Sandbox):
    """A running hardened container. Create with `DockerSandbox.create()` or `pygent.sandbox.open_sandbox()`."""

    def __init__(self, container_id: str, image: str, policy: SandboxPolicy, channel: Channel | None, hostname: str) -> None:
        self.id = container_id
        self.image = image
        self.policy = policy
        self.hostname = hostname
        self._channel = channel
        self._closed = False
        self._close_lock = threading.Lock()
        self._cwd = "/workspace"
        #: The engine's create body and API version this sandbox was started with, so
        #: `pygent-runner exec` can start the next one without docker-py (quickstart.py).
        self.create_config: dict | None = None
        self.api_version: str | None = None
        lifecycle.track(self)

    # -- creation -----------------------------------------------------------
    @classmethod
    def create(cls, image: str | None = None, policy: SandboxPolicy | None = None, *, pooled: bool = False) -> "DockerSandbox":
        """Start a sandbox. Raises EngineUnavailable, ImageNotFound, RuntimeUnavailable, SandboxError."""
        from .gc import reclaim_in_background
        from .images import image_has_server, resolve_image
        from ..settings import get_settings

        policy = policy or SandboxPolicy()
        client = get_client()
        reclaim_in_background()
        if policy.runtime and policy.runtime not in _engine_runtimes(client):
            raise RuntimeUnavailable(
                f"runtime {policy.runtime!r} is not registered with the engine "
                f"(has: {', '.join(sorted(_engine_runtimes(client)))}). Install it (e.g. Debian's runsc) "
                "and add it to /etc/docker/daemon.json, or `make engine` on an engine we manage."
            )
        if policy.runtime and policy.network and "--network=none" in (_engine_runtimes(client)[policy.runtime].get("runtimeArgs") or []):
            from ..errors import ConfigError

            raise ConfigError(
                f"network=True cannot be honoured: the engine registers {policy.runtime!r} with --network=none "
                "(Debian's runsc cannot start with networking on this kernel). Use the default runtime for networked sandboxes."
            )
        tag = resolve_image(image or get_settings().pygent_image)
        server = image_has_server(tag)
        runtime = chosen_runtime(policy, client)
        try:
            return cls._start(client, tag, policy, server, pooled, runtime)
        except RuntimeUnavailable:
            if policy.runtime or runtime is None:
                raise
            # The engine registers crun but may not run it (e.g. a hybrid cgroup layout crun
            # refuses): when the engine's default works, use it from now on.
            sandbox = cls._start(client, tag, policy, server, pooled, None)
            global _preferred_broken
            _preferred_broken = True
            return sandbox

    @classmethod
    def _start(cls, client: "docker.DockerClient", tag: str, policy: SandboxPolicy, server: str | None, pooled: bool, runtime: str | None) -> "DockerSandbox":
        create, host = container_config(tag, policy, server, pooled, runtime)
        api = client.api
        # Named by us, so an interruption (Ctrl-C, SIGTERM) between the engine creating it and
        # its answer reaching us still knows what to remove.
        name = f"pygent-{create['hostname'].removeprefix('sandbox-')}-{uuid.uuid4().hex[:8]}"
        cid = None
        channel = None
        try:
            config = api.create_container_config(host_config=api.create_host_config(**host), **create)
            cid = api.create_container_from_config(config, name)["Id"]
            sock = api.attach_socket(cid, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
            channel = Channel(getattr(sock, "_sock", sock), holder=sock)
            api.start(cid)
            if server:
                channel.wait_hello(START_TIMEOUT)
        except BaseException as exc:
            if channel is not None:
                channel.close()
            try:
                _force_remove(cid or name)
            except Exception:
                pass  # the original error is the one to report; gc reclaims by label
            raise _map_error(exc, tag) from None
        sandbox = cls(cid, tag, policy, channel, create["hostname"])
        sandbox.create_config = dict(config)
        sandbox.api_version = api._version
        if not server:
            # Plain-exec images: the channel only holds stdin open (owner-death net); commands use exec.
            sandbox._plain = True
        return sandbox

    _plain = False

    # -- commands -----------------------------------------------------------
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
        if self._closed:
            raise SandboxClosed(f"sandbox {self.id[:12]} is closed; create a new one")
        spec = command_spec(cmd, self.policy.timeout if timeout is None else timeout, env, workdir, max_output or self.policy.max_output)
        if self._plain:
            return self._exec_plain(cmd, spec["timeout"], spec["env"], workdir, stdin, spec["max_output"], on_stdout, on_stderr)
        started, wall = time.monotonic(), time.time()
        try:
            return self._channel.run(spec, stdin, on_stdout, on_stderr)  # type: ignore[union-attr]
        except ChannelBroken as exc:
            return after_broken_stream(self.id, self.policy.memory, exc, started, wall, self._cwd)

    def _oom_since(self, wall: float) -> bool:
        return oom_event_since(self.id, wall)

    def _sandbox_oom_result(self, duration: float) -> ExecResult:
        return _sandbox_oom_result(self.id, self.policy.memory, duration, self._cwd)

    def _exec_plain(
        self,
        cmd: str,
        timeout: float | None,
        env: dict[str, str],
        workdir: str | None,
        stdin: bytes | Iterable[bytes] | None,
        cap: int,
        on_stdout: OutputCallback | None,
        on_stderr: OutputCallback | None,
    ) -> ExecResult:
        """`docker exec` fallback for images without the server. Same guarantees, from the host."""
        api = get_client().api
        marker = uuid.uuid4().hex
        wall = time.time()
        streaming = on_stdout is not None or on_stderr is not None
        script = _RECLAIM + (cmd if streaming else "trap 'printf \"\\036PYGENT_CWD=%s\\036\" \"$PWD\" >&2' EXIT; " + cmd)
        env = dict(dict(self.policy.env), **env, PYGENT_CMD=marker)
        start = time.monotonic()
        try:
            exec_id = api.exec_create(
                self.id, ["/bin/bash", "-c", script], stdin=stdin is not None, environment=env,
                workdir=workdir or self._cwd, user=self.policy.user,
            )["Id"]
            sock = api.exec_start(exec_id, socket=True)
        except Exception as exc:
            raise _map_error(exc, self.image) from None
        raw = getattr(sock, "_sock", sock)
        stream = DockerStream(raw)
        if stdin is not None:  # streamed chunk by chunk: an open host stdin must not block the timeout
            threading.Thread(target=_send_and_close, args=(raw, stdin), daemon=True).start()
        out, err = HeadTail(cap), HeadTail(cap)
        cwd_record = _CwdRecord()
        deadline = None if timeout is None else start + timeout
        timed_out = False
        try:
            while True:
                # Wake up every second without output to check the container still runs:
                # when it dies under the command (gVisor killed on OOM), the engine may
                # keep the exec stream open until the deadline.
                wake = time.monotonic() + _PLAIN_POLL
                if deadline is not None:
                    wake = min(wake, deadline)
                try:
                    kind, data = stream.recv(wake)
                except ChannelBroken:
                    now = time.monotonic()
                    if now < wake:
                        break  # end of stream: the command is done
                    if deadline is not None and now >= deadline:
                        if timed_out:
                            break  # the grace period is over too
                        timed_out = True
                        # In a thread: this loop must keep draining the stream meanwhile, or
                        # the engine (blocked writing a flood like `yes` to us) never finishes
                        # the kill exec and both sides wait on each other.
                        threading.Thread(target=self._kill_marked, args=(marker,), daemon=True).start()
                        deadline = time.monotonic() + GRACE
                        continue
                    if not self._running():
                        break
                    continue
                if kind == 1:
                    on_stdout(data) if on_stdout else out.add(data)
                else:
                    on_stderr(data) if on_stderr else err.add(cwd_record.feed(data))
        finally:
            raw.close()
            sock.close()  # the SocketIO wrapper holds the fd open until it is closed too
        err.add(cwd_record.flush())
        try:
            code = TIMEOUT_EXIT_CODE if timed_out else (api.exec_inspect(exec_id).get("ExitCode") or 0)
        except Exception as exc:  # the container itself is gone (e.g. gVisor killed on OOM)
            if self._oom_since(wall):
                return self._sandbox_oom_result(time.monotonic() - start)
            raise _map_error(exc, self.image) from None
        if cwd_record.cwd and not timed_out:
            self._cwd = cwd_record.cwd.decode("utf-8", "replace")
        return ExecResult(
            exit_code=code, stdout=out.value(), stderr=err.value(), duration=time.monotonic() - start,
            timed_out=timed_out, stdout_truncated=out.omitted, stderr_truncated=err.omitted,
            oom_killed=code == SIGKILL_EXIT_CODE and not timed_out and (self._oom_since(wall) or self._oom_killed()),
            cwd=self._cwd,
        )

    def _kill_marked(self, marker: str) -> None:
        """Kill every process carrying the command's marker: the whole tree, orphans included."""
        script = (
            'for d in /proc/[0-9]*; do p=${d#/proc/}; [ "$p" = "$$" ] && continue; '
            f'tr "\\0" "\\n" < $d/environ 2>/dev/null | grep -qx "PYGENT_CMD={marker}" && kill -9 "$p"; done; true'
        )
        api = get_client().api
        for _ in range(2):
            try:
                eid = api.exec_create(self.id, ["/bin/sh", "-c", script], user=self.policy.user)["Id"]
                api.exec_start(eid)
            except Exception:
                return

    def _running(self) -> bool:
        try:
            return bool(get_client().api.inspect_container(self.id)["State"].get("Running"))
        except Exception as exc:
            return not _is_not_found(exc)

    def _oom_killed(self) -> bool:
        try:
            return bool(get_client().api.inspect_container(self.id)["State"].get("OOMKilled"))
        except Exception:
            return False

    # -- files --------------------------------------------------------------
    def put_archive(self, dest_dir: str, tar_bytes: bytes) -> None:
        self._check_open()
        try:
            get_client().api.put_archive(self.id, self.absolute(dest_dir), tar_bytes)
        except Exception as exc:
            raise _map_error(exc, self.image) from None

    def get_archive(self, path: str, max_bytes: int = 256 << 20) -> bytes:
        self._check_open()
        try:
            stream, _ = get_client().api.get_archive(self.id, self.absolute(path), chunk_size=1 << 16)
            buf = bytearray()
            for chunk in stream:
                buf += chunk
                if len(buf) > max_bytes:
                    raise SandboxError(f"{path} is larger than {max_bytes} bytes; copy less at a time")
            return bytes(buf)
        except SandboxError:
            raise
        except Exception as exc:
            raise _map_error(exc, self.image, path=path) from None

    def export_tree(self, path: str, max_bytes: int = 256 << 20) -> bytes:
        """A tar of `path`, made by `tar` inside the container and sent over the command
        stream (~5 ms) rather than the engine's archive API (~70 ms under load)."""
        if self._plain:
            return self.get_archive(path, max_bytes)
        parent, name = posixpath.split(self.absolute(path).rstrip("/") or "/")
        try:
            seen = self._channel.look(posixpath.join(parent, name))  # type: ignore[union-attr]
        except ChannelBroken as exc:
            raise _broken(self.id, exc) from None
        if seen.get("empty"):  # nothing to pack: no process started in the sandbox
            return _empty_dir_tar(name, seen)
        buf = bytearray()

        def take(chunk: bytes) -> None:
            buf.extend(chunk)
            if len(buf) > max_bytes:
                raise _TooLarge

        try:
            r = self.exec(f"exec tar -C {shlex.quote(parent or '/')} -cf - {shlex.quote(name)}", timeout=120,
                          on_stdout=take, on_stderr=lambda _: None)
        except _TooLarge:
            raise SandboxError(f"{path} is larger than {max_bytes} bytes") from None
        if r.exit_code != 0:  # no tar in the image, unreadable files: the engine's way
            return self.get_archive(path, max_bytes)
        return bytes(buf)

    def _owner(self) -> tuple[int, int]:
        return (self.policy.uid, self.policy.gid)

    # -- the file API as the sandbox user: the command server's file frames --------
    def _put_file(self, spec: dict, chunks: Iterable[bytes]) -> dict:
        if self._plain:  # no server in the image (until every image runs it): the engine's archives
            return super()._put_file(spec, chunks)
        self._check_open()
        try:
            answer = self._channel.put_file(spec, chunks)  # type: ignore[union-attr]
        except ChannelBroken as exc:
            raise _broken(self.id, exc) from None
        return raise_for(answer, spec["path"], "writing")

    def _get_file(self, path: str, max_bytes: int, on_chunk: Callable[[bytes], None]) -> dict:
        if self._plain:
            return super()._get_file(path, max_bytes, on_chunk)
        self._check_open()
        got = bytearray()
        try:
            # Held back until the answer says the read succeeded (a file over the limit
            # may have sent a part): the caller gets all of it or nothing.
            answer = self._channel.get_file(path, max_bytes, got.extend)  # type: ignore[union-attr]
        except ChannelBroken as exc:
            raise _broken(self.id, exc) from None
        raise_for(answer, path, "reading", max_bytes)
        on_chunk(bytes(got))
        return answer

    def _tree_tar(self, path: str, max_bytes: int) -> bytes:
        """A tar made by `tar` running as the sandbox user: what it cannot read is an error."""
        if self._plain:
            return super()._tree_tar(path, max_bytes)
        parent, name = posixpath.split(path.rstrip("/") or "/")
        buf, err = bytearray(), bytearray()

        def take(chunk: bytes) -> None:
            buf.extend(chunk)
            if len(buf) > max_bytes:
                raise _TooLarge

        try:
            r = self.exec(f"exec tar -C {shlex.quote(parent or '/')} -cf - {shlex.quote(name)}", timeout=300,
                          on_stdout=take, on_stderr=err.extend)
        except _TooLarge:
            raise FileTooLarge(path, len(buf), max_bytes) from None
        if r.exit_code != 0:
            text = err.decode("utf-8", "replace").strip()
            errno = 13 if "Permission denied" in text else 2 if "No such file" in text else 5
            raise OSError(errno, f"could not copy it as the sandbox user: {text[-500:]}", path)
        return bytes(buf)

    def _check_open(self) -> None:
        if self._closed:
            raise SandboxClosed(f"sandbox {self.id[:12]} is closed; create a new one")

    # -- removal ------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def close(self, wait: bool = True) -> None:
        """Remove the container. wait=False returns at once: the stream is closed (the
        server exits, the engine auto-removes) and a background thread makes sure."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        if not wait:
            if self._channel is not None:
                self._channel.close()
            _remove_later(self)
            return
        try:
            # Remove first, then drop the stream: closing the stream first started the
            # engine's auto-remove, our remove then answered "already in progress" and
            # close() returned while the container still existed.
            _force_remove(self.id)
        finally:
            if self._channel is not None:
                self._channel.close()
            lifecycle.untrack(self)

    def __repr__(self) -> str:
        return f"<DockerSandbox {self.id[:12]} image={self.image} closed={self._closed}>"


class _CwdRecord:
    """Takes the trap's `\\x1ePYGENT_CWD=<path>\\x1e` record out of stderr as it streams by.

    Done before the head+tail cap (not on the capped value) so the truncated count
    and the kept tail are exactly the command's own stderr.
    """

    def __init__(self) -> None:
        self.pending = b""
        self.cwd: bytes | None = None

    def feed(self, data: bytes) -> bytes:
        data, self.pending = self.pending + data, b""
        out = bytearray()
        while data:
            i = data.find(_CWD_MARK[:1])
            if i < 0:
                out += data
                break
            out += data[:i]
            data = data[i:]
            if not (data.startswith(_CWD_MARK) or _CWD_MARK.startswith(data)):
                out += data[:1]  # a \x1e of the command's own
                data = data[1:]
                continue
            end = data.find(_CWD_END, len(_CWD_MARK)) if len(data) > len(_CWD_MARK) else -1
            if end < 0:
                if len(data) > 8192:  # no record is that long: the command's own bytes
                    out += data[:1]
                    data = data[1:]
                    continue
                self.pending = data  # wait for the rest
                break
            self.cwd = data[len(_CWD_MARK) : end]
            data = data[end + len(_CWD_END) :]
        return bytes(out)

    def flush(self) -> bytes:
        rest, self.pending = self.pending, b""
        return rest


def _empty_dir_tar(name: str, stat: dict) -> bytes:
    """The tar `tar -cf - NAME` makes of an empty directory NAME with this stat."""
    import io
    import tarfile

    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode, info.uid, info.gid, info.mtime = stat["mode"], stat["uid"], stat["gid"], stat["mtime"]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(info)
    return buf.getvalue()


def after_broken_stream(cid: str, memory: str, exc: Exception, started: float, wall: float, cwd: str) -> ExecResult:
    """A command's stream broke: the whole-sandbox OOM result (gVisor), else raise what happened.

    Shared with the exec fast path (quickstart.py), which has no DockerSandbox.
    """
    if oom_event_since(cid, wall):
        return _sandbox_oom_result(cid, memory, time.monotonic() - started, cwd)
    raise _broken(cid, exc) from None


def oom_event_since(cid: str, wall: float) -> bool:
    """Did the engine report an OOM kill in this container since `wall` (epoch seconds)?

    Why the event log: on cgroup v1 (docker 20.10) State.OOMKilled stays false
    while the container runs, so a killed command was reported as a plain 137;
    and under gVisor the host kills the whole sandbox, so nothing inside can tell.
    The 'oom' event may trail the command's end by a moment: look a few times.
    """
    try:
        api = get_client().api
        for attempt in range(6):
            events = api.events(
                since=f"{wall:.6f}", until=f"{time.time():.6f}", filters={"container": cid, "event": "oom"}, decode=True
            )
            if any(True for _ in events):
                return True
            if attempt < 5:
                time.sleep(0.05)
    except Exception:
        pass
    return False


def _sandbox_oom_result(cid: str, memory: str, duration: float, cwd: str) -> ExecResult:
    """The command used more memory than the limit and the engine killed the whole sandbox (gVisor)."""
    note = (
        f"[pygent] out of memory (limit {memory}): the engine killed the whole sandbox {cid[:12]}; create a new one\n"
    ).encode()
    return ExecResult(exit_code=SIGKILL_EXIT_CODE, stderr=note, duration=duration, oom_killed=True, cwd=cwd)


def _broken(cid: str, exc: Exception) -> SandboxError:
    """Tell an engine outage apart from a dead container, for a message that says what to do."""
    try:
        get_client().api.ping()
    except Exception:
        from .engine import reset_client

        reset_client()
        return EngineUnavailable(f"lost the engine while using sandbox {cid[:12]}")
    return SandboxError(f"sandbox {cid[:12]} is gone ({exc}); create a new one")


_reaper: "queue.Queue[DockerSandbox] | None" = None
_reaper_lock = threading.Lock()


def _remove_later(sandbox: "DockerSandbox") -> None:
    """Queue a closed sandbox's removal on one background thread (it stays tracked until done)."""
    global _reaper
    with _reaper_lock:
        if _reaper is None:
            _reaper = queue.Queue()
            threading.Thread(target=_reap_forever, args=(_reaper,), name="pygent-reaper", daemon=True).start()
    _reaper.put(sandbox)


def _reap_forever(q: "queue.Queue[DockerSandbox]") -> None:
    while True:
        sandbox = q.get()
        try:
            # The stream is closed: the main process exits and the engine's auto-remove
            # deletes the container. Wait for that (one blocking call, no polling, no
            # second kill), and force the removal only when it does not happen.
            if not _removed_within(sandbox.id, 5.0):
                _force_remove(sandbox.id)
        except Exception:
            pass  # gc reclaims it by label
        finally:
            lifecycle.untrack(sandbox)


def _send_and_close(sock: object, stdin: bytes | Iterable[bytes]) -> None:
    try:
        chunks = [stdin] if isinstance(stdin, (bytes, bytearray, memoryview)) else stdin
        for chunk in chunks:
            sock.sendall(chunk)  # type: ignore[attr-defined]
        sock.shutdown(1)  # type: ignore[attr-defined]
    except (OSError, ValueError):
        pass


def _force_remove(cid: str) -> None:
    """Remove a container; already gone (auto-remove raced us) is success."""
    try:
        get_client().api.remove_container(cid, force=True, v=True)
    except Exception as exc:
        text = str(exc)
        if "already in progress" in text:
            _removed_within(cid, 10.0)  # still there after that: gc reclaims it by label later
            return
        if "No such container" in text or "404" in text:
            return
        if is_engine_error(exc):
            return  # engine down: gc reclaims it by label once the engine is back
        raise SandboxError(f"could not remove container {cid[:12]}: {text[:200]}") from None


def _is_not_found(exc: BaseException) -> bool:
    from docker.errors import NotFound

    return isinstance(exc, NotFound)


def _removed_within(cid: str, timeout: float) -> bool:
    """True once the engine has removed the container (or it never existed); False on timeout."""
    from docker.errors import NotFound

    try:
        get_client().api.wait(cid, timeout=timeout, condition="removed")
        return True
    except NotFound:
        return True
    except Exception:
        return False


def _map_error(exc: BaseException, image: str, path: str | None = None) -> BaseException:
    """docker-py/requests errors -> pygent errors with a next step. Others pass through."""
    from docker.errors import APIError, DockerException, NotFound

    from ..errors import PygentError

    if isinstance(exc, PygentError) or not isinstance(exc, Exception):
        return exc
    if isinstance(exc, ChannelBroken):
        return exc
    if is_engine_error(exc):
        return EngineUnavailable(str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
    if isinstance(exc, DockerException) and not isinstance(exc, APIError):
        # docker-py refusing a value before asking the engine (e.g. a memory size it cannot parse)
        from ..errors import ConfigError

        return ConfigError(str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__)
    if isinstance(exc, NotFound):
        if path is not None:
            return FileNotFoundError(f"{path}: no such file or directory in the sandbox")
        if "image" in str(exc).lower():
            return ImageNotFound(f"image {image!r} not found on the engine: {exc.explanation}")
        return SandboxError(f"the container is gone: {exc.explanation}")
    if isinstance(exc, APIError):
        text = str(exc.explanation or exc)
        if re.search(r"runtime", text, re.I):
            hint = ""
            if "root network namespace" in text:
                # runsc's "am I in the root netns" probe misfires on newer kernels; gVisor then
                # cannot start at all. Its own network is not needed: sandboxes have none by default.
                hint = (
                    ". gVisor cannot set up its network on this kernel: register runsc with"
                    ' "runtimeArgs": ["--network=none"] in /etc/docker/daemon.json and reload dockerd (kill -HUP)'
                )
            return RuntimeUnavailable(text[:300] + hint)
        return SandboxError(text[:300])
    return exc
