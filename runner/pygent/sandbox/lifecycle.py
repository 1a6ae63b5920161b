"""Who owns which container, and making sure they all go away.

Three nets, from cheapest to last resort:
1. close() / context managers / atexit (also reached on SIGINT and SIGTERM,
   which we turn into a normal interpreter exit when nobody else handles them);
2. the container's stdin is the owner's attach stream with StdinOnce: when the
   owner dies (even by SIGKILL) the server sees EOF, exits, and the engine
   auto-removes the container;
3. labels (owner pid, host, session, creation time) let `gc` (run by hand, and
   automatically once per process in the background) remove what is left.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import Sandbox

LABEL_PREFIX = "io.pygent"
LABEL_OWNER_PID = f"{LABEL_PREFIX}.owner-pid"
LABEL_OWNER_HOST = f"{LABEL_PREFIX}.owner-host"
LABEL_SESSION = f"{LABEL_PREFIX}.session"
LABEL_CREATED = f"{LABEL_PREFIX}.created"
LABEL_POOLED = f"{LABEL_PREFIX}.pooled"
LABEL_MANAGED = f"{LABEL_PREFIX}.managed"
#: What the sandbox is for (`pygent-runner ps`): agent, task, mcp, exec, pool, or sandbox (direct API use).
LABEL_PURPOSE = f"{LABEL_PREFIX}.purpose"
#: On a sandbox's own scratch volumes (/workspace, /tmp): gc removes them once dangling.
LABEL_SCRATCH = f"{LABEL_PREFIX}.scratch"
#: On a sandbox a Ray node agent made: the Ray node id (several agents may share one engine).
LABEL_RAY_NODE = f"{LABEL_PREFIX}.ray-node"

#: Labels this process adds to every sandbox it makes (a Ray node agent sets its node id here).
EXTRA_LABELS: dict[str, str] = {}

SESSION_ID = os.urandom(6).hex()  # not uuid: importing it costs ~3 ms of every exec
HOSTNAME = socket.gethostname()

_live: "weakref.WeakSet[Sandbox]" = weakref.WeakSet()
_lock = threading.Lock()
_installed = False


def pid_alive(pid: int) -> bool:
    """Is process `pid` of this host alive (one we may not signal counts as alive)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


#: The purpose new sandboxes of this context get (set with `purpose()`); threads start with the default.
PURPOSE: ContextVar[str] = ContextVar("pygent_sandbox_purpose", default="sandbox")


@contextmanager
def purpose(name: str) -> Iterator[None]:
    """Sandboxes created or taken from a pool inside this block are for `name` (ps shows it)."""
    token = PURPOSE.set(name)
    try:
        yield
    finally:
        PURPOSE.reset(token)


def claims_dir() -> str:
    """Where processes note what the warm sandboxes they took from a pool are for (one file each).

    Why files: an engine's labels cannot change after creation, and a pooled sandbox's
    purpose is known only when it is handed out; `ps` runs in another process.
    """
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/pygent-runner-{os.getuid()}"
    return os.path.join(base, "pygent-runner", "claims")


_claims: dict[str, str] = {}


def claim(sandbox_id: str, what: str) -> None:
    """Note that the pooled sandbox `sandbox_id` now serves `what` (rewrites this process's claims file)."""
    with _lock:
        live_ids = {s.id for s in _live}
        for old in [k for k in _claims if k not in live_ids and k != sandbox_id]:
            del _claims[old]
        _claims[sandbox_id] = what
        data = json.dumps({"pid": os.getpid(), "host": HOSTNAME, "claims": _claims})
    directory = claims_dir()
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        path = os.path.join(directory, f"{HOSTNAME}-{os.getpid()}.json")
        tmp = f"{path}.{threading.get_ident()}.tmp"
        with open(tmp, "w") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError:
        pass  # ps then shows "pool": nothing else depends on it


def read_claims() -> dict[str, str]:
    """Every live process's claims, sandbox id -> purpose; files of processes that are gone are removed."""
    out: dict[str, str] = {}
    directory = claims_dir()
    try:
        names = os.listdir(directory)
    except OSError:
        return out
    for name in names:
        path = os.path.join(directory, name)
        try:
            with open(path) as f:
                entry = json.load(f)
        except (OSError, ValueError):
            continue
        if entry.get("host") == HOSTNAME and not pid_alive(int(entry.get("pid", 0))):
            try:
                os.unlink(path)
            except OSError:
                pass
            continue
        out.update(entry.get("claims") or {})
    return out


def owner_labels(pooled: bool = False) -> dict[str, str]:
    labels = {
        LABEL_MANAGED: "1",
        LABEL_PURPOSE: "pool" if pooled else PURPOSE.get(),
        LABEL_OWNER_PID: str(os.getpid()),
        LABEL_OWNER_HOST: HOSTNAME,
        LABEL_SESSION: SESSION_ID,
        LABEL_CREATED: f"{time.time():.3f}",
    }
    if pooled:
        labels[LABEL_POOLED] = "1"
    labels.update(EXTRA_LABELS)
    return labels


def track(sandbox: "Sandbox") -> None:
    """Remember a live sandbox so interpreter exit and signals remove it."""
    _install()
    with _lock:
        _live.add(sandbox)


def untrack(sandbox: "Sandbox") -> None:
    with _lock:
        _live.discard(sandbox)


def close_all() -> None:
    """Close every sandbox this process still has (atexit, signals, tests)."""
    with _lock:
        live = list(_live)
    for sandbox in live:
        try:
            sandbox.close()
        except Exception:
            pass


def live() -> "list[Sandbox]":
    """The sandboxes this process still tracks (open, or closed with their removal in flight)."""
    with _lock:
        return list(_live)


def live_count() -> int:
    with _lock:
        return len(_live)


def _on_sigterm(signum: int, frame: object) -> None:
    # Turn SIGTERM into SystemExit so finally-blocks and atexit run and remove containers.
    raise SystemExit(128 + signum)


def _install() -> None:
    global _installed
    if _installed:
        return
    with _lock:
        if _installed:
            return
        _installed = True
        atexit.register(close_all)
        if threading.current_thread() is threading.main_thread():
            try:
                if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
                    signal.signal(signal.SIGTERM, _on_sigterm)
            except (ValueError, OSError):
                pass
