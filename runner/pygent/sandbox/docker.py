"""The Docker backend: one container per sandbox, hardened from its creation.

Commands go to the in-container server over the attach stream when the image
has one (label io.pygent.server), else through plain `docker exec` with the
same guarantees enforced from the host (slower: ~50 ms a call).
"""

from __future__ import annotations

import math
import re
import threading
import time
import uuid
from typing import TYPE_CHECKING, Iterable

from ..errors import (
    EngineUnavailable,
    ImageNotFound,
    RuntimeUnavailable,
    SandboxClosed,
    SandboxError,
)
from . import lifecycle
from .base import OutputCallback, Sandbox
from .channel import GRACE, Channel, ChannelBroken, DockerStream
from .engine import get_client, is_engine_error
from .policy import SandboxPolicy
from .result import TIMEOUT_EXIT_CODE, ExecResult, HeadTail

if TYPE_CHECKING:
    import docker

#: Seconds a freshly started server has to say hello.
START_TIMEOUT = 30.0
_CWD_MARK = b"\x1ePYGENT_CWD="
_runtimes: set[str] | None = None


def _engine_runtimes(client: "docker.DockerClient") -> set[str]:
    global _runtimes
    if _runtimes is None:
        _runtimes = set((client.info().get("Runtimes") or {}).keys())
    return _runtimes


def container_config(image: str, policy: SandboxPolicy, server: str | None, pooled: bool) -> tuple[dict, dict]:
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
        tmpfs={"/tmp": f"size={policy.tmp_size},mode=1777,nosuid,nodev"},
        mounts=mounts,
        runtime=policy.runtime,
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
        tag = resolve_image(image or get_settings().pygent_image)
        server = image_has_server(tag)
        create, host = container_config(tag, policy, server, pooled)
        api = client.api
        cid = None
        try:
            cid = api.create_container(host_config=api.create_host_config(**host), **create)["Id"]
            channel = None
            sock = api.attach_socket(cid, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
            channel = Channel(getattr(sock, "_sock", sock))
            api.start(cid)
            if server:
                channel.wait_hello(START_TIMEOUT)
        except BaseException as exc:
            if cid is not None:
                _force_remove(cid)
            raise _map_error(exc, tag) from None
        sandbox = cls(cid, tag, policy, channel, create["hostname"])
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
        if not isinstance(cmd, str) or "\0" in cmd:
            raise SandboxError("the command must be a string without NUL bytes")
        timeout = self.policy.timeout if timeout is None else float(timeout)
        if timeout <= 0:
            raise SandboxError("timeout must be positive (math.inf for no limit)")
        limit = None if math.isinf(timeout) else timeout
        cap = max_output or self.policy.max_output
        env = {str(k): str(v) for k, v in (env or {}).items()}
        if self._plain:
            return self._exec_plain(cmd, limit, env, workdir, stdin, cap, on_stdout, on_stderr)
        spec = {"cmd": cmd, "timeout": limit, "env": env, "cwd": workdir, "max_output": cap}
        try:
            return self._channel.run(spec, stdin, on_stdout, on_stderr)  # type: ignore[union-attr]
        except ChannelBroken as exc:
            raise self._broken(exc) from None

    def _broken(self, exc: Exception) -> SandboxError:
        """Tell an engine outage apart from a dead container, for a message that says what to do."""
        try:
            get_client().api.ping()
        except Exception:
            from .engine import reset_client

            reset_client()
            return EngineUnavailable(f"lost the engine while using sandbox {self.id[:12]}")
        return SandboxError(f"sandbox {self.id[:12]} is gone ({exc}); create a new one")

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
        streaming = on_stdout is not None or on_stderr is not None
        script = cmd if streaming else "trap 'printf \"\\036PYGENT_CWD=%s\" \"$PWD\" >&2' EXIT; " + cmd
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
        if stdin is not None:
            data = stdin if isinstance(stdin, (bytes, bytearray)) else b"".join(stdin)
            threading.Thread(target=_send_and_close, args=(raw, bytes(data)), daemon=True).start()
        out, err = HeadTail(cap), HeadTail(cap)
        deadline = None if timeout is None else start + timeout
        timed_out = False
        try:
            while True:
                try:
                    kind, data = stream.recv(deadline)
                except ChannelBroken:
                    if deadline is not None and time.monotonic() >= deadline and not timed_out:
                        timed_out = True
                        self._kill_marked(marker)
                        deadline = time.monotonic() + GRACE
                        continue
                    break
                if kind == 1:
                    on_stdout(data) if on_stdout else out.add(data)
                else:
                    on_stderr(data) if on_stderr else err.add(data)
        finally:
            raw.close()
        code = TIMEOUT_EXIT_CODE if timed_out else (api.exec_inspect(exec_id).get("ExitCode") or 0)
        stderr = err.value()
        cut = stderr.rfind(_CWD_MARK)
        if cut >= 0:
            if not timed_out:
                self._cwd = stderr[cut + len(_CWD_MARK) :].decode("utf-8", "replace") or self._cwd
            stderr = stderr[:cut]
        return ExecResult(
            exit_code=code, stdout=out.value(), stderr=stderr, duration=time.monotonic() - start,
            timed_out=timed_out, stdout_truncated=out.omitted, stderr_truncated=err.omitted,
            oom_killed=code == 137 and not timed_out and self._oom_killed(), cwd=self._cwd,
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

    def _owner(self) -> tuple[int, int]:
        return (self.policy.uid, self.policy.gid)

    def _check_open(self) -> None:
        if self._closed:
            raise SandboxClosed(f"sandbox {self.id[:12]} is closed; create a new one")

    # -- removal ------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        if self._channel is not None:
            self._channel.close()
        _force_remove(self.id)
        lifecycle.untrack(self)

    def __repr__(self) -> str:
        return f"<DockerSandbox {self.id[:12]} image={self.image} closed={self._closed}>"


def _send_and_close(sock: object, data: bytes) -> None:
    try:
        sock.sendall(data)  # type: ignore[attr-defined]
        sock.shutdown(1)  # type: ignore[attr-defined]
    except OSError:
        pass


def _force_remove(cid: str) -> None:
    """Remove a container; already gone (auto-remove raced us) is success."""
    try:
        get_client().api.remove_container(cid, force=True, v=True)
    except Exception as exc:
        text = str(exc)
        if "No such container" in text or "already in progress" in text or "404" in text:
            return
        if is_engine_error(exc):
            return  # engine down: gc reclaims it by label once the engine is back
        raise SandboxError(f"could not remove container {cid[:12]}: {text[:200]}") from None


def _map_error(exc: BaseException, image: str, path: str | None = None) -> BaseException:
    """docker-py/requests errors -> pygent errors with a next step. Others pass through."""
    from docker.errors import APIError, DockerException, NotFound

    from ..errors import PygentError

    if isinstance(exc, PygentError) or not isinstance(exc, Exception):
        return exc
    if isinstance(exc, ChannelBroken):
        return exc
    if is_engine_error(exc) or (isinstance(exc, DockerException) and not isinstance(exc, APIError)):
        return EngineUnavailable(str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
    if isinstance(exc, NotFound):
        if path is not None:
            return FileNotFoundError(f"{path}: no such file or directory in the sandbox")
        if "image" in str(exc).lower():
            return ImageNotFound(f"image {image!r} not found on the engine: {exc.explanation}")
        return SandboxError(f"the container is gone: {exc.explanation}")
    if isinstance(exc, APIError):
        text = str(exc.explanation or exc)
        if re.search(r"runtime", text, re.I):
            return RuntimeUnavailable(text[:300])
        return SandboxError(text[:300])
    return exc
