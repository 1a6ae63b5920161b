"""One sandbox on a Docker-API engine: a hardened container running the command server.

Every image runs the same server (from the read-only tooling volume, see
tooling.py), so there is one exec path: commands go over the container's attach
stream (stream.py, channel.py), and so do files (as the sandbox user, files.py);
workspace snapshots use the engine's archive API.
The class needs neither pydantic nor docker-py: `pygent-runner exec` starts
sandboxes through this same code from a remembered create body.
"""

from __future__ import annotations

import math
import posixpath
from errno import EACCES, EIO, ENOENT
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, NamedTuple

from ...errors import EngineUnavailable, FileTooLarge, ImageNotFound, RuntimeUnavailable, SandboxClosed, SandboxError, SandboxGone
from .. import lifecycle
from ..base import ChunkCallback, OutputCallback, Sandbox
from ..channel import Channel, ChannelBroken, command_spec
from ..files import raise_for
from ..forward import OPEN_TIMEOUT, PortForward, StreamMux, check_expose
from ..processes import ProcessOutput, ProcessStatus, output_of, status_of
from ..result import SIGKILL_EXIT_CODE, ExecResult
from .client import EngineAPIError, EngineClient, NotFound, fix_for
from .deaths import DeathWatch, gone_reason
from .stream import DockerStream

if TYPE_CHECKING:
    from ..policy import SandboxPolicy
    from ..handoff import Listener

#: Seconds a freshly started server has to say hello.
START_TIMEOUT = 30.0
#: Seconds close() waits for the engine's auto-remove before forcing the removal.
REMOVE_WAIT = 10.0
#: close(): seconds to wait for the engine's auto-remove after the stream is dropped, before forcing it.
CLOSE_WAIT = 3.0
#: close(): the longest it then waits for a removal the engine has in progress.
CLOSE_SLOW = 60.0


class Limits(NamedTuple):
    """What a running sandbox needs to know of its policy (no pydantic on the exec fast path)."""

    memory: str = "512m"
    timeout: float = 60.0
    max_output: int = 64_000
    uid: int = 1000
    gid: int = 1000

    @classmethod
    def of(cls, policy: "SandboxPolicy") -> "Limits":
        return cls(policy.memory, policy.timeout, policy.max_output, policy.uid, policy.gid)


class _TooLarge(Exception):
    pass


