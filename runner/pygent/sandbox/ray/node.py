"""The node agent: one Ray actor per (driver, node), the only thing that talks to that node's engine.

Why an actor that wraps the local backend: a sandbox on a Ray node is then
exactly a local sandbox (same hardened create body, same command server, same
errors and limits), and the agent process is its owner the way a local
process is: every container's stdin is the agent's attach stream, so when the
agent dies (killed, its node removed, or its driver gone: Ray kills a dead
driver's actors) the server sees EOF and the engine removes the container.

What it refuses (Ray has no authentication; anyone who can submit work can
call it, see docs/scale.md):
- it never takes an engine create body or any engine field: only an image
  reference and a `SandboxPolicy`, which it validates again and turns into the
  create body itself (config.create_body, the one hardened path);
- policies that mount host paths (`mounts`, `workspace`): the node's file
  system is not the caller's;
- sandbox methods outside the `Sandbox` API (`SANDBOX_CALLS`);
- sandboxes it did not make (ids are looked up in its own table; gc and
  remove touch only containers labelled with its node id).
"""

from __future__ import annotations

import os
import pickle
import threading
from typing import Any

from ...errors import ConfigError, SandboxClosed, SandboxError, SandboxGone
from .. import lifecycle

#: The custom resource a node offers: one unit per sandbox it may hold.
SLOT = "pygent_slot"
#: Slots a node offers when PYGENT_RAY_SLOTS is unset.
DEFAULT_SLOTS = 8

#: The Sandbox methods a caller may invoke through the agent, and nothing else.
SANDBOX_CALLS = frozenset({
    "exec", "exec_background", "process_output", "process_status", "process_input", "process_kill",
    "process_list", "put_archive", "get_archive", "export_tree", "_put_file", "_tree_tar", "_restore",
    "pause", "resume", "_probe_port", "_start_ports", "allow_hosts", "deny_hosts",
})


def node_resources(engine: str | None = None) -> dict[str, float]:
    """The resources `ray start --resources` should give this node: PYGENT_RAY_SLOTS slots
    when its engine answers, none when it does not (so Ray never places a sandbox here).
    Never raises."""
    from ..registry import get_backend

    try:
        alive = get_backend(engine).checks()[0].ok  # the first check is "the engine answers"
    except Exception:  # noqa: BLE001 - no engine, no slots
        alive = False
    slots = int(os.environ.get("PYGENT_RAY_SLOTS") or DEFAULT_SLOTS)
    return {SLOT: float(slots)} if alive and slots > 0 else {}


#: What a driver may call on the agent (NodeAgent.run dispatches to these only).
AGENT_METHODS = frozenset({"hello", "create", "call", "get_file", "snapshot_stream", "healthy", "close", "list_ours", "remove", "report"})


def pack(exc: BaseException) -> tuple[type, tuple, dict]:
    """An exception as (class, args, attributes): what unpack() rebuilds it from."""
    return type(exc), exc.args, dict(getattr(exc, "__dict__", {}))


def unpack(packed: tuple[type, tuple, dict]) -> BaseException:
    """The exception pack() took apart, without calling its __init__ (signatures differ)."""
    cls, args, attrs = packed
    exc = cls.__new__(cls, *args)  # OSError's __new__ sets errno, strerror and filename from args
    exc.args = args
    exc.__dict__.update(attrs)
    return exc


