"""An interactive terminal in a fresh sandbox, for people (`pygent-runner shell`).

Why separate from the command server: a person needs a real TTY (line editing,
job control, Ctrl-C to the foreground command, resize), which the server's
framed, non-TTY stream cannot give. The container is created with the same
hardening as every sandbox (container_config: caps dropped, no network unless
asked, non-root, limits), with a TTY, and the docker CLI attaches to it: it puts
our terminal in raw mode, forwards resizes and restores the terminal on exit.
The container is removed when the shell exits (auto-remove), and by us on any
way out: the terminal going away (SIGHUP), SIGTERM, an error.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import uuid

from ..errors import ConfigError, RuntimeUnavailable
from .policy import SandboxPolicy

__all__ = ["interactive_shell"]


def interactive_shell(image: str | None, policy: SandboxPolicy, command: list[str] | None = None,
                      workdir: str | None = None, env: dict[str, str] | None = None) -> int:
    """Run `command` (default: an interactive bash) on a TTY in a fresh sandbox; its exit status.

    Raises: EngineUnavailable, ImageNotFound, RuntimeUnavailable, ConfigError (no docker CLI), SandboxError.
    """
    from .docker import _engine_runtimes, _force_remove, _map_error, chosen_runtime, container_config
    from .engine import get_client
    from .images import resolve_image
    from ..settings import get_settings

    docker_cli = shutil.which("docker")
    if docker_cli is None:
        raise ConfigError("`pygent-runner shell` attaches with the docker CLI: install it (docker-ce-cli) and retry")
    client = get_client()
    if policy.runtime and policy.runtime not in _engine_runtimes(client):
        raise RuntimeUnavailable(f"runtime {policy.runtime!r} is not registered with the engine")
    tag = resolve_image(image or get_settings().pygent_image)
    create, host = container_config(tag, policy, None, False, chosen_runtime(policy, client))
    create.update(
        command=command or ["/bin/bash", "-i"],
        tty=True,
        stdin_open=True,  # StdinOnce (detach=False): stdin closes when our attach does
        environment=dict(create["environment"], TERM=os.environ.get("TERM", "xterm"), **(env or {})),
    )
    if workdir:
        create["working_dir"] = workdir
    name = f"pygent-shell-{uuid.uuid4().hex[:12]}"
    api = client.api
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGHUP, signal.SIGTERM)}

    def leave(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    try:
        for sig in previous:
            signal.signal(sig, leave)
        try:
            config = api.create_container_config(host_config=api.create_host_config(**host), **create)
            api.create_container_from_config(config, name)
        except Exception as exc:
            raise _map_error(exc, tag) from None
        # The CLI speaks to the engine docker-py found (DOCKER_HOST and friends are inherited).
        done = subprocess.run([docker_cli, "start", "--attach", "--interactive", name])
        return done.returncode
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_IGN)
        try:
            _force_remove(name)
        except Exception:
            pass  # gc reclaims it by label
        for sig, handler in previous.items():
            signal.signal(sig, handler)
