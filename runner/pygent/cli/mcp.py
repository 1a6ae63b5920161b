"""`pygent-runner mcp`: options -> session config -> serve over stdio or Streamable HTTP.

The server itself is the package pygent.mcp (tools, sessions, server,
transports); this is its command line. The sandbox options are exec's, parsed
by exec's own parser and turned into a policy by exec's own build_policy
(cli/exec.py), so the two commands cannot drift: what `exec --memory 1g
--network` means is what `mcp --memory 1g --network` means. cli/__init__.py
routes `mcp` here before building the typer app, like `exec`.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from .common import EXIT_ERROR, EXIT_OK, EXIT_USAGE, PROG, report
from .exec import _OPTIONS as EXEC_OPTIONS
from .exec import UsageError, build_policy, options_or_status, parse_args
from .exec_options import Options

if TYPE_CHECKING:
    from ..mcp.sessions import SessionConfig

__all__ = ["HELP", "McpOptions", "parse", "run", "main"]

HELP = f"""\
Usage: {PROG} mcp [OPTIONS]

  Serve hardened sandboxes to any MCP client: the tools bash, write_file,
  read_file and list_files, one sandbox per MCP session (started on the
  session's first call, removed when it ends). stdio by default: point the
  client's `command` at `{PROG}` with args ["mcp"].

Transport:
  --http HOST:PORT       Serve Streamable HTTP at http://HOST:PORT/mcp instead
                         of stdio (PORT 0: any free port; the URL is printed
                         on stderr). HOST must be loopback unless --allow-remote.
  --allow-remote         Allow --http on an address other than loopback
                         (anyone who reaches it with the token gets a sandbox)
  --token TOKEN          Bearer token HTTP clients must send [default:
                         PYGENT_MCP_TOKEN, else a random one printed on stderr]
  --idle-timeout SECONDS Remove a session's sandbox after this long without a
                         call (0 = never) [default: 1800]
  --max-sessions N       HTTP sessions open at once (each may hold a sandbox);
                         more are refused with 503 [default: 16]

Sandbox (as `{PROG} exec`):
  --image IMAGE          Bundled image (python, minimal) or any local image
                         [default: PYGENT_IMAGE, python]
  --timeout SECONDS      Default and maximum time of one bash call; 0 = none
                         [default: PYGENT_COMMAND_TIMEOUT, 60]
  -m, --memory SIZE      Memory limit, swap included, e.g. 256m, 1g [default: 512m]
  --cpus N               CPU limit in cores [default: 1]
  --pids N               Max processes+threads [default: 256]
  --network/--no-network Network access [default: --no-network]
  --allow-host HOST[:PORT]
                         Reach only HOST over HTTP(S), through pygent's egress
                         proxy (repeatable, as `{PROG} exec`) [default: PYGENT_ALLOW_HOSTS]
  --runtime NAME         OCI runtime, e.g. runsc (gVisor) [default: PYGENT_RUNTIME]
  -e, --env KEY=VALUE    Set a variable for every command (repeatable)
  -v, --mount SRC:DST[:ro|rw]
                         Bind-mount host directory SRC at DST (repeatable;
                         every session sees it)
  -h, --help             Show this message and exit.
"""

#: exec's options that make sense for a server (no --workdir: `cd` persists per session; no --no-pool).
_TABLE: dict[str, tuple[str, bool]] = {k: v for k, v in EXEC_OPTIONS.items() if v[0] not in ("workdir", "no_pool")}
_TABLE.update(
    {
        "--http": ("http", True),
        "--allow-remote": ("allow_remote", False),
        "--token": ("token", True),
        "--idle-timeout": ("idle_timeout", True),
        "--max-sessions": ("max_sessions", True),
    }
)


class McpOptions(Options):
    """exec's options plus the server's own."""

    __slots__ = ("http", "allow_remote", "token", "idle_timeout", "max_sessions")

    def __init__(self) -> None:
        super().__init__()
        self.http: tuple[str, int] | None = None
        self.allow_remote = False
        self.token: str | None = None
        self.idle_timeout: float = 30 * 60.0
        self.max_sessions = 16

    def set_other(self, name: str, dest: str, value: str | None) -> None:
        if dest == "allow_remote":
            self.allow_remote = True
        elif dest == "http" and value is not None:
            self.http = _host_port(name, value)
        elif dest == "token" and value is not None:
            if len(value) < 16 or any(c.isspace() for c in value):
                raise UsageError(f"{name}: a token needs at least 16 characters and no spaces")
            self.token = value
        elif dest == "idle_timeout" and value is not None:
            try:
                seconds = float(value)
            except ValueError:
                raise UsageError(f"{name}: {value!r} is not a number of seconds") from None
            if not seconds >= 0 or seconds == float("inf"):
                raise UsageError(f"{name}: {value!r} is not a number of seconds >= 0 (0 = never)")
            self.idle_timeout = seconds
        elif dest == "max_sessions" and value is not None:
            if not value.isdigit() or not 1 <= int(value) <= 10_000:
                raise UsageError(f"{name}: {value!r} is not a whole number from 1 to 10000")
            self.max_sessions = int(value)
        else:  # pragma: no cover - the table and this method disagree
            super().set_other(name, dest, value)


def _host_port(name: str, value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"{name}: {value!r} is not HOST:PORT (e.g. 127.0.0.1:8765, [::1]:0)")
    return host, int(port)


def parse(argv: list[str]) -> McpOptions:
    """Raises UsageError (unknown option, bad value, a non-loopback --http without --allow-remote)."""
    from ..mcp.transports import is_loopback

    opts = parse_args(argv, McpOptions(), _TABLE, command=False, cmd="mcp")
    assert isinstance(opts, McpOptions)
    if opts.http and not is_loopback(opts.http[0]) and not opts.allow_remote:
        raise UsageError(
            f"--http {opts.http[0]}: not a loopback address; the server gives shells in sandboxes to whoever "
            "has the token, so listening beyond this machine needs --allow-remote"
        )
    if opts.allow_remote and not opts.http:
        raise UsageError("--allow-remote only applies to --http")
    return opts


def run(argv: list[str]) -> int:
    """Serve until the client leaves (stdio) or a signal (HTTP); return the exit status."""
    opts = options_or_status(parse, argv, HELP, EXIT_USAGE)
    if isinstance(opts, int):
        return opts
    assert isinstance(opts, McpOptions)
    try:
        config = _config(opts)
    except UsageError as exc:
        report(exc)
        return EXIT_USAGE
    except (ValueError, OSError) as exc:  # settings file unreadable or invalid
        report(exc)
        return EXIT_ERROR

    import anyio
    import logging

    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format=f"{PROG}: mcp: %(levelname)s: %(message)s")
    from ..mcp.transports import bind, new_token, serve_http, serve_stdio

    try:
        if opts.http is None:
            anyio.run(serve_stdio, config)
            return EXIT_OK
        token = opts.token or _settings_token()
        generated = token is None
        token = token or new_token()
        try:
            sock = bind(*opts.http)
        except OSError as exc:
            report(f"--http {opts.http[0]}:{opts.http[1]}: cannot listen: {exc.strerror or exc}")
            return EXIT_ERROR
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        _say(f"serving Streamable HTTP at http://{shown}:{port}/mcp (Authorization: Bearer required)")
        if generated:
            _say(f"bearer token: {token}")
        anyio.run(serve_http, config, sock, token, opts.max_sessions)
        return EXIT_OK
    except KeyboardInterrupt:
        return 130


def _config(opts: McpOptions) -> "SessionConfig":
    """Raises UsageError (a bad sandbox option), ValueError/OSError (settings)."""
    from ..mcp.sessions import SessionConfig

    policy = build_policy(opts)
    return SessionConfig(image=opts.image, policy=policy, timeout=opts.timeout, env=dict(opts.env), idle_timeout=opts.idle_timeout or None)


def _settings_token() -> str | None:
    from ..settings import get_settings

    return get_settings().pygent_mcp_token


def _say(line: str) -> None:
    try:
        sys.stderr.write(f"{PROG}: mcp: {line}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def main(argv: list[str]) -> None:
    """Entry from cli/__init__.main (routed before typer is imported)."""
    sys.exit(run(argv))
