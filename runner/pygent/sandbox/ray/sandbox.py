"""RaySandbox: the whole Sandbox API as calls on the node agent that holds the container.

Results are the same dataclasses (ExecResult, ProcessStatus, ProcessOutput) and
failures the same exceptions as locally: the node agent runs the local
sandbox and sends back what it returned or raised. What cannot cross Ray is a
callback: on_stdout / on_stderr / on_chunk get the command's output once, when
it ends (the result keeps it as the local streaming rules say), and stdin given
as an iterable is sent as one buffer.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable, Iterable

from ...errors import SandboxClosed, SandboxGone
from .. import lifecycle
from ..base import ChunkCallback, OutputCallback, Sandbox
from ..result import ExecResult

if TYPE_CHECKING:
    from ..forward import PortForward
    from ..policy import SandboxPolicy
    from ..processes import ProcessOutput, ProcessStatus


class RaySandbox(Sandbox):
    """A sandbox on one node of a Ray cluster. Made by RayBackend.create, never directly."""

    # backend: the RayBackend (typed Any: backend.py imports this module, not the other way round)
    def __init__(self, backend: Any, node_id: str, info: dict, placement: Any, policy: "SandboxPolicy") -> None:
        self.id = info["id"]
        self.node_id = node_id
        self.hostname = info.get("hostname", "")
        self.policy = policy
        #: The image as the node's engine resolved it (what a snapshot records, to restore from).
        self.image = info.get("image", "")
        self._backend = backend
        self._memory = info.get("memory_limit") or policy.memory
        self._placement = placement
        #: The agent that holds it: once a call found that agent dead, the backend drops it.
        self._agent = backend._agents.get(node_id)
        self._closed = False
        self._dead: str | None = None
        #: pause() was the last call: any other call resumes it on its node, as locally
        self._paused = False
        self._lock = threading.Lock()
        self._ports: dict[tuple[int, int, str], "PortForward"] = {}
        lifecycle.track(self)

    @property
    def backend_name(self) -> str:
        return "ray"

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self._closed:
            raise SandboxClosed(f"sandbox {self.id[:12]} is closed")
        if method != "pause":
            self._paused = False  # the node's sandbox wakes on any call (resume included)
        try:
            return self._backend.call(self.node_id, "call", self.id, method, args, kwargs)
        except SandboxGone as exc:
            self._dead = exc.reason
            raise

    # -- commands -----------------------------------------------------------------
    def exec(self, cmd: str, *, timeout: float | None = None, env: dict[str, str] | None = None,
             workdir: str | None = None, stdin: bytes | Iterable[bytes] | None = None, max_output: int | None = None,
             on_stdout: OutputCallback | None = None, on_stderr: OutputCallback | None = None,
             shell_state: bool = False, idle_timeout: float | None = None, on_chunk: ChunkCallback | None = None) -> ExecResult:
        if stdin is not None and not isinstance(stdin, (bytes, bytearray, memoryview)):
            stdin = b"".join(stdin)
        result: ExecResult = self._call("exec", cmd, timeout=timeout, env=env, workdir=workdir, stdin=stdin,
                                        max_output=max_output, shell_state=shell_state, idle_timeout=idle_timeout)
        for name, data in (("stdout", result.stdout), ("stderr", result.stderr)):
            if data and on_chunk is not None:
                on_chunk(name, data)
        for name, callback in (("stdout", on_stdout), ("stderr", on_stderr)):
            if callback is not None:  # streamed output is not kept in the result, as locally
                if getattr(result, name):
                    callback(getattr(result, name))
                setattr(result, name, b"")
        return result

    def exec_background(self, cmd: str, *, timeout: float | None = None, env: dict[str, str] | None = None,
                        workdir: str | None = None, shell_state: bool = False) -> str:
        return self._call("exec_background", cmd, timeout=timeout, env=env, workdir=workdir, shell_state=shell_state)

    def process_output(self, handle: str, since: int = 0, max_bytes: int = 16000) -> "ProcessOutput":
        return self._call("process_output", handle, since, max_bytes)

    def process_status(self, handle: str) -> "ProcessStatus":
        return self._call("process_status", handle)

    def process_input(self, handle: str, data: bytes | str, eof: bool = False) -> "ProcessStatus":
        return self._call("process_input", handle, data, eof)

    def process_kill(self, handle: str) -> "ProcessStatus":
        return self._call("process_kill", handle)

    def process_list(self) -> "list[ProcessStatus]":
        return self._call("process_list")

    # -- a live allowlist: the node's sandbox holds it (its egress proxy is on the node's engine) --
    def allow_hosts(self, *hosts: str) -> tuple[str, ...]:
        return self._call("allow_hosts", *hosts)

    def deny_hosts(self, *hosts: str) -> tuple[str, ...]:
        return self._call("deny_hosts", *hosts)

    # -- ports: a listener here, each connection tunnelled to the node agent (ports.py) ----
    def forward(self, port: int, host_port: int = 0, bind: str = "127.0.0.1") -> "PortForward":
        """As locally, the listener on this (the driver's) machine. Raises SandboxError (bad
        port, host port taken, no direct channel to the node agent), SandboxClosed."""
        from ..forward import PortForward, check_expose
        from .ports import Tunnels

        check_expose(port, host_port, bind)
        with self._lock:
            if self._closed:
                raise SandboxClosed(f"sandbox {self.id[:12]} is closed")
            known = self._ports.get((port, host_port, bind))
            if known is not None:
                return known
            tunnels = Tunnels(self)
            tunnels.channel()  # no direct channel: say so now, not at the first connection
            self._call("_start_ports")  # before a command runs, as a local forward() is (docker/sandbox.py)
            fwd = self._ports[(port, host_port, bind)] = PortForward(tunnels, port, host_port, bind)
            return fwd

    # -- files ----------------------------------------------------------------------
    def put_archive(self, dest_dir: str, tar_bytes: bytes) -> None:
        self._call("put_archive", dest_dir, tar_bytes)

    def get_archive(self, path: str, max_bytes: int = 256 << 20) -> bytes:
        return self._call("get_archive", path, max_bytes)

    def export_tree(self, path: str, max_bytes: int = 256 << 20) -> bytes:
        """The tar comes back through Ray's object store (large values travel as objects)."""
        return self._call("export_tree", path, max_bytes)

    def _put_file(self, spec: dict, chunks: Iterable[bytes]) -> dict:
        return self._call("_put_file", spec, [b"".join(chunks)])

    def _get_file(self, path: str, max_bytes: int, on_chunk: Callable[[bytes], None]) -> dict:
        if self._closed:
            raise SandboxClosed(f"sandbox {self.id[:12]} is closed")
        answer, data = self._backend.call(self.node_id, "get_file", self.id, path, max_bytes)
        if data:
            on_chunk(data)
        return answer

    # -- snapshots (issue 24): the node's sandbox takes and restores them; bytes travel by Ray ----
    def _snapshot_stream(self, spec: dict, on_chunk: Callable[[bytes], None]) -> dict:
        if self._closed:
            raise SandboxClosed(f"sandbox {self.id[:12]} is closed")
        try:
            answer, data = self._backend.call(self.node_id, "snapshot_stream", self.id, spec)
        except SandboxGone as exc:
            self._dead = exc.reason
            raise
        if data:
            on_chunk(data)
        return answer

    def _restore(self, snapshot: Any) -> None:
        self._call("_restore", snapshot)

    def _tree_tar(self, path: str, max_bytes: int) -> bytes:
        return self._call("_tree_tar", path, max_bytes)

    # -- pause (issue 24): the node's engine freezes the container; its pause guard runs on that node ----
    def pause(self) -> None:
        """The node's engine pause; any later call resumes it first, as locally. A paused
        sandbox still goes with its node agent (the node's pause guard removes it).
        Raises: SnapshotUnsupported (the node's engine cannot pause), SandboxGone, SandboxClosed."""
        self._call("pause")
        self._paused = True

    def resume(self) -> None:
        self._call("resume")

    @property
    def paused(self) -> bool:
        return self._paused and not self._closed

    def _owner(self) -> tuple[int, int]:
        return (self.policy.uid, self.policy.gid)

    # -- life -------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def memory_limit(self) -> str:
        return self._memory

    def healthy(self) -> bool:
        """No round trip: dead once a call found its container, its node or its agent gone."""
        return not self._closed and self._dead is None and self._backend._agents.get(self.node_id) is self._agent

    def close(self, wait: bool = True) -> None:
        """Remove the container on its node, then free its slot. Idempotent; a dead node is success.
        wait=False returns at once and removes it on a thread: the slot (and a delegated task's
        place under PYGENT_MAX_TASKS, lifecycle.when_gone) is free only once it is gone, either way."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            ports, self._ports = list(self._ports.values()), {}
        for fwd in ports:
            fwd.close()
        if wait:
            self._remove()
        else:
            threading.Thread(target=self._remove, name="pygent-ray-close", daemon=True).start()

    def _remove(self) -> None:
        try:
            self._backend.call(self.node_id, "close", self.id, True)
        except Exception:  # noqa: BLE001 - node gone (its containers went with its agent) or cluster gone
            pass
        finally:
            if self._placement is not None:  # None: a task loop's view of its driver's sandbox
                # While its node lives the group may serve this driver's next sandbox (first: the
                # task that untrack lets go of its slot wait takes it).
                self._backend.release(self._placement, self.node_id, self.policy, reuse=self._dead is None)
            lifecycle.untrack(self)  # gone now: what waited for its slot goes on
