"""The Podman backend: Podman's Docker-compatible API (`podman system service`).

One module, as the interface promises: the Docker backend's client, config,
channel and sandbox all apply, and only what Podman does differently is here.
Chosen by PYGENT_BACKEND=podman, or when the engine found (docker/endpoint.py)
answers /version as Podman.

Differences from Docker, each handled (and covered by the conformance suite):
- no `NetworkDisabled`: Podman's compat API ignores it, so "no network" is
  NetworkMode "none" (loopback only, as the suite checks);
- /workspace and /tmp: Podman ignores the size options of the anonymous
  tmpfs-backed volumes Docker gets (a write would fill the host's disk; the
  suite's workspace_is_size_bounded caught it), so they are plain tmpfs
  mounts with `U` (owned by the sandbox user), which Podman's archive API sees;
- the init is catatonit (Podman's `--init`), which must be installed;
- container rlimits: Podman sets nofile 1048576 and nproc 4194304 by default,
  which fail on hosts whose hard limits are lower; the create body asks for the host's own
  hard limit (`make podman` also writes it to containers.conf.d);
- runtimes: Podman's /info lists none the way Docker does, so the registered
  OCI runtimes are read from `podman info` fields (OCIRuntime), and a policy
  runtime is passed through for Podman to check.
"""

from __future__ import annotations

import os
import resource
from typing import Any

from . import endpoint
from .docker import config
from .docker.backend import DockerBackend
from .registry import backend


def _hard(limit: int) -> int:
    """This host's hard limit (Podman's defaults may exceed it, and then nothing starts)."""
    try:
        hard = resource.getrlimit(limit)[1]
    except (OSError, ValueError):
        return 4096
    return 1 << 20 if hard == resource.RLIM_INFINITY else int(hard)


def default_host() -> endpoint.Endpoint:
    """DOCKER_HOST, else the docker context, else the first Podman socket that exists (endpoint.resolve)."""
    return endpoint.resolve(flavor="podman")


@backend("podman")
class PodmanBackend(DockerBackend):
    """Sandboxes as containers on Podman, through its Docker-compatible API."""

    flavor = config.EngineFlavor(
        name="podman", network_disabled=False, security_opt="no-new-privileges", tmpfs_mounts=True,
        # nproc: the pids cgroup bounds a sandbox; 16384 stays under the hard limit Podman's own
        # process gets (32768 seen here, lower than the shell's), which crun may not exceed.
        ulimits=(("nofile", min(_hard(resource.RLIMIT_NOFILE), 65536), min(_hard(resource.RLIMIT_NOFILE), 65536)),
                 ("nproc", min(_hard(resource.RLIMIT_NPROC), 16384), min(_hard(resource.RLIMIT_NPROC), 16384))),
    )

    def __init__(self, host: "str | endpoint.Endpoint | None" = None) -> None:
        host = host or default_host()
        # Image builds use docker-py and the docker CLI (build-base.sh), which ask the resolver
        # (DOCKER_HOST first): point them at the same Podman, so a process with
        # PYGENT_BACKEND=podman never mixes engines.
        os.environ.setdefault("DOCKER_HOST", host if isinstance(host, str) else host.host)
        super().__init__(host)

    def rootless(self) -> bool:
        """Podman's compatible /info does not say rootless; its own /libpod/info does."""
        if super().rootless():
            return True
        try:
            host = (self.client.call("GET", "/libpod/info", timeout=30) or {}).get("host") or {}
        except Exception:  # noqa: BLE001 - an engine without libpod's API is no rootless Podman we know
            return False
        return bool((host.get("security") or {}).get("rootless"))

    def runtimes(self) -> dict[str, Any]:
        """Podman's runtimes: those its `info` reports (the default one at least)."""
        if self._runtimes is None:
            info = self.client.call("GET", "/info") or {}
            runtimes = dict(info.get("Runtimes") or {})
            default = info.get("DefaultRuntime")
            if default:
                runtimes.setdefault(default, {})
            self._runtimes = runtimes
        return self._runtimes
