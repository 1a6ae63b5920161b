"""The policy's `network` field -> the create request's network settings.

One function, so every form of network access is decided in one place:
- False: no network stack but loopback (`NetworkDisabled`; NetworkMode "none"
  on engines without it);
- True: the engine's default bridge, everything reachable;
- an allowlist: still no network stack at all; the egress proxy's socket
  volume is mounted read-only and the server starts behind the relay that
  HTTP_PROXY/HTTPS_PROXY point at (egress.py says why not a Docker network).
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..policy import SandboxPolicy

#: Where the egress proxy's socket volume is mounted, in the proxy and (read-only) in sandboxes.
SOCKET_DIR = "/run/pygent-egress"
SOCKET = f"{SOCKET_DIR}/proxy.sock"
#: The relay's port on the sandbox's own loopback.
RELAY_PORT = 3128
PROXY_URL = f"http://127.0.0.1:{RELAY_PORT}"
#: In the tooling volume: what Node before 24 preloads to use the proxy (images/tooling).
NODE_PRELOAD = "node-env-proxy.cjs"


def network_settings(policy: "SandboxPolicy", entrypoint: list[str], proxy: tuple[str, str] | None, *, can_disable: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """(top-level fields, HostConfig fields) to merge into the create request.

    entrypoint: the container's command without networking (the command server).
    proxy: (the running egress proxy's container id, the sandbox's ticket: egress.SandboxEgress), for an allowlist.
    can_disable: the engine honours `NetworkDisabled` (Docker); otherwise NetworkMode "none".
    Raises ValueError when an allowlist comes without a proxy (a programming error).
    """
    if policy.network is True:
        return {"NetworkDisabled": False}, {"NetworkMode": "bridge"}
    top: dict[str, Any] = {"NetworkDisabled": can_disable}
    host: dict[str, Any] = {} if can_disable else {"NetworkMode": "none"}
    if not policy.allow_hosts:
        return top, host
    if proxy is None:
        raise ValueError("an allowlisted sandbox needs its egress proxy (egress.ensure_proxy)")
    proxy_id, ticket = proxy
    top["Entrypoint"] = relay_command(entrypoint, ticket)
    # The tooling directory is the interpreter's: <dir>/bin/python3.
    tooling = posixpath.dirname(posixpath.dirname(entrypoint[entrypoint.index("-I") - 1]))
    top["Env"] = [f"{k}={v}" for k, v in proxy_env(tooling).items()]
    host["VolumesFrom"] = [f"{proxy_id}:ro"]
    return top, host


def proxy_env(tooling: str) -> dict[str, str]:
    """The variables that send a sandbox's HTTP(S) clients to its relay.

    Both spellings (curl reads only lowercase http_proxy, others only uppercase);
    NO_PROXY keeps loopback direct (a service the agent runs, an exposed port's
    own checks), with 127.0.0.0/8 for the tools that read ranges; Node's fetch
    ignores the proxy variables unless NODE_USE_ENV_PROXY=1 (Node 24), and before
    Node 24 the tooling's preload hands it undici's EnvHttpProxyAgent (issue 25;
    images/tooling/node-env-proxy.cjs). A command's own NODE_OPTIONS replaces it.
    """
    env = {"HTTP_PROXY": PROXY_URL, "HTTPS_PROXY": PROXY_URL, "NO_PROXY": "localhost,127.0.0.1,127.0.0.0/8,::1"}
    return {**env, **{k.lower(): v for k, v in env.items()}, "NODE_USE_ENV_PROXY": "1",
            "NODE_OPTIONS": f"--require {tooling}/{NODE_PRELOAD}"}


def relay_command(entrypoint: list[str], ticket: str) -> list[str]:
    """The sandbox's command, started behind the relay (which execs it in its place);
    ticket: what the relay presents to the proxy on each connection (egress_proxy.py).

    The relay runs on the same interpreter as the command server (the tooling volume's, with
    its loader): any image works.
    """
    python = entrypoint[: entrypoint.index("-I")]  # loader, --library-path, lib, python3
    return [*python, "-I", "-S", "-c", egress_source(), "relay", str(RELAY_PORT), SOCKET, ticket, *entrypoint]


def egress_source() -> str:
    """egress_proxy.py's text: the proxy and the relay both run it with `python3 -c` (nothing to install)."""
    return (Path(__file__).resolve().parents[1] / "egress_proxy.py").read_text()
