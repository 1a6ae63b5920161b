"""An interactive terminal in a fresh sandbox, for people (`pygent-runner shell`).

Why separate from the command server: a person needs a real TTY (line editing,
job control, Ctrl-C to the foreground command, resize), which the server's
framed, non-TTY stream cannot give. The container is created from the same
create body as every sandbox (config.create_body: caps dropped, no network unless
asked, non-root, limits, the tooling volume), with a TTY and a shell as its main
process, and the docker CLI attaches to it: it puts our terminal in raw mode,
forwards resizes and restores the terminal on exit. The container is removed
when the shell exits (auto-remove), and by us on any way out: the terminal going
away (SIGHUP), SIGTERM, an error.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ...errors import ConfigError
from . import config
from .sandbox import force_remove, map_error

if TYPE_CHECKING:
    from ..policy import SandboxPolicy

__all__ = ["interactive_shell"]

#: The image's bash, else pygent's static one from the tooling volume (sh-only images).
DEFAULT_SHELL = ["/bin/sh", "-c", f'exec "$(command -v bash || echo {config.TOOLING_DIR}/bin/bash)" -i']


def interactive_shell(backend: Any, image: str, policy: "SandboxPolicy", command: list[str] | None = None,
                      workdir: str | None = None, env: dict[str, str] | None = None,
                      publish: Callable[[Any], None] | None = None) -> int:
    """Run `command` (default: an interactive bash) on a TTY in a fresh sandbox; its exit status.
    `backend` is the DockerBackend (or a subclass: Podman) whose engine runs it. With
    `publish` (shell -p), see `_shell_with_ports`.

    Raises: EngineUnavailable, ImageNotFound, RuntimeUnavailable, ConfigError (no docker CLI), SandboxError.
    """
    docker_cli = shutil.which("docker")
    if docker_cli is None:
        raise ConfigError("`pygent-runner shell` attaches with the docker CLI: install it (docker-ce-cli) and retry")
    if publish is not None:
        return _shell_with_ports(backend, docker_cli, image, policy, command, workdir, env, publish)
    backend.check_policy(policy)
    tag = backend.resolve_image(image)
    body = backend.create_body(tag, policy, runtime=backend.chosen_runtime(policy))
    body, name = config.fresh_identity(body)
    name = name.replace("pygent-", "pygent-shell-", 1)
    body.update(
        Entrypoint=list(command or DEFAULT_SHELL), Cmd=None, Tty=True,
        Env=body["Env"] + [f"TERM={os.environ.get('TERM', 'xterm')}"] + [f"{k}={v}" for k, v in (env or {}).items()],
    )
    if workdir:
        body["WorkingDir"] = workdir
    def remove() -> None:
        try:
            force_remove(backend.client, name)
        except Exception:
            pass  # gc reclaims it by label

    with _removed_on_any_exit(remove):
        try:
            backend.client.call("POST", "/containers/create", body, params={"name": name}, what="create")
        except Exception as exc:
            raise map_error(exc, tag) from None
        return subprocess.run([docker_cli, "start", "--attach", "--interactive", name], env=_cli_env(backend)).returncode


@contextlib.contextmanager
def _removed_on_any_exit(remove: Callable[[], None]) -> Iterator[None]:
    """Run the body with SIGHUP/SIGTERM as exits, then `remove()` with them ignored (it must finish)."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGHUP, signal.SIGTERM)}

    def leave(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    try:
        for sig in previous:
            signal.signal(sig, leave)
        yield
    finally:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        remove()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _shell_with_ports(backend: Any, docker_cli: str, image: str, policy: "SandboxPolicy", command: list[str] | None,
                      workdir: str | None, env: dict[str, str] | None, publish: Callable[[Any], None]) -> int:
    """`shell -p`: an ordinary sandbox (the command server as its main process, so its ports
    travel over its channel, and still no network), with the person's TTY as a second
    process in it through `docker exec -it`: same user, capabilities, limits and loopback.

    Why not the TTY container of the plain shell: its main process is the shell itself, so
    there is no channel to carry connections, and a second channel would be a second way in.
    """
    sandbox = backend.create(backend.resolve_image(image), policy)
    with _removed_on_any_exit(sandbox.close):
        publish(sandbox)
        argv = [docker_cli, "exec", "--interactive", "--tty", "-e", f"TERM={os.environ.get('TERM', 'xterm')}"]
        argv += [a for k, v in (env or {}).items() for a in ("-e", f"{k}={v}")]
        argv += ["-w", workdir or "/workspace", sandbox.id, *(command or DEFAULT_SHELL)]
        return subprocess.run(argv, env=_cli_env(backend)).returncode



def _cli_env(backend: Any) -> dict[str, str]:
    """The docker CLI's environment for the engine the backend speaks to (TLS material included)."""
    return {**os.environ, **backend.client.endpoint.cli_env()}