class DockerSandbox(Sandbox):
    """A running hardened container. Made by a backend (`open_sandbox()`), never directly."""

    def __init__(self, client: EngineClient, cid: str, image: str, body: dict, channel: Channel,
                 limits: Limits, policy: "SandboxPolicy | None" = None, on_close: Any = None,
                 backend: str = "docker") -> None:
        self.id = cid
        self.image = image
        self.policy = policy
        self.limits = limits
        self.hostname = body.get("Hostname", "")
        #: The engine's create body and API version this sandbox was started with, so
        #: `pygent-runner exec` can start the next one from them (cli/exec_cache.py).
        self.create_config = body
        self.api_version = client.version
        self._client = client
        self._channel = channel
        self._closed = False
        self._close_lock = threading.Lock()
        self._cwd = "/workspace"
        self._on_close = on_close
        self._backend = backend
        #: pause (issue 24): when it was paused (monotonic), None while running
        self._paused_at: float | None = None
        self._pause_lock = threading.Lock()
        self._thaw: threading.Thread | None = None
        self.last_used = time.monotonic()
        self._ports: dict[tuple[int, int, str], PortForward] = {}
        self._mux: StreamMux | None = None
        self._ports_lock = threading.Lock()
        lifecycle.track(self)

    # -- creation -----------------------------------------------------------
    @classmethod
    def start(cls, client: EngineClient, body: dict, name: str, *, image: str, limits: Limits,
              policy: "SandboxPolicy | None" = None, on_close: Any = None, backend: str = "docker") -> "DockerSandbox":
        """Create, attach, start, wait for the server's hello.

        Nothing is left behind on failure or interruption (Ctrl-C, SIGTERM): the
        container carries `name` until its id is known.
        Raises: EngineUnavailable, ImageNotFound, RuntimeUnavailable, SandboxError.
        """
        cid = None
        channel = None
        try:
            cid = client.call("POST", "/containers/create", body, params={"name": name}, what="create")["Id"]
            sock, rest = client.upgrade(f"/containers/{cid}/attach", params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
            transport = DockerStream(sock)
            transport.buf += rest
            channel = Channel(transport)
            client.call("POST", f"/containers/{cid}/start", what="start")
            channel.wait_hello(START_TIMEOUT)
        except BaseException as exc:
            if channel is not None:
                channel.close()
            try:
                force_remove(client, cid or name)
            except Exception:
                pass  # the original error is the one to report; gc reclaims by label
            raise map_error(exc, image) from None
        return cls(client, cid, image, body, channel, limits, policy, on_close, backend)

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
        shell_state: bool = False,
        idle_timeout: float | None = None,
        on_chunk: ChunkCallback | None = None,
    ) -> ExecResult:
        self._check_open()
        spec = command_spec(cmd, self.limits.timeout if timeout is None else timeout, env, workdir,
                            max_output or self.limits.max_output, shell_state=shell_state, idle_timeout=idle_timeout)
        started, wall = time.monotonic(), time.time()
        try:
            result = self._channel.run(spec, stdin, on_stdout, on_stderr, on_chunk)
        except ChannelBroken as exc:
            return self._after_broken_stream(exc, started, wall)
        if result.cwd:
            self._cwd = result.cwd
        self.last_used = time.monotonic()
        return result

    #: How a restore's stream reached the sandbox: "socket" (handed over: an engine on this
    #: machine), "channel" (the attach stream: gVisor, a remote engine); None before a restore.
    restored_via: str | None = None

    # -- a live allowlist (issue 25) ----------------------------------------------
    #: Its side of the egress proxy (an egress.SandboxEgress, which imports this module), set by the
    #: backend; None without an allowlist.
    egress: Any = None

    def allow_hosts(self, *hosts: str) -> tuple[str, ...]:
        if self.egress is None:
            return super().allow_hosts(*hosts)
        self._check_open()
        return self.egress.change(self, allow=hosts)

    def deny_hosts(self, *hosts: str) -> tuple[str, ...]:
        if self.egress is None:
            return super().deny_hosts(*hosts)
        self._check_open()
        return self.egress.change(self, deny=hosts)

    # -- ports (issue 25) ----------------------------------------------------------
    def forward(self, port: int, host_port: int = 0, bind: str = "127.0.0.1") -> PortForward:
        check_expose(port, host_port, bind)
        with self._ports_lock:
            self._check_open()
            known = self._ports.get((port, host_port, bind))
            if known is not None:
                return known
            fwd = self._ports[(port, host_port, bind)] = PortForward(self._stream_mux(), port, host_port, bind)
            return fwd

    def stream_mux(self) -> StreamMux:
        """The connections to ports inside, for a carrier other than a host listener: a Ray
        node agent's tunnels (ray/node.py). Raises SandboxClosed, SandboxGone."""
        with self._ports_lock:
            self._check_open()
            return self._stream_mux()

    def _start_ports(self) -> None:
        """Make the stream mux now (a Ray driver's forward(), through the node agent): once a
        foreground command runs, the mux cannot start until it ends (Channel.start_demux), and
        `exec -p` exposes its ports before its command. Raises SandboxClosed, SandboxGone."""
        self.stream_mux()

    def _probe_port(self, port: int, timeout: float) -> dict:
        """{"ok": True} once something inside listens on `port` (PortForward.wait_answering's
        question, asked by a Ray driver through the node agent). Raises SandboxClosed, SandboxGone."""
        check_expose(port, 0, "127.0.0.1")
        return self.stream_mux().probe(port, max(0.1, min(float(timeout), OPEN_TIMEOUT)))

    def _stream_mux(self) -> StreamMux:
        """Made at first use, under _ports_lock. Raises SandboxGone (the channel broke)."""
        try:
            if self._mux is None:
                self._mux = StreamMux(self._channel, self._handoff())
        except ChannelBroken as exc:
            raise broken(self._client, self.id, exc) from None
        return self._mux

    def _handoff(self) -> "Listener | None":
        """This process's handoff listener when the sandbox mounts the handoff directory, else None."""
        from .config import handoff_source

        if handoff_source(self.create_config) is None:
            return None
        from ..handoff import listener

        return listener()

    # -- background commands (issue 14) ------------------------------------------
    def exec_background(
        self,
        cmd: str,
        *,
        timeout: float | None = None,
        env: dict[str, str] | None = None,
        workdir: str | None = None,
        shell_state: bool = False,
    ) -> str:
        self._check_open()
        spec = command_spec(cmd, math.inf if timeout is None else timeout, env, workdir, 0, shell_state=shell_state)
        try:
            return str(self._channel.start_background(spec)["handle"])
        except ChannelBroken as exc:
            raise broken(self._client, self.id, exc) from None

    def process_output(self, handle: str, since: int = 0, max_bytes: int = 16000) -> ProcessOutput:
        return output_of(self._process_op({"op": "output", "handle": str(handle), "since": int(since), "max": int(max_bytes)}))

    def process_status(self, handle: str) -> ProcessStatus:
        return status_of(self._process_op({"op": "status", "handle": str(handle)}))

    def process_input(self, handle: str, data: bytes | str, eof: bool = False) -> ProcessStatus:
        blob = data.encode() if isinstance(data, str) else bytes(data)
        reply = self._process_op({"op": "input", "handle": str(handle), "data": blob, "eof": bool(eof)})
        if "error" in reply and "handle" in reply:
            raise SandboxError(f"background command {handle}: {reply['error']}")
        return status_of(reply)

    def process_kill(self, handle: str) -> ProcessStatus:
        status = status_of(self._process_op({"op": "kill", "handle": str(handle)}))
        for _ in range(200):  # the server reaps it right after the kill: report the end
            if not status.running:
                break
            time.sleep(0.01)
            status = self.process_status(handle)
        return status

    def process_list(self) -> list[ProcessStatus]:
        return [status_of(p) for p in self._process_op({"op": "list"})["processes"]]

    def _process_op(self, op: dict) -> dict:
        self._check_open()
        try:
            return self._channel.process_op(op)
        except ChannelBroken as exc:
            raise broken(self._client, self.id, exc) from None

    @property
    def memory_limit(self) -> str:
        return self.limits.memory

    def recipe(self) -> dict | None:
        if self.policy is not None and self.policy.allow_hosts:
            return None  # wired to the egress proxy of the moment: a replay must find (or start) the current one
        return {"backend": self._backend, "body": self.create_config, "image": self.image,
                "limits": self.limits._asdict(), "api": self.api_version}

    #: The backend's watch of the engine's events (set by the backend that made this sandbox).
    deaths: "DeathWatch | None" = None

    def healthy(self) -> bool:
        """Can this sandbox still run a command? Cheap, no engine call: the death watch's
        record (removed, killed, exited) and the stream's state (closed by the engine)."""
        if self._closed or (self.deaths is not None and self.deaths.reason(self.id) is not None):
            return False
        return not self._channel.peer_closed()

    @property
    def gone_reason(self) -> str:
        """What happened to a sandbox that is not healthy(), in words (asks the engine: failure path only)."""
        return "it was closed" if self._closed else gone_reason(self.deaths or DeathWatch(self._client), self.id)

    def _after_broken_stream(self, exc: Exception, started: float, wall: float) -> ExecResult:
        """A command's stream broke: the whole-sandbox OOM result (gVisor), else raise what happened."""
        if oom_event_since(self._client, self.id, wall):
            note = (f"[pygent] out of memory (limit {self.limits.memory}): the engine killed the whole sandbox "
                    f"{self.id[:12]}; create a new one\n").encode()
            return ExecResult(exit_code=SIGKILL_EXIT_CODE, stderr=note, duration=time.monotonic() - started,
                              oom_killed=True, cwd=self._cwd)
        raise broken(self._client, self.id, exc, self.deaths) from None

    # -- files --------------------------------------------------------------
    def put_archive(self, dest_dir: str, tar_bytes: bytes) -> None:
        self._check_open()
        try:
            self._client.call("PUT", f"/containers/{self.id}/archive", params={"path": self.absolute(dest_dir)},
                              raw=tar_bytes, content_type="application/x-tar", what="put archive")
        except NotFound as exc:
            raise self._not_found(exc, dest_dir) from None
        except EngineAPIError as exc:
            raise map_error(exc, self.image) from None

    def get_archive(self, path: str, max_bytes: int = 256 << 20) -> bytes:
        self._check_open()
        buf = bytearray()
        try:
            for chunk in self._client.stream("GET", f"/containers/{self.id}/archive", params={"path": self.absolute(path)},
                                             what="get archive"):
                buf += chunk
                if len(buf) > max_bytes:
                    raise SandboxError(f"{path} is larger than {max_bytes} bytes; copy less at a time")
        except NotFound as exc:
            raise self._not_found(exc, path) from None
        except EngineAPIError as exc:
            raise map_error(exc, self.image) from None
        return bytes(buf)

    def _not_found(self, exc: NotFound, path: str) -> BaseException:
        """404 on an archive call: the path, or the whole container, is missing."""
        if self._container_exists():
            return FileNotFoundError(f"{path}: no such file or directory in the sandbox")
        return SandboxGone(f"sandbox {self.id[:12]} is gone (removed from outside); create a new one",
                           reason="its container was removed from outside")

    def _container_exists(self) -> bool:
        try:
            self._client.call("GET", f"/containers/{self.id}/json")
            return True
        except NotFound:
            return False
        except Exception:
            return True

    def export_tree(self, path: str, max_bytes: int = 256 << 20) -> bytes:
        """A tar of `path`, made by `tar` inside the container and sent over the command
        stream (~5 ms) rather than the engine's archive API (~70 ms under load)."""
        parent, name = posixpath.split(self.absolute(path).rstrip("/") or "/")
        try:
            seen = self._channel.look(posixpath.join(parent, name))
        except ChannelBroken as exc:
            raise broken(self._client, self.id, exc, self.deaths) from None
        if seen.get("empty"):  # nothing to pack: no process started in the sandbox
            return _empty_dir_tar(name, seen)
        r, data, _ = self._tar_inside(parent, name, max_bytes)
        if r.exit_code != 0:  # no tar in the image, unreadable files: the engine's way
            return self.get_archive(path, max_bytes)
        return data

    def _tar_inside(self, parent: str, name: str, max_bytes: int) -> tuple[ExecResult, bytes, bytes]:
        """`tar -cf - name` run in the sandbox (as its user) over the command stream:
        (result, tar bytes, stderr). Raises FileTooLarge past max_bytes (the command is killed)."""
        buf, err = bytearray(), bytearray()

        def take(chunk: bytes) -> None:
            buf.extend(chunk)
            if len(buf) > max_bytes:
                raise _TooLarge

        try:
            from shlex import quote

            r = self.exec(f"exec tar -C {quote(parent or '/')} -cf - {quote(name)}", timeout=300,
                          on_stdout=take, on_stderr=err.extend)
        except _TooLarge:
            raise FileTooLarge(posixpath.join(parent, name), len(buf), max_bytes) from None
        return r, bytes(buf), bytes(err)

    # -- the file API as the sandbox user: the command server's file frames --------
    def _put_file(self, spec: dict, chunks: Iterable[bytes]) -> dict:
        self._check_open()
        try:
            answer = self._channel.put_file(spec, chunks)
        except ChannelBroken as exc:
            raise broken(self._client, self.id, exc) from None
        return raise_for(answer, spec["path"], "writing")

    def _get_file(self, path: str, max_bytes: int, on_chunk: Callable[[bytes], None]) -> dict:
        self._check_open()
        got = bytearray()
        try:
            # Held back until the answer says the read succeeded (a file over the limit
            # may have sent a part): the caller gets all of it or nothing.
            answer = self._channel.get_file(path, max_bytes, got.extend)
        except ChannelBroken as exc:
            raise broken(self._client, self.id, exc) from None
        raise_for(answer, path, "reading", max_bytes)
        on_chunk(bytes(got))
        return answer

    def _tree_tar(self, path: str, max_bytes: int) -> bytes:
        """A tar made by `tar` running as the sandbox user: what it cannot read is an error."""
        r, data, err = self._tar_inside(*posixpath.split(path.rstrip("/") or "/"), max_bytes)
        if r.exit_code != 0:
            text = err.decode("utf-8", "replace").strip()
            code = EACCES if "Permission denied" in text else ENOENT if "No such file" in text else EIO
            raise OSError(code, f"could not copy it as the sandbox user: {text[-500:]}", path)
        return data

    def _owner(self) -> tuple[int, int]:
        return (self.limits.uid, self.limits.gid)

    def _check_open(self) -> None:
        if self._closed:
            raise SandboxClosed(f"sandbox {self.id[:12]} is closed; create a new one")
        with self._pause_lock:
            self.last_used = time.monotonic()
            if self._paused_at is not None:
                self._resume_locked(wait=False)  # a paused sandbox wakes on its next use

    # -- snapshots and pause (issue 24): the command server's S/T/U frames, the engine's pause ----
    def _snapshot_stream(self, spec: dict, on_chunk: Callable[[bytes], None]) -> dict:
        self._check_open()
        try:
            return self._channel.snapshot(spec, on_chunk)
        except ChannelBroken as exc:
            raise broken(self._client, self.id, exc, self.deaths) from None

    def _restore(self, snapshot: Any) -> None:
        from ...errors import SnapshotError

        self._check_open()
        try:
            answer = self._channel.restore({"paths": list(snapshot.paths)}, snapshot.chunks(), handoff=self._handoff())
        except ChannelBroken as exc:
            raise broken(self._client, self.id, exc, self.deaths) from None
        if "errno" in answer:
            raise SnapshotError(f"restoring the snapshot into sandbox {self.id[:12]} failed at "
                                f"{answer.get('path') or '?'}: {answer.get('error')}")
        if snapshot.cwd:
            self._cwd = snapshot.cwd
        self.restored_via = answer.get("via")

    @property
    def paused(self) -> bool:
        return self._paused_at is not None

    def pause(self) -> None:
        """The engine's pause (the cgroup freezer): processes stop where they are, memory stays.
        A paused sandbox still goes when its owner dies: pause_guard.py removes it."""
        self._check_open()
        with self._pause_lock:
            self._pause_locked()

    def _pause_locked(self) -> None:
        from . import pause_guard

        if self._paused_at is not None:
            return
        self._thawed()
        pause_guard.watch(self._client.host, self.id)
        try:
            self._client.call("POST", f"/containers/{self.id}/pause", what="pause")
        except EngineAPIError as exc:
            pause_guard.unwatch(self.id)
            raise map_error(exc, self.image) from None
        self._paused_at = time.monotonic()

    def resume(self) -> None:
        with self._pause_lock:
            if self._paused_at is not None and not self._closed:
                self._resume_locked()

    def _resume_locked(self, wait: bool = True) -> None:
        """Thaw. wait=False (a call on a paused sandbox): the engine's unpause runs on a thread
        while the call's frames go out (they wait in the stream and run at the thaw), so the
        call costs one unpause, not an unpause and then a command; errors surface as the
        stream's (a container gone) or the next pause's."""
        from . import pause_guard

        self._channel.resumed(time.monotonic() - self._paused_at)
        self._paused_at = None
        self.last_used = time.monotonic()
        if wait:
            self._unpause()
        else:
            self._thaw = threading.Thread(target=self._unpause_quietly, name="pygent-thaw", daemon=True)
            self._thaw.start()
        pause_guard.unwatch(self.id)

    def _unpause(self) -> None:
        try:
            self._client.call("POST", f"/containers/{self.id}/unpause", what="unpause")
        except NotFound as exc:
            raise self._not_found(exc, "/") from None
        except EngineAPIError as exc:
            if "not paused" not in exc.message:
                raise map_error(exc, self.image) from None

    def _unpause_quietly(self) -> None:
        try:
            self._unpause()
        except Exception:
            pass  # the call that woke it sees the stream's end if the container is gone

    def _thawed(self) -> None:
        """Wait for a thaw started by a call (wait=False) before pausing again."""
        thaw, self._thaw = self._thaw, None
        if thaw is not None:
            thaw.join(30)

    def pause_if_idle(self, idle: float) -> bool:
        """Pause when nothing used it for `idle` seconds and no call is under way (idle.py).
        Checked and done under the pause lock, which every call takes on its way in."""
        with self._pause_lock:
            if self._closed or self._paused_at is not None or self._channel.lock.locked():
                return False
            if time.monotonic() - self.last_used < idle:
                return False
            try:
                self._pause_locked()
            except Exception:
                return False
            return True

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
        with self._ports_lock:
            for fwd in self._ports.values():
                fwd.close()
        try:
            if not wait:
                self._channel.close()
                remove_later(self._client, self)
                return
            if self._paused_at is not None:  # a frozen container may refuse a kill: thaw it first
                from . import pause_guard

                try:
                    self._client.call("POST", f"/containers/{self.id}/unpause", what="unpause")
                except Exception:
                    pass
                pause_guard.unwatch(self.id)
            if self._backend == "docker" and not self._channel.lock.locked():
                # Idle: drop the stream first: the server exits on EOF, the container ends
                # by itself and the engine's auto-remove deletes it; wait for that removal
                # (one blocking call), and force it only when it does not come. Why not
                # DELETE ?force=1 at once: removing a running container (kill, wait for
                # the exit event, remove) cost the engine more; with 16 closed at once
                # it was ~15% of the wall (issue 21's 16-at-once rows). With a command in
                # flight (a task cancelled mid-command) the force comes first, as before:
                # dropping the stream under a running command sometimes left close()
                # and the command's reader waiting until the command ended.
                try:
                    self._channel.close()
                    if not removed_within(self._client, self.id, CLOSE_WAIT):
                        force_remove(self._client, self.id)
                        # A loaded engine may still be removing it ("already in progress"):
                        # close() returns once it is gone, as a forced DELETE would.
                        removed_within(self._client, self.id, CLOSE_SLOW)
                finally:
                    lifecycle.untrack(self)
                return
            # Busy, or Podman: remove first, then drop the stream. Closing the stream first started the engine's auto-remove,
            # our remove then answered "already in progress" and close() returned while
            # the container still existed.
            try:
                force_remove(self._client, self.id)
            finally:
                self._channel.close()
                lifecycle.untrack(self)
        finally:
            if self._on_close is not None:
                self._on_close(self)

    def __repr__(self) -> str:
        return f"<DockerSandbox {self.id[:12]} image={self.image} closed={self._closed}>"


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


