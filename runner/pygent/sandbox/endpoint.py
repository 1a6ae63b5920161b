"""Where the engine is: DOCKER_HOST, then the current docker context, then the usual sockets.

Why one resolver: the stdlib client, docker-py (image builds), doctor, Podman
detection, the exec fast path and gc must all speak to the same engine, found
the way the docker CLI finds it, so a user whose `docker ps` works never has to
configure pygent. The order is the CLI's:

1. ``DOCKER_HOST`` (with ``DOCKER_TLS_VERIFY`` / ``DOCKER_CERT_PATH`` for tcp://);
2. the current context: ``DOCKER_CONTEXT``, else ``currentContext`` in
   ``$DOCKER_CONFIG/config.json`` (default ``~/.docker``); its endpoint lives in
   ``contexts/meta/<sha256(name)>/meta.json`` and its TLS files in
   ``contexts/tls/<sha256(name)>/docker/`` (the CLI's cli/context/store layout);
3. the first of the usual sockets that exists and that we may use: the
   system's, the rootless ones under $XDG_RUNTIME_DIR, Podman's, and Docker
   Desktop's, Colima's and OrbStack's under the home directory (one we may not
   use is passed over for a later one, e.g. a user's rootless Podman beside a
   root-only /var/run/docker.sock; with none usable it is chosen, so the error
   says how to join its group).

Stdlib only, and nothing is connected here (a stat per socket): the exec fast
path resolves on every run (NamedTuples, not dataclasses: ~9 ms less to import).
Transports live in transports.py.
"""

from __future__ import annotations

import json
import os
import stat
from typing import Mapping, NamedTuple

from ..errors import ConfigError

DEFAULT_SOCKET = "/var/run/docker.sock"
#: Where `make podman` (scripts/ensure-podman.sh) serves Podman's API.
PYGENT_PODMAN_SOCKET = "/run/pygent-podman.sock"
DEFAULT_TLS_PORT, DEFAULT_TCP_PORT = 2376, 2375
SCHEMES = ("unix", "tcp", "ssh")