class NodeAgent:
    """Made by RayBackend (ray.remote, pinned to one node, owned by the driver). Threaded:
    calls on different sandboxes run at once, as they would in one local process. Its calls
    come as actor calls or, faster, over its direct channel (direct.py), both into `run`."""

    def __init__(self, node_id: str, engine: str | None = None) -> None:
        from ..registry import get_backend

        self.node_id = node_id
        lifecycle.EXTRA_LABELS[lifecycle.LABEL_RAY_NODE] = node_id
        self.local = get_backend(engine if engine and engine != "ray" else _local_engine_name())
        self._sandboxes: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.direct = None
        try:
            import ray

            from .direct import DirectServer

            self.direct = DirectServer(self.run, ray.util.get_node_ip_address(), tunnel=self.tunnel)
        except Exception:  # noqa: BLE001 - no direct channel: the driver uses Ray's calls
            pass

    def run(self, call: bytes) -> bytes:
        """The one actor method: pickled (method, args) in; pickled (True, result) or
        (False, the packed exception) out.

        Why one bytes each way: Ray serializes every argument and the result of a call on
        its own (cloudpickle, msgpack framing), which for an exec's five arguments and its
        ExecResult cost ~0.5 ms per call here; plain pickle of one tuple costs ~20 µs. (It
        trusts its callers no less than Ray does: Ray unpickles every argument it carries.)
        Why not let Ray raise: Ray wraps an actor's exception in RayTaskError, and it
        rebuilds exceptions by calling their class with .args, which loses fields such
        as SandboxGone.reason and breaks classes with other signatures (FileTooLarge).
        """
        try:
            method, args = pickle.loads(call)
            if method not in AGENT_METHODS:
                raise ConfigError(f"the node agent refuses {method!r}: not one of its calls")
            return pickle.dumps((True, getattr(self, method)(*args)), 5)
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the caller as itself
            try:
                return pickle.dumps((False, pack(exc)), 5)
            except Exception:  # noqa: BLE001 - an exception that does not pickle: its text
                return pickle.dumps((False, pack(SandboxError(f"{type(exc).__name__}: {exc}"))), 5)

    # -- identity -------------------------------------------------------------
    def hello(self) -> dict[str, Any]:
        """Who answers: node, pid, versions (the driver compares them)."""
        import ray

        from ...version import package_version

        direct = None if self.direct is None else [*self.direct.address, self.direct.secret.hex()]
        return {"node_id": self.node_id, "pid": os.getpid(), "ray": ray.__version__, "pygent": package_version(),
                "engine": self.local.name, "address": self.local.address, "direct": direct}

    # -- sandboxes ------------------------------------------------------------
    def create(self, image: str, policy: Any, pooled: bool = False) -> dict[str, Any]:
        """Start one sandbox under `policy` (validated here again); its id and limits.

        Raises: ConfigError (host mounts asked for), what the local backend's create raises.
        """
        from ..policy import SandboxPolicy

        checked = SandboxPolicy.model_validate(policy.model_dump() if hasattr(policy, "model_dump") else policy)
        if checked.mounts or checked.workspace is not None:
            raise ConfigError("the Ray backend does not mount host directories (mounts, workspace): the node's "
                              "file system is not the caller's; copy files in with upload() or write_file()")
        sandbox = self.local.create(self.local.resolve_image(image), checked, pooled=pooled)
        with self._lock:
            self._sandboxes[sandbox.id] = sandbox
        return {"id": sandbox.id, "memory_limit": sandbox.memory_limit, "hostname": getattr(sandbox, "hostname", ""),
                "image": getattr(sandbox, "image", "") or image}

    def call(self, sandbox_id: str, method: str, args: tuple = (), kwargs: dict | None = None) -> Any:
        """One Sandbox API call on one of this agent's sandboxes.

        Raises: ConfigError (not a Sandbox API method), SandboxClosed (not one of ours, or
        closed), and whatever the local sandbox raises (the same errors as locally).
        """
        if method not in SANDBOX_CALLS:
            raise ConfigError(f"the node agent refuses {method!r}: not a Sandbox API call")
        return getattr(self._get(sandbox_id), method)(*args, **(kwargs or {}))

    def get_file(self, sandbox_id: str, path: str, max_bytes: int) -> tuple[dict, bytes]:
        """_get_file with its chunks gathered here (a callback cannot cross Ray)."""
        buf = bytearray()
        answer = self._get(sandbox_id)._get_file(path, max_bytes, buf.extend)
        return answer, bytes(buf)

    def snapshot_stream(self, sandbox_id: str, spec: dict) -> tuple[dict, bytes]:
        """_snapshot_stream with its entry stream gathered here (a callback cannot cross Ray);
        the server inside checks spec's paths and limit, as locally."""
        buf = bytearray()
        answer = self._get(sandbox_id)._snapshot_stream(dict(spec), buf.extend)
        return answer, bytes(buf)

    def tunnel(self, request: bytes, sock: Any) -> None:
        """A driver's connection (authenticated on the direct channel) carried to
        127.0.0.1:PORT inside one of this agent's sandboxes, exactly as a local expose()
        carries a host connection: over the sandbox's channel, or handed over. It opens no
        listener on the node. A bad request, an unknown sandbox or a port nobody listens on
        resets the connection, as locally. Never raises; runs until the connection ends."""
        from ..forward import check_expose, reset

        try:
            sandbox_id, port_text = request.decode("ascii").split(" ")
            port = int(port_text)
            check_expose(port, 0, "127.0.0.1")
            conn = self._get(sandbox_id).stream_mux().connection(sock, port)
        except Exception:  # noqa: BLE001 - malformed, not ours, closed or gone: a reset says it
            reset(sock)
            return
        conn.run()

    def healthy(self, sandbox_id: str) -> bool:
        with self._lock:
            sandbox = self._sandboxes.get(sandbox_id)
        return sandbox is not None and sandbox.healthy()

    def close(self, sandbox_id: str, wait: bool = True) -> None:
        with self._lock:
            sandbox = self._sandboxes.pop(sandbox_id, None)
        if sandbox is not None:
            sandbox.close(wait=wait)

    def _get(self, sandbox_id: str) -> Any:
        with self._lock:
            sandbox = self._sandboxes.get(sandbox_id)
        if sandbox is None:
            raise SandboxClosed(f"sandbox {sandbox_id[:12]} is not open on node {self.node_id[:12]}")
        if not sandbox.healthy() and not sandbox.closed:
            raise SandboxGone(f"the sandbox {sandbox_id[:12]} on node {self.node_id[:12]} is gone", "its container died")
        return sandbox

    # -- operators ------------------------------------------------------------
    def list_ours(self) -> list[Any]:
        """This node's sandboxes only (agents of several nodes may share one engine)."""
        return [c for c in self.local.list_ours() if c.labels.get(lifecycle.LABEL_RAY_NODE) == self.node_id]

    def remove(self, sandbox_id: str) -> None:
        """Remove one of this node's sandboxes (by its label). Raises: ConfigError (another node's)."""
        if not any(c.id == sandbox_id for c in self.list_ours()):
            raise ConfigError(f"{sandbox_id[:12]} is not a sandbox of node {self.node_id[:12]}")
        self.close(sandbox_id, wait=True)
        self.local.remove(sandbox_id)

    def report(self) -> dict[str, Any]:
        """For doctor: the engine's checks, the sandboxes this agent holds, the tooling volume."""
        checks = self.local.checks()
        tooling = "unknown"
        try:
            from ..docker import tooling as tool

            name = tool.volume_name(self.local.resolve_image("tooling", build_missing=False))
            tooling = "ready" if tool._ready(self.local.client, name) else f"{name} not populated yet (made on first sandbox)"
        except Exception as exc:  # noqa: BLE001 - doctor never raises
            tooling = f"not available: {str(exc)[:120]}"
        with self._lock:
            held = len(self._sandboxes)
        return {"node_id": self.node_id, "checks": checks, "held": held, "tooling": tooling}


def _local_engine_name() -> str:
    """The node's own engine: PYGENT_RAY_ENGINE (docker, podman), else the local choice."""
    from ..registry import chosen_name

    name = os.environ.get("PYGENT_RAY_ENGINE") or ""
    if name:
        return name
    saved = os.environ.pop("PYGENT_BACKEND", None)  # the driver's "ray" must not recurse here
    try:
        return chosen_name()
    finally:
        if saved is not None:
            os.environ["PYGENT_BACKEND"] = saved


def main(argv: list[str] | None = None) -> int:
    """`python -m pygent.sandbox.ray.node --resources`: the JSON for `ray start --resources`."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m pygent.sandbox.ray.node")
    parser.add_argument("--resources", action="store_true", help="print this node's pygent slots as JSON")
    args = parser.parse_args(argv)
    if args.resources:
        print(json.dumps(node_resources(_local_engine_name())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