def oom_event_since(client: EngineClient, cid: str, wall: float) -> bool:
    """Did the engine report an OOM kill in this container since `wall` (epoch seconds)?

    Why the event log: on cgroup v1 (docker 20.10) State.OOMKilled stays false
    while the container runs, so a killed command was reported as a plain 137;
    and under gVisor the host kills the whole sandbox, so nothing inside can tell.
    The 'oom' event may trail the command's end by a moment: look a few times.
    """
    try:
        for attempt in range(6):
            events = client.json_stream("/events", params={
                "since": f"{wall:.6f}", "until": f"{time.time():.6f}",
                "filters": {"container": [cid], "event": ["oom"]},
            }, timeout=10)
            if any(True for _ in events):
                return True
            if attempt < 5:
                time.sleep(0.05)
    except Exception:
        pass
    return False


def broken(client: EngineClient, cid: str, exc: Exception, deaths: "DeathWatch | None" = None) -> SandboxError:
    """Tell an engine outage apart from a dead container, for a message that says what to do.

    Returns EngineUnavailable when the engine does not answer, else SandboxGone saying why
    the container died (the engine's events).
    """
    try:
        client.ping()
    except Exception:
        return EngineUnavailable(f"lost the engine while using sandbox {cid[:12]}")
    reason = gone_reason(deaths or DeathWatch(client), cid, str(exc))
    return SandboxGone(f"sandbox {cid[:12]} is gone: {reason}; create a new one", reason=reason)


