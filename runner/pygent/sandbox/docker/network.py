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

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..policy import SandboxPolicy


def network_settings(policy: "SandboxPolicy", entrypoint: list[str], proxy: str | None, *, can_disable: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """(top-level fields, HostConfig fields) to merge into the create request.

    entrypoint: the container's command without networking (the command server).
    proxy: the running egress proxy's container id (egress.ensure_proxy), for an allowlist.
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
    from .egress import proxy_env, relay_command

    top["Entrypoint"] = relay_command(entrypoint)
    top["Env"] = [f"{k}={v}" for k, v in proxy_env().items()]
    host["VolumesFrom"] = [f"{proxy}:ro"]
    return top, host
