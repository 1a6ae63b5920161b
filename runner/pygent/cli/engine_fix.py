"""The exact commands that would give this machine a Docker-API engine (for `doctor`).

Why: a pip user has no checkout, so `make engine` means nothing to them; they
need the commands for *their* machine. We only look (which binaries exist, is
systemd running, is the socket there and ours to use) and print: the CLI never
installs or starts anything itself.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

DEFAULT_SOCKET = "/var/run/docker.sock"


def _sudo() -> str:
    return "" if os.geteuid() == 0 else "sudo "


def _systemd() -> bool:
    return Path("/run/systemd/system").is_dir()


def _start_dockerd() -> str:
    if _systemd():
        return f"{_sudo()}systemctl start docker"
    return f"{_sudo()}sh -c 'dockerd >/var/log/dockerd.log 2>&1 &'"


def _podman() -> str:
    if os.geteuid() == 0:
        start = "systemctl start podman.socket" if _systemd() else "sh -c 'podman system service --time=0 &'"
        return f"{start} && export DOCKER_HOST=unix:///run/podman/podman.sock"
    start = "systemctl --user start podman.socket" if _systemd() else "sh -c 'podman system service --time=0 &'"
    return f"{start} && export DOCKER_HOST=unix://$XDG_RUNTIME_DIR/podman/podman.sock"


def start_engine_commands(docker_host: str | None = None) -> str:
    """One line of shell commands that would make an engine answer here (nothing is run).

    Order of preference: the engine DOCKER_HOST names; a socket we may not use
    (join the docker group); an installed dockerd; an installed Podman; else the
    distribution's package. Raises nothing.
    """
    from ..sandbox.endpoint import resolve

    ep = resolve()
    host = ep.host if docker_host is None else docker_host
    if docker_host is None and ep.source == "DOCKER_HOST" or docker_host:
        if host != f"unix://{DEFAULT_SOCKET}":
            return f"start the engine listening at {host}, or `unset DOCKER_HOST` to use {DEFAULT_SOCKET}"
    elif ep.source.startswith("docker context"):
        return f"start the engine of {ep.source} ({host}), or `docker context use default`"
    sock = Path(ep.address if ep.scheme == "unix" and docker_host is None else DEFAULT_SOCKET)
    if sock.exists() and not os.access(sock, os.R_OK | os.W_OK):
        return f"sudo usermod -aG docker {os.environ.get('USER', '$USER')}   (then log in again)"
    if shutil.which("dockerd"):
        return _start_dockerd()
    if shutil.which("podman"):
        return _podman()
    sudo = _sudo()
    if Path("/etc/debian_version").is_file():
        return f"{sudo}apt-get install -y docker.io && {_start_dockerd()}"
    if shutil.which("dnf"):
        return f"{sudo}dnf install -y podman && {_podman()}"
    return "install Docker Engine or Podman from your distribution's packages, start it, and run doctor again"