def force_remove(client: EngineClient, cid: str) -> None:
    """Remove a container; already gone (auto-remove raced us) is success.

    Raises: SandboxError when the engine refuses for another reason.
    """
    try:
        client.call("DELETE", f"/containers/{cid}", params={"force": 1, "v": 1}, what="remove")
    except NotFound:
        return
    except EngineUnavailable:
        return  # engine down: gc reclaims it by label once the engine is back
    except EngineAPIError as exc:
        if "already in progress" in exc.message or exc.status == 409:
            removed_within(client, cid, REMOVE_WAIT)  # still there after that: gc reclaims it by label later
            return
        raise SandboxError(f"could not remove container {cid[:12]}: {exc.message[:200]}") from None


def removed_within(client: EngineClient, cid: str, timeout: float) -> bool:
    """True once the engine has removed the container (or it never existed); False on timeout."""
    try:
        client.call("POST", f"/containers/{cid}/wait", params={"condition": "removed"}, timeout=timeout)
        return True
    except NotFound:
        return True
    except Exception:
        return False


_reaper: Any = None  # the removal queue, made with its first thread on first use
_reaper_lock = threading.Lock()
_reapers = {"threads": 0, "idle": 0}
#: Most removals waited for at once. Why more than one: delegated tasks count a sandbox
#: until it is gone (issue 27), so a removal waited for behind others held a task slot.
_MAX_REAPERS = 8


