"""What every subcommand shares: exit codes and the one-line error report.

Kept free of heavy imports (no typer, rich, docker or pydantic at module level):
`pygent-runner exec` imports this on its start-up path.
"""

from __future__ import annotations

import sys
from typing import NoReturn

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
