"""What every subcommand shares: exit codes and the one-line error report.

Kept free of heavy imports (no typer, rich, docker or pydantic at module level):
`pygent-runner exec` imports this on its start-up path.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from ..sandbox import SandboxPolicy

PROG = "pygent-runner"

#: Exit codes. exec passes the command's own code through; these are ours.
EXIT_OK = 0
EXIT_ERROR = 1  #: gc/doctor/...: something went wrong (one line on stderr says what)
EXIT_USAGE = 2  #: typer/click usage errors (unknown option, missing argument) outside exec
EXIT_TIMEOUT = 124  #: exec: the command ran past --timeout and was killed (as coreutils `timeout`)
EXIT_SANDBOX = 125  #: exec: the sandbox could not run it (engine down, image missing, bad option value)
EXIT_OOM = 137  #: exec: the command was killed, e.g. by the OOM killer (128 + SIGKILL)
EXIT_PIPE = 141  #: exec: our stdout was closed by the reader (128 + SIGPIPE), the command was stopped


def error_lines(exc: BaseException) -> tuple[list[str], str]:
    """(lines to print before, the one error line) for an exception.

    Messages of pygent errors are one line, except build failures that carry a
    log tail: that tail is printed first so the error line is always the last.
    """
    text = _message(exc)
    lines = [line for line in text.splitlines() if line.strip()] or [type(exc).__name__]
    return lines[1:], lines[0]


def _message(exc: BaseException) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors) and type(exc).__name__ == "ValidationError":  # pydantic, without importing it
        try:
            parts = []
            for e in errors():
                where = ".".join(str(p) for p in e.get("loc", ()))
                msg = str(e.get("msg", "")).removeprefix("Value error, ")
                parts.append(f"{where}: {msg}" if where else msg)
            return "; ".join(parts) or str(exc)
        except Exception:  # pragma: no cover - a pydantic shape we do not know
            pass
    return str(exc)


def report(exc: BaseException | str, *, prefix: str = "error") -> None:
    """Print an error as `pygent-runner: error: ...` on stderr (log tail first, if any)."""
    if isinstance(exc, str):
        before, line = [], exc
    else:
        before, line = error_lines(exc)
    out = sys.stderr
    if out is None:
        return
    try:
        for extra in before:
            out.write(extra + "\n")
        out.write(f"{PROG}: {prefix}: {line}\n")
        out.flush()
    except (OSError, ValueError):
        pass


def fail(exc: BaseException | str, code: int = EXIT_ERROR) -> NoReturn:
    """Report and exit with `code` (typer commands: raises typer.Exit, so no traceback)."""
    report(exc)
    import typer

    raise typer.Exit(code)


#: --allow-host, shared by every command that starts sandboxes (exec, run, mcp).
ALLOW_HOST_HELP = (
    "Let sandboxes reach HOST over HTTP(S), through pygent's egress proxy, and nothing else "
    "(repeatable; HOST, *.suffix, HOST:PORT; ADDR/PREFIX lets allowed names resolve into that private range) "
    "[default: PYGENT_ALLOW_HOSTS]"
)


def allow_host_option() -> object:
    """The typer option `--allow-host HOST[:PORT]` (repeatable), for `allow_host: Optional[list[str]] = allow_host_option()`."""
    import typer

    return typer.Option(None, "--allow-host", help=ALLOW_HOST_HELP, metavar="HOST[:PORT]")


def network_value(network: bool | None, allow_hosts: list[str] | None) -> bool | tuple[str, ...] | None:
    """The policy's `network` from --network/--no-network and --allow-host (None: the settings' default).

    Raises ValueError when both --network and --allow-host are given (one opens everything, the other narrows).
    """
    if allow_hosts:
        if network is not None:
            raise ValueError("--allow-host narrows the network and --network/--no-network sets it all or nothing: pass one of them")
        return tuple(allow_hosts)
    return network


def cli_policy(*, network: bool | None = None, allow_hosts: list[str] | None = None, **overrides: object) -> "SandboxPolicy":
    """The default (settings) policy with a command's sandbox options applied.

    Raises ConfigError naming the option that was wrong (e.g. `--allow-host: ... is an IP address`).
    """
    from ..errors import ConfigError
    from ..sandbox import default_policy

    try:
        value = network_value(network, allow_hosts)
        return default_policy(network=value, **overrides)
    except ValueError as exc:
        text = _message(exc)
        if text.startswith("network: "):
            text = ("--allow-host: " if allow_hosts else "network: ") + text.removeprefix("network: ")
        raise ConfigError(text) from None