def remove_later(client: EngineClient, sandbox: DockerSandbox) -> None:
    """Queue a closed sandbox's removal on a background thread (it stays tracked until done).

    Removals run side by side, on up to _MAX_REAPERS daemon threads started as the
    backlog needs them and kept for the next ones.
    """
    global _reaper
    with _reaper_lock:
        if _reaper is None:
            import queue

            _reaper = queue.Queue()
        start = _reapers["idle"] == 0 and _reapers["threads"] < _MAX_REAPERS
        if start:  # counted idle until it takes its first removal
            _reapers["threads"] += 1
            _reapers["idle"] += 1
        q = _reaper
    q.put((client, sandbox))
    if start:
        threading.Thread(target=_reap_forever, args=(q,), name="pygent-reaper", daemon=True).start()


def _forget_reapers() -> None:
    global _reaper
    _reaper = None  # a forked child has none of the parent's reaper threads
    _reapers.update(threads=0, idle=0)


os.register_at_fork(after_in_child=_forget_reapers)


def _reap_forever(q: Any) -> None:
    while True:
        client, sandbox = q.get()
        with _reaper_lock:
            _reapers["idle"] -= 1
        try:
            # The stream is closed: the main process exits and the engine's auto-remove
            # deletes the container. Wait for that (one blocking call, no polling, no
            # second kill), and force the removal only when it does not happen.
            if not removed_within(client, sandbox.id, 5.0):
                force_remove(client, sandbox.id)
        except Exception:
            pass  # gc reclaims it by label
        finally:
            lifecycle.untrack(sandbox)
            with _reaper_lock:
                _reapers["idle"] += 1


def map_error(exc: BaseException, image: str) -> BaseException:
    """Engine errors -> pygent errors with a next step. Others pass through."""
    if isinstance(exc, NotFound):
        if "image" in exc.message.lower():
            return ImageNotFound(f"image {image!r} not found on the engine: {exc.message}")
        return SandboxGone(f"the container is gone: {exc.message}", reason="its container was removed")
    if isinstance(exc, EngineAPIError):
        text = exc.message[:300] + fix_for(exc.message)
        if "runtime" in exc.message.lower():
            return RuntimeUnavailable(text)
        return SandboxError(text)
    return exc  # ours already (ChannelBroken, PygentError), or not an engine error
