"""The shared egress proxy's lifecycle: find or start it, wire sandboxes to it, reclaim it.

Why this shape (see docs/security.md): an allowlisted sandbox keeps the
strictest network there is, none at all; its only way out is a unix socket,
in a volume of the proxy's that it mounts read-only, reached through a relay
on its own loopback (egress_proxy.relay). We tried the Docker `--internal`
network first: on this engine (20.10) a container there still gets a default
route through the bridge, and the host answers on the bridge's address, so
the host, its gateway and the other sandboxes stay reachable. A socket has
no route to anything.

One proxy per (allowlist, egress network, pinned hosts, linger), named after
that key, so every process with the same allowlist shares it: the name makes
the start race-free across processes (the engine refuses a second container
of that name) and the allowlist is fixed at the proxy's start (no control
channel to attack). It runs hardened like a sandbox. Each sandbox holds a
connection to it while it lives; with none for `linger` seconds it exits and
the engine's auto-remove deletes it. `gc` removes one nobody uses.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
from typing import TYPE_CHECKING, Any, Callable, TypedDict

from ...errors import ConfigError, EngineUnavailable, SandboxError
from .. import lifecycle
from .client import Conflict, EngineClient, NotFound
from .network import SOCKET, SOCKET_DIR, egress_source

if TYPE_CHECKING:
    from ..policy import SandboxPolicy

LABEL_EGRESS = f"{lifecycle.LABEL_PREFIX}.egress"
LABEL_LINGER = f"{lifecycle.LABEL_PREFIX}.egress-linger"
#: Seconds past its linger after which gc takes an unused proxy as stuck (it should have exited itself).
GC_GRACE = 60.0
#: uid:gid of the proxy: nobody, so no sandbox uid owns its files.
PROXY_USER = "65534:65534"
READY_TIMEOUT = 30.0


class EgressSettings(TypedDict):
    """What identifies a proxy (besides the allowlist), from settings."""

    network: str
    hosts: dict[str, str]
    linger: float


def egress_settings() -> EgressSettings:
    """PYGENT_EGRESS_NETWORK / _HOSTS / _LINGER. Raises ConfigError on a bad value."""
    from ...settings import get_settings

    s = get_settings()
    hosts: dict[str, str] = {}
    for pair in (s.pygent_egress_hosts or "").split(","):
        if not pair.strip():
            continue
        name, eq, addr = pair.strip().partition("=")
        if not eq or not name or not addr:
            raise ConfigError(f"PYGENT_EGRESS_HOSTS: {pair.strip()!r} is not NAME=ADDRESS")
        hosts[name.lower()] = addr
    return EgressSettings(network=s.pygent_egress_network, hosts=hosts, linger=s.pygent_egress_linger)


def check_supported(policy: "SandboxPolicy", runtime: str | None, runtimes: dict[str, Any]) -> None:
    """An allowlist needs a runtime that can reach a unix socket on a shared volume (not gVisor's).

    Raises ConfigError saying what to use instead.
    """
    if runtime and ("--network=none" in (runtimes.get(runtime, {}).get("runtimeArgs") or []) or "runsc" in runtime):
        raise ConfigError(
            f"an allowlist (network={list(policy.allow_hosts)}) cannot be honoured under {runtime!r}: the engine "
            "registers it with --network=none and gVisor cannot reach the egress proxy's socket. "
            "Use the default runtime for allowlisted sandboxes, or network=False."
        )


def proxy_key(allow: tuple[str, ...], settings: EgressSettings) -> str:
    """Same allowlist and egress settings -> same proxy (shared); anything else -> another one."""
    text = json.dumps([sorted(allow), settings["network"], sorted(settings["hosts"].items()), settings["linger"]])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ensure_proxy(client: EngineClient, resolve_image: Callable[[str], str], policy: "SandboxPolicy") -> str:
    """The id of the running proxy for this allowlist, started now if there is none.

    resolve_image: the backend's (the proxy runs in the bundled python image).
    Raises ConfigError (bad egress settings), EngineUnavailable/SandboxError (the proxy did not start).
    """
    from .sandbox import removed_within

    settings = egress_settings()
    key = proxy_key(policy.allow_hosts, settings)
    name = f"pygent-egress-{key}"
    for _attempt in range(3):
        found = _running(client, key)
        if found:
            return found
        try:
            return _start(client, resolve_image("python"), name, key, policy.allow_hosts, settings)
        except _NameTaken:
            # Another process is starting it (wait for it below), or the last one is being removed.
            deadline = time.monotonic() + READY_TIMEOUT
            while time.monotonic() < deadline and not _running(client, key):
                if removed_within(client, name, 0.5):
                    break
    raise SandboxError(f"could not start the egress proxy {name}; run `pygent-runner gc` and retry")


class _NameTaken(Exception):
    pass


def _containers(client: EngineClient, every: bool = False, **filters: str) -> list[dict]:
    params: dict[str, Any] = {"filters": {k: [v] for k, v in filters.items()}}
    if every:
        params["all"] = 1
    return client.call("GET", "/containers/json", params=params, what="list containers") or []


def _running(client: EngineClient, key: str) -> str | None:
    for c in _containers(client, label=f"{LABEL_EGRESS}={key}", status="running"):
        return c["Id"]
    return None


def proxy_body(image: str, name: str, key: str, allow: tuple[str, ...], settings: EgressSettings) -> dict[str, Any]:
    """The proxy's create request: hardened as a sandbox, on the egress network."""
    from .config import _tmpfs_volume

    config = {"socket": SOCKET, "allow": list(allow), "linger": settings["linger"]}
    uid, gid = PROXY_USER.split(":")
    # Shared by every process with this allowlist: no owner pid, session or `managed` label, so
    # gc's per-owner rules (which would remove it when its starter exits) never apply; collect_unused does.
    labels = {
        LABEL_EGRESS: key, LABEL_LINGER: f"{settings['linger']:g}",
        lifecycle.LABEL_OWNER_HOST: lifecycle.HOSTNAME, lifecycle.LABEL_CREATED: f"{time.time():.3f}",
    }
    memory = 64 << 20
    host: dict[str, Any] = {
        "Init": True,
        "AutoRemove": True,
        "CapDrop": ["ALL"],
        "SecurityOpt": ["no-new-privileges:true"],
        "ReadonlyRootfs": True,
        "Memory": memory,
        "MemorySwap": memory,
        "NanoCpus": int(0.5e9),
        "PidsLimit": 64,
        "NetworkMode": settings["network"],
        "ExtraHosts": [f"{n}:{a}" for n, a in sorted(settings["hosts"].items())] or None,
        "Mounts": [_tmpfs_volume(SOCKET_DIR, f"size=1m,uid={uid},gid={gid},mode=0755")],
        "LogConfig": {"Type": "none", "Config": {}},
    }
    return {
        "Image": image,
        "Entrypoint": ["python3", "-I", "-S", "-c", egress_source(), "serve", json.dumps(config)],
        "Cmd": None,
        "User": PROXY_USER,
        "Labels": labels,
        "Hostname": name,
        "AttachStdout": True, "AttachStderr": True, "OpenStdin": False, "Tty": False,
        "HostConfig": host,
    }


def _start(client: EngineClient, image: str, name: str, key: str, allow: tuple[str, ...], settings: EgressSettings) -> str:
    from .sandbox import force_remove, map_error

    cid = None
    try:
        try:
            cid = client.call("POST", "/containers/create", proxy_body(image, name, key, allow, settings),
                              params={"name": name}, what="create the egress proxy")["Id"]
        except NotFound as exc:
            if "network" in exc.message.lower():
                raise ConfigError(f"PYGENT_EGRESS_NETWORK: no network {settings['network']!r} on the engine") from None
            raise
        except Conflict:
            raise _NameTaken() from None
        sock, rest = client.upgrade(f"/containers/{cid}/attach", params={"stdout": 1, "stderr": 1, "stream": 1})
        try:
            client.call("POST", f"/containers/{cid}/start", what="start the egress proxy")
            _wait_ready(sock, rest, name)
        finally:
            sock.close()
        return cid
    except BaseException as exc:
        if cid is not None:
            try:
                force_remove(client, cid)
            except Exception:
                pass
        if isinstance(exc, (_NameTaken, ConfigError)):
            raise
        raise map_error(exc, image) from None


def _wait_ready(raw: socket.socket, seen: bytes, name: str) -> None:
    """Read the attach stream until the proxy says `ready` (it listens then). Raises SandboxError."""
    raw.settimeout(READY_TIMEOUT)
    try:
        while b"ready" not in seen:
            chunk = raw.recv(4096)
            if not chunk:
                break
            seen += chunk
    except OSError:
        pass
    if b"ready" not in seen:
        tail = seen.decode("utf-8", "replace")[-300:]
        raise SandboxError(f"the egress proxy {name} did not start: {tail or 'no output'}")


def collect_unused(client: EngineClient, everything: bool = False) -> list[tuple[str, str, float]]:
    """Remove egress proxies no container uses (and older than their linger + GC_GRACE): [(id, reason, age)].

    Why not by owner: a proxy is shared by every process with the same
    allowlist, so its starter's death says nothing; a sandbox using it does.
    Raises EngineUnavailable.
    """
    from .sandbox import force_remove

    now = time.time()
    removed = []
    for c in _containers(client, every=True, label=LABEL_EGRESS):
        labels = c.get("Labels") or {}
        try:
            age = now - float(labels.get(lifecycle.LABEL_CREATED, "0"))
            linger = float(labels.get(LABEL_LINGER, "30"))
        except ValueError:
            age, linger = now, 0.0
        users = _users(client, c)
        if any(u.get(lifecycle.LABEL_SESSION) == lifecycle.SESSION_ID for u in users):
            continue  # this process's own sandboxes use it
        # Young ones too are kept, whatever their state: one being created (not running yet) by
        # another process, or by this one while this very gc runs in the background.
        if not everything and (age < linger + GC_GRACE or users):
            continue
        try:
            force_remove(client, c["Id"])
        except (SandboxError, EngineUnavailable):
            continue
        removed.append((c["Id"], "asked to remove all" if everything else "egress proxy no sandbox uses", age))
    return removed


def _users(client: EngineClient, proxy: dict) -> list[dict[str, str]]:
    """The labels of every other container that mounts the proxy's socket volume."""
    volumes = [m.get("Name") for m in proxy.get("Mounts") or [] if m.get("Type") == "volume" and m.get("Name")]
    return [
        u.get("Labels") or {}
        for volume in volumes
        for u in _containers(client, every=True, volume=volume)
        if u["Id"] != proxy["Id"]
    ]
