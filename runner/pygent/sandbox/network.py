"""The policy's `network` field -> the engine's create and host-config network settings.

One function, so every form of network access is decided in one place:
- False: NetworkDisabled, no stack but loopback (the strictest, and ~2x faster
  to start than --network none);
- True: the engine's default bridge, everything reachable;
- an allowlist: still no network stack at all; the egress proxy's socket
  volume is mounted read-only and the command starts behind the relay that
  HTTP_PROXY/HTTPS_PROXY point at (see egress.py for why not a Docker network).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .policy import SandboxPolicy


def network_settings(policy: "SandboxPolicy", command: list[str], proxy: str | None) -> tuple[dict, dict]:
    """(create kwargs, host_config kwargs) to merge for the policy's network.

    proxy: the running egress proxy's container id (egress.ensure_proxy), for an allowlist.
    Raises ValueError when an allowlist comes without a proxy (a programming error).
    """
    if policy.network is True:
        return {"network_disabled": False}, {"network_mode": "bridge"}
    if not policy.allow_hosts:
        return {"network_disabled": True}, {}
    if proxy is None:
        raise ValueError("an allowlisted sandbox needs its egress proxy (egress.ensure_proxy)")
    from .egress import proxy_env, relay_command

    create = {"network_disabled": True, "command": relay_command(command), "environment": proxy_env()}
    return create, {"volumes_from": [f"{proxy}:ro"]}
