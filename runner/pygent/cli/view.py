"""`pygent-runner view [LOG_DIR]`: the run logs in the browser (pygent/view), on loopback by default."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    import typer

_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def register(app: "typer.Typer") -> None:
    import typer

    @app.command("view")
    def view(
        log_dir: Optional[Path] = typer.Argument(None, help="Directory of run logs (default: PYGENT_LOG_DIR, else $XDG_STATE_HOME/pygent-runner/runs)."),
        host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback unless --allow-remote)."),
        port: int = typer.Option(7777, min=0, max=65535, help="Port to listen on."),
        allow_remote: bool = typer.Option(False, "--allow-remote", help="Listen on a non-loopback address (logs hold commands and their output)."),
    ) -> None:
        """Serve the runs list and each run's steps, tool calls, delegated tasks and timings."""
        from ..agent.runlog import default_log_dir
        from ..errors import ConfigError
        from .common import fail

        directory = (log_dir or default_log_dir()).expanduser()
        if not directory.is_dir():
            fail(ConfigError(f"no run logs at {directory}: run `pygent-runner run ...` first, or pass the directory"))
        if host not in _LOOPBACK and not allow_remote:
            fail(ConfigError(f"--host {host} is not loopback: run logs hold commands and their output; add --allow-remote to serve them there"))
        from ..view.app import serve

        print(f"pygent view of {directory}: http://{'[' + host + ']' if ':' in host else host}:{port}/", flush=True)
        serve(directory, host=host, port=port)