class TLSFiles(NamedTuple):
    """The client's TLS material: a CA to verify the engine (None: the system's store) and a client pair."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    verify: bool = True


class Endpoint(NamedTuple):
    """One engine address and how it was found.

    `host` is the DOCKER_HOST form (unix:///path, tcp://h:p, ssh://user@h:p);
    `source` says why it was chosen; `tried` lists (candidate, why not) for doctor.
    """

    host: str
    scheme: str
    address: str  # unix: the path; tcp: "host:port"; ssh: "[user@]host[:port]"
    tls: TLSFiles | None = None
    source: str = "given"
    tried: tuple[tuple[str, str], ...] = ()

    @property
    def loopback(self) -> bool:
        """True for a unix socket or a tcp address on this machine only."""
        if self.scheme == "unix":
            return True
        if self.scheme != "tcp":
            return False
        hostname = self.address.rpartition(":")[0].strip("[]")
        return hostname in ("localhost", "::1") or hostname.startswith("127.")

    def cli_env(self) -> dict[str, str]:
        """DOCKER_* variables that make the docker CLI (and docker-py) speak to this same engine."""
        env = {"DOCKER_HOST": self.host}
        if self.tls is not None and self.tls.cert:
            env["DOCKER_CERT_PATH"] = os.path.dirname(self.tls.cert)
            if self.tls.verify:
                env["DOCKER_TLS_VERIFY"] = "1"
        return env


def parse(host: str, tls: TLSFiles | None = None, source: str = "given") -> Endpoint:
    """An Endpoint for a DOCKER_HOST-style address. Raises ConfigError for what no transport speaks."""
    host = host.strip()
    if host.startswith("/"):
        host = "unix://" + host
    scheme, sep, rest = host.partition("://")
    if not sep or scheme not in SCHEMES or not rest.strip("/"):
        raise ConfigError(
            f"engine address {host!r} ({source}): pygent speaks unix:///path, tcp://host:port"
            " (TLS with DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH) and ssh://[user@]host[:port];"
            " correct DOCKER_HOST or the docker context"
        )
    if scheme == "unix":
        return Endpoint(host, "unix", "/" + rest.lstrip("/"), None, source)
    address = rest.rstrip("/")
    if scheme == "tcp" and ":" not in address.rpartition("]")[2]:
        address += f":{DEFAULT_TLS_PORT if tls is not None else DEFAULT_TCP_PORT}"
    return Endpoint(f"{scheme}://{address}", scheme, address, tls if scheme == "tcp" else None, source)


def env_tls(env: Mapping[str, str]) -> TLSFiles | None:
    """TLS material from DOCKER_TLS_VERIFY / DOCKER_TLS / DOCKER_CERT_PATH, as the docker CLI reads them."""
    verify = bool(env.get("DOCKER_TLS_VERIFY"))
    if not verify and not env.get("DOCKER_TLS"):
        return None
    certs = env.get("DOCKER_CERT_PATH") or os.path.join(config_dir(env), "")
    files = {name: os.path.join(certs, f"{name}.pem") for name in ("ca", "cert", "key")}
    return TLSFiles(
        ca=files["ca"] if verify else None,
        cert=files["cert"] if os.path.exists(files["cert"]) else None,
        key=files["key"] if os.path.exists(files["key"]) else None,
        verify=verify,
    )


def config_dir(env: Mapping[str, str]) -> str:
    """The docker CLI's configuration directory: $DOCKER_CONFIG, else ~/.docker."""
    return env.get("DOCKER_CONFIG") or os.path.join(_home(env), ".docker")


def current_context(env: Mapping[str, str]) -> tuple[str | None, str]:
    """(context name or None for "default", where the name came from)."""
    name = env.get("DOCKER_CONTEXT")
    if name:
        return (None if name == "default" else name), "DOCKER_CONTEXT"
    path = os.path.join(config_dir(env), "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            name = (json.load(f) or {}).get("currentContext")
    except (OSError, ValueError, AttributeError):
        return None, path
    return (name if name and name != "default" else None), path


def context_endpoint(name: str, env: Mapping[str, str], why: str) -> Endpoint:
    """The engine endpoint a named docker context stores. Raises ConfigError when it is missing or unreadable."""
    import hashlib  # here: the exec fast path resolves every run, and most runs have no context

    digest = hashlib.sha256(name.encode()).hexdigest()
    base = os.path.join(config_dir(env), "contexts")
    meta = os.path.join(base, "meta", digest, "meta.json")
    try:
        with open(meta, encoding="utf-8") as f:
            docker = ((json.load(f) or {}).get("Endpoints") or {}).get("docker") or {}
    except (OSError, ValueError, AttributeError) as exc:
        raise ConfigError(
            f"docker context {name!r} (from {why}) cannot be read at {meta}: {exc};"
            " run `docker context ls` and `docker context use default` (or unset DOCKER_CONTEXT)"
        ) from None
    host = docker.get("Host")
    if not host:
        raise ConfigError(f"docker context {name!r} (from {why}) has no docker endpoint; recreate it with `docker context create`")
    tls = None
    tls_dir = os.path.join(base, "tls", digest, "docker")
    if host.startswith("tcp://") and (os.path.isdir(tls_dir) or docker.get("SkipTLSVerify")):
        files = {n: os.path.join(tls_dir, f"{n}.pem") for n in ("ca", "cert", "key")}
        present = {n: (p if os.path.exists(p) else None) for n, p in files.items()}
        tls = TLSFiles(present["ca"], present["cert"], present["key"], verify=not docker.get("SkipTLSVerify"))
    return parse(host, tls, f"docker context {name!r} (from {why})")


def usual_sockets(env: Mapping[str, str], flavor: str = "docker") -> list[str]:
    """The sockets engines serve by default, in the order they are tried.

    flavor "podman" (PYGENT_BACKEND=podman) tries Podman's first: the user's own (rootless),
    the one `make podman` serves (PYGENT_PODMAN_SOCKET), the system's.
    """
    home = _home(env)
    run = env.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    podman = [os.path.join(run, "podman", "podman.sock"), "/run/podman/podman.sock"]  # rootless, rootful
    if flavor == "podman":
        podman.insert(1, env.get("PYGENT_PODMAN_SOCKET") or PYGENT_PODMAN_SOCKET)
        return podman + [DEFAULT_SOCKET, os.path.join(run, "docker.sock")]
    return [
        DEFAULT_SOCKET,
        os.path.join(run, "docker.sock"),  # rootless Docker
        *podman,
        os.path.join(home, ".docker", "run", "docker.sock"),  # Docker Desktop
        os.path.join(home, ".docker", "desktop", "docker.sock"),  # Docker Desktop (older)
        os.path.join(home, ".colima", "default", "docker.sock"),  # Colima
        os.path.join(home, ".orbstack", "run", "docker.sock"),  # OrbStack
    ]


def resolve(env: Mapping[str, str] | None = None, flavor: str = "docker") -> Endpoint:
    """The engine the docker CLI would use here, with why and what else was tried.

    flavor: "podman" tries Podman's sockets first (see usual_sockets); DOCKER_HOST and a context win either way.

    Raises ConfigError for a DOCKER_HOST or context no transport speaks, or a context that is named
    but missing. With no socket found, the system socket is returned (the client's error then says so).
    """
    env = os.environ if env is None else env
    key = (flavor, *(env.get(k) for k in _ENV_KEYS))
    hit = _cache.get(key)
    if hit is not None:
        return hit
    tried: list[tuple[str, str]] = []
    host = env.get("DOCKER_HOST")
    if host:
        tls = env_tls(env) if host.startswith("tcp://") else None
        found = parse(host, tls, "DOCKER_HOST")
    else:
        tried.append(("DOCKER_HOST", "unset"))
        name, why = current_context(env)
        if name:
            found = context_endpoint(name, env, why)
        else:
            tried.append(("docker context", f"default, from {why}"))
            found = refused = None
            for path in usual_sockets(env, flavor):
                reason = _socket_state(path)
                if reason is None:
                    found = parse(path, None, f"the first usual socket that exists and is ours to use ({path})")
                    break
                tried.append((path, reason))
                if reason == "no permission" and refused is None:
                    refused = path
            if found is None and refused is not None:  # the error then says how to get permission
                found = parse(refused, None, f"the first usual socket that exists ({refused}; no permission)")
            if found is None:
                found = parse(DEFAULT_SOCKET, None, "the default socket (no usual socket exists)")
    found = Endpoint(found.host, found.scheme, found.address, found.tls, found.source, tuple(tried))
    _cache[key] = found
    return found


def reset() -> None:
    """Forget resolved endpoints (after sockets appeared or a context changed, or in tests)."""
    _cache.clear()


_ENV_KEYS = ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_TLS", "DOCKER_CERT_PATH", "DOCKER_CONTEXT",
             "DOCKER_CONFIG", "HOME", "XDG_RUNTIME_DIR", "PYGENT_PODMAN_SOCKET")
_cache: dict[tuple, Endpoint] = {}


def _home(env: Mapping[str, str]) -> str:
    return env.get("HOME") or os.path.expanduser("~")


def _socket_state(path: str) -> str | None:
    """None when path is a socket; else why it was passed over."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "absent"
    except OSError as exc:
        return exc.strerror or str(exc)
    if not stat.S_ISSOCK(st.st_mode):
        return "not a socket"
    if not os.access(path, os.R_OK | os.W_OK):
        return "no permission"  # e.g. not (yet) in the docker group: a rootless engine may follow
    return None
