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
of that name). The allowlist given at the proxy's start is each sandbox's
first; a sandbox's own changes (allow_hosts / deny_hosts) travel as a newer
ticket signed with the proxy's secret (egress_proxy.py says how), so there is
no control channel a sandbox could use for anything but its own rules, and
another sandbox's never change. The secret is a label of the proxy's (only
the engine's users see it), so every process that shares the proxy can sign.
It runs hardened like a sandbox. Each sandbox holds a
connection to it while it lives; with none for `linger` seconds it exits and
the engine's auto-remove deletes it. `gc` removes one nobody uses.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, NamedTuple, TypedDict

from ...allowlist import parse_allow_entry
from ...errors import ConfigError, EngineUnavailable, SandboxError
from .. import lifecycle
from ..egress_proxy import applied_proof, make_ticket
from .client import Conflict, EngineClient, NotFound
from .network import SOCKET, SOCKET_DIR, egress_source

if TYPE_CHECKING:
    from ..base import Sandbox
    from ..policy import SandboxPolicy

LABEL_EGRESS = f"{lifecycle.LABEL_PREFIX}.egress"
LABEL_LINGER = f"{lifecycle.LABEL_PREFIX}.egress-linger"
#: The proxy's signing secret (egress_proxy.py: tickets), for every process that shares the proxy.
LABEL_SECRET = f"{lifecycle.LABEL_PREFIX}.egress-secret"
#: The proxies this code starts speak tickets: a key of its own, so none started by an older version is shared.
PROTOCOL = "tickets-1"
#: A sandbox's allowlist and denials hold at most this many entries together (the ticket rides in one head).
MAX_RULES = 256
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
    text = json.dumps([sorted(allow), settings["network"], sorted(settings["hosts"].items()), settings["linger"], PROTOCOL])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class ProxyRef(NamedTuple):
    """A running egress proxy: its container id and the secret its tickets are signed with."""

    id: str
    secret: str


def ensure_proxy(client: EngineClient, resolve_image: Callable[[str], str], policy: "SandboxPolicy") -> ProxyRef:
    """The running proxy for this allowlist, started now if there is none.

    resolve_image: the backend's (the proxy runs in the bundled python image).
    Raises ConfigError (bad egress settings), EngineUnavailable/SandboxError (the proxy did not start).
    """
    from .sandbox import removed_within

    settings = egress_settings()
    key = proxy_key(policy.allow_hosts, settings)
    name = f"pygent-egress-{key}"
    for _attempt in range(3):
        found = _running(client, key)
        if found and claim(client, found):
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


def claim(client: EngineClient, proxy: ProxyRef) -> bool:
    """Tell a running proxy a sandbox is on its way (SIGUSR1: egress_proxy.Proxy.claim), so an
    idle one does not exit under that sandbox's start; False if it is no longer running.

    Raises EngineUnavailable.
    """
    try:
        client.call("POST", f"/containers/{proxy.id}/kill", params={"signal": "SIGUSR1"}, what="claim the egress proxy")
        return True
    except (NotFound, Conflict):
        return False


def still_running(client: EngineClient, proxy: ProxyRef) -> bool:
    """Is the proxy a sandbox was just started on still up? (It held the proxy before it
    answered; a proxy that had begun to exit as it was claimed is gone by now.)"""
    try:
        state = client.call("GET", f"/containers/{proxy.id}/json", what="inspect the egress proxy")["State"]
    except NotFound:
        return False
    return bool(state.get("Running")) and not state.get("Dead")


class _NameTaken(Exception):
    pass


def _containers(client: EngineClient, every: bool = False, **filters: str) -> list[dict]:
    params: dict[str, Any] = {"filters": {k: [v] for k, v in filters.items()}}
    if every:
        params["all"] = 1
    return client.call("GET", "/containers/json", params=params, what="list containers") or []


def _running(client: EngineClient, key: str) -> ProxyRef | None:
    for c in _containers(client, label=f"{LABEL_EGRESS}={key}", status="running"):
        secret = (c.get("Labels") or {}).get(LABEL_SECRET)
        if secret:
            return ProxyRef(c["Id"], secret)
    return None


def proxy_body(image: str, name: str, key: str, allow: tuple[str, ...], settings: EgressSettings,
               secret: str | None = None) -> dict[str, Any]:
    """The proxy's create request: hardened as a sandbox, on the egress network; a new secret unless given."""
    from .config import _tmpfs_volume

    secret = secret or os.urandom(32).hex()
    config = {"socket": SOCKET, "allow": list(allow), "linger": settings["linger"], "secret": secret}
    uid, gid = PROXY_USER.split(":")
    # Shared by every process with this allowlist: no owner pid, session or `managed` label, so
    # gc's per-owner rules (which would remove it when its starter exits) never apply; collect_unused does.
    labels = {
        LABEL_EGRESS: key, LABEL_LINGER: f"{settings['linger']:g}", LABEL_SECRET: secret,
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


def _start(client: EngineClient, image: str, name: str, key: str, allow: tuple[str, ...], settings: EgressSettings) -> ProxyRef:
    from .sandbox import force_remove, map_error

    cid = None
    body = proxy_body(image, name, key, allow, settings)
    try:
        try:
            cid = client.call("POST", "/containers/create", body, params={"name": name}, what="create the egress proxy")["Id"]
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
        return ProxyRef(cid, body["Labels"][LABEL_SECRET])
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


# --------------------------------------------------------------------------- one sandbox's rules (issue 25)


#: Run in the sandbox on the tooling interpreter: hand the proxy a newer ticket (stdin), print its answer line.
_APPLY = (
    "import socket,sys\n"
    "s=socket.socket(socket.AF_UNIX);s.settimeout(15);s.connect(sys.argv[1])\n"
    "s.sendall(b'PYGENT-ID '+sys.stdin.buffer.read().strip()+b'\\r\\nPYGENT-RULES\\r\\n\\r\\n')\n"
    "d=b''\n"
    "while b'\\n' not in d:\n"
    "    c=s.recv(4096)\n"
    "    if not c: break\n"
    "    d+=c\n"
    "print(d.decode('ascii','replace').strip())\n"
)


def _covers(entries: Iterable[str], *others: str) -> bool:
    """Does an entry name one of `others`: the same entry, or its host without a port (all its ports)?"""
    return any(e == o or ("/" not in o and ":" not in e and o.partition(":")[0] == e) for e in entries for o in others)


class SandboxEgress:
    """One allowlisted sandbox's side of the proxy: its ticket, and its live changes.

    Why the change goes through the sandbox: the host cannot reach the proxy's
    socket (it is in the engine's volume, perhaps on another machine), and the
    sandbox can; it cannot alter the signed ticket, nor fake the proxy's signed
    answer, so the worst it can do is make the change fail (an error, never a
    silent no-op). The sandbox's own connections apply it from the next one on;
    its open connections to a host now denied are cut.
    """

    def __init__(self, proxy: ProxyRef, policy: "SandboxPolicy") -> None:
        from ..policy import size_in_bytes

        self.proxy = proxy
        self.id = os.urandom(16).hex()
        self.seq = 0
        self.allow: tuple[str, ...] = tuple(policy.allow_hosts)
        self.deny: tuple[str, ...] = ()
        self.conns = policy.egress_connections
        self.rate = size_in_bytes(policy.egress_bandwidth)
        self._lock = threading.Lock()

    def _rules(self, seq: int, allow: list[str] | None, deny: tuple[str, ...]) -> dict[str, Any]:
        return {"id": self.id, "seq": seq, "allow": allow, "deny": list(deny), "conns": self.conns, "rate": self.rate}

    def ticket(self) -> str:
        """The first ticket, the relay's for the sandbox's life: the proxy's own allowlist (null keeps it short)."""
        return make_ticket(self.proxy.secret, self._rules(0, None, ()))

    def change(self, sandbox: "Sandbox", allow: Iterable[str] = (), deny: Iterable[str] = ()) -> tuple[str, ...]:
        """Allow or deny more hosts for this sandbox only; returns its allowlist now.

        Raises ConfigError (a bad entry, too many), SandboxError (the proxy did not confirm), SandboxClosed.
        """
        try:
            more = [parse_allow_entry(str(e)) for e in allow]
            less = [parse_allow_entry(str(e)) for e in deny]
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if not more and not less:
            raise ConfigError("name at least one host, e.g. allow_hosts('pypi.example:443')")
        with self._lock:
            new_allow = tuple(sorted({e for e in self.allow if not _covers(less, e)} | set(more)))
            new_deny = tuple(sorted({e for e in self.deny if not _covers(more, e) and not _covers([e], *more)} | set(less)))
            if len(new_allow) + len(new_deny) > MAX_RULES:
                raise ConfigError(f"a sandbox's allowlist and denials hold at most {MAX_RULES} entries together; "
                                  "use '*.suffix' patterns for many hosts of one domain")
            seq = self.seq + 1
            ticket = make_ticket(self.proxy.secret, self._rules(seq, list(new_allow), new_deny))
            self._deliver(sandbox, ticket, seq)
            self.seq, self.allow, self.deny = seq, new_allow, new_deny
            return new_allow

    def _deliver(self, sandbox: "Sandbox", ticket: str, seq: int) -> None:
        relay = sandbox.create_config["Entrypoint"]  # type: ignore[attr-defined]  # a DockerSandbox's: the relay's
        python = shlex.join([*relay[: relay.index("-I")], "-I", "-S", "-c", _APPLY, SOCKET])
        result = sandbox.exec(python, stdin=ticket.encode(), timeout=30, env={"PYTHONPATH": ""})
        words = result.stdout.decode("ascii", "replace").split()
        applied = len(words) == 3 and words[0] == "PYGENT-APPLIED" and words[1].isdigit() and int(words[1]) >= seq
        if not applied or words[2] != applied_proof(self.proxy.secret, self.id, int(words[1])):
            detail = (result.stdout + result.stderr).decode("utf-8", "replace").strip()[-300:]
            raise SandboxError(
                "the egress proxy did not confirm the change of this sandbox's allowlist, which is unchanged "
                f"({detail or f'exit {result.exit_code}'}); retry, or open a new sandbox with the hosts in network=[...]"
            )
