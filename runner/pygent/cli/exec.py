"""`pygent-runner exec`: run one untrusted command in a fresh sandbox, like `docker run --rm`.

Start-up time is the point of this module: `main()` routes `exec` here without
building the typer app, options are parsed by hand (no click/argparse), and
pygent.sandbox (pydantic, docker-py) is imported only once the options are
known to be valid. Output streams live, binary-safe, and is not capped: it is
never held in memory, so the host's memory stays bounded whatever the command
prints.

Exit status: the command's own; 124 when --timeout killed it; 125 when the
sandbox could not run it (engine down, image missing, bad option value: one
`pygent-runner: error: ...` line on stderr); 137 and a stderr line when the
OOM killer ended it; 141 when our stdout was closed; 128+N on signal N.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import TYPE_CHECKING, Any, Callable, Iterator, NoReturn

from .common import EXIT_OOM, EXIT_OK, EXIT_PIPE, EXIT_SANDBOX, EXIT_TIMEOUT, PROG, report
from .exec_options import Options, UsageError

if TYPE_CHECKING:
    from ..sandbox import Sandbox, SandboxPolicy

HELP = f"""\
Usage: {PROG} exec [OPTIONS] [--] CMD [ARGS...]

  Run one command in a fresh, hardened sandbox and remove the sandbox after.

  CMD and ARGS are quoted with shlex.join into one bash command; a single
  argument is passed to bash as is, so `exec -- 'echo a | wc -c'` works like
  `bash -c`. stdout and stderr stream live to ours (not capped: nothing is
  buffered); stdin is passed through when it is not a terminal.

Options:
  --image IMAGE          Bundled image (python, minimal) or any local image
                         [default: PYGENT_IMAGE, python]
  --timeout SECONDS      Wall-clock limit; 0 = none [default: PYGENT_COMMAND_TIMEOUT, 60]
  -m, --memory SIZE      Memory limit, swap included, e.g. 256m, 1g [default: 512m]
  --cpus N               CPU limit in cores, e.g. 0.5 [default: 1]
  --pids N               Max processes+threads [default: 256]
  --network/--no-network Network access [default: --no-network: loopback only]
  --allow-host HOST[:PORT]
                         Reach only HOST over HTTP(S), through pygent's egress
                         proxy (repeatable; *.suffix; ADDR/PREFIX lets allowed
                         names resolve into that private range)
                         [default: PYGENT_ALLOW_HOSTS]
  --runtime NAME         OCI runtime, e.g. runsc (gVisor) [default: PYGENT_RUNTIME, engine's]
  -w, --workdir DIR      Working directory inside the sandbox [default: /workspace]
  -e, --env KEY=VALUE    Set a variable for the command (repeatable)
  -v, --mount SRC:DST[:ro|rw]
                         Bind-mount host directory SRC at DST (repeatable;
                         read-write unless :ro, as docker -v)
  -p, --publish PORT[:HOSTPORT]
                         Reach the sandbox's 127.0.0.1:PORT from the host at
                         http://127.0.0.1:HOSTPORT (any free port if left out),
                         over the sandbox's own channel: no network is given to
                         it. The URL is printed on stderr once the port answers
                         (repeatable)
  --bind ADDR            Host address for -p [default: 127.0.0.1]; any other
                         address opens the ports to whoever reaches this host
  --no-pool              Accepted for symmetry; exec never uses a warm pool
  -h, --help             Show this message and exit.

Exit status: the command's; 124 timeout; 125 the sandbox could not run it
(engine down, image missing, bad option); 137 killed (OOM: says so on stderr);
141 our stdout closed; 130/143 interrupted (SIGINT/SIGTERM).
"""

# option -> (destination, takes a value)
_OPTIONS: dict[str, tuple[str, bool]] = {
    "--image": ("image", True),
    "--timeout": ("timeout", True),
    "--memory": ("memory", True),
    "-m": ("memory", True),
    "--cpus": ("cpus", True),
    "--pids": ("pids", True),
    "--runtime": ("runtime", True),
    "--workdir": ("workdir", True),
    "-w": ("workdir", True),
    "--env": ("env", True),
    "-e": ("env", True),
    "--mount": ("mount", True),
    "-v": ("mount", True),
    "--allow-host": ("allow_host", True),
    "--publish": ("publish", True),
    "-p": ("publish", True),
    "--bind": ("bind", True),
    "--network": ("network", False),
    "--no-network": ("no_network", False),
    "--no-pool": ("no_pool", False),
    "--help": ("help", False),
    "-h": ("help", False),
}


def parse_args(
    argv: list[str],
    opts: Options | None = None,
    table: dict[str, tuple[str, bool]] | None = None,
    *,
    command: bool = True,
    cmd: str = "exec",
    require_command: bool = True,
) -> Options:
    """Options up to `--` or the first non-option word; the rest is the command.

    `mcp` reuses this with its own Options subclass and option table, command=False
    (no command: any word left is an error) and cmd="mcp" (for messages); `shell` with
    require_command=False (a command is allowed, its default is an interactive bash). Raises UsageError.
    """
    opts = Options() if opts is None else opts
    table = _OPTIONS if table is None else table
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--" or not arg.startswith("-") or arg == "-":
            if not command:
                raise UsageError(f"unexpected argument {arg!r} (see `{PROG} {cmd} --help`)")
            opts.command = argv[i + 1 :] if arg == "--" else argv[i:]
            break
        name, eq, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name not in table:
            raise UsageError(f"no such option: {name} (see `{PROG} {cmd} --help`)")
        dest, takes_value = table[name]
        if not takes_value:
            if eq:
                raise UsageError(f"option {name} takes no value")
            _set_flag(opts, name, dest)
            i += 1
            continue
        if eq:
            value = inline
        elif i + 1 < len(argv):
            value = argv[i + 1]
            i += 1
        else:
            raise UsageError(f"option {name} needs a value")
        _set_value(opts, name, dest, value)
        i += 1
    if command and require_command and not opts.command and not opts.help:
        raise UsageError(f"no command given (usage: {PROG} exec [OPTIONS] -- CMD [ARGS...])")
    return opts


def _set_flag(opts: Options, name: str, dest: str) -> None:
    if dest == "network":
        opts.network = True
    elif dest == "no_network":
        opts.network = False
    elif dest == "help":
        opts.help = True
    elif dest != "no_pool":  # no_pool: exec always starts a fresh sandbox
        opts.set_other(name, dest, None)


def _set_value(opts: Options, name: str, dest: str, value: str) -> None:
    if dest == "image":
        if not value.strip():
            raise UsageError(f"{name}: empty image name")
        opts.image = value.strip()
    elif dest == "timeout":
        seconds = _number(name, value, float)
        if seconds < 0 or seconds != seconds:
            raise UsageError(f"{name}: {value!r} is not a number of seconds >= 0 (0 = no limit)")
        opts.timeout = float("inf") if seconds == 0 else seconds
    elif dest == "memory":
        opts.memory = value
    elif dest == "cpus":
        opts.cpus = _number(name, value, float)
    elif dest == "pids":
        opts.pids = _number(name, value, int)
    elif dest == "runtime":
        opts.runtime = value
    elif dest == "workdir":
        if not value or "\0" in value:
            raise UsageError(f"{name}: invalid directory {value!r}")
        opts.workdir = value if value.startswith("/") else "/workspace/" + value
    elif dest == "env":
        key, eq, val = value.partition("=")
        if not eq or not key or "\0" in value:
            raise UsageError(f"{name}: {value!r} is not KEY=VALUE")
        opts.env[key] = val
    elif dest == "mount":
        opts.mounts.append(value)
    elif dest == "allow_host":
        opts.allow_hosts.append(value)
    elif dest == "publish":
        opts.ports.append(_port_spec(name, value))
    elif dest == "bind":
        if not value.strip():
            raise UsageError(f"{name}: empty address")
        opts.bind = value.strip()
    else:
        opts.set_other(name, dest, value)


def _port_spec(name: str, value: str) -> tuple[int, int]:
    """PORT[:HOSTPORT] -> (port, host port; 0 = any free one). Raises UsageError."""
    port, _, host = value.partition(":")
    try:
        inside, outside = int(port), int(host) if host else 0
    except ValueError:
        inside = outside = -1
    if not 0 < inside < 65536 or not 0 <= outside < 65536:
        raise UsageError(f"{name}: {value!r} is not PORT[:HOSTPORT] with ports from 1 to 65535")
    return inside, outside


def publish(sandbox: Any, opts: Options, wait: float | None) -> None:
    """Expose opts.ports; a thread per port prints its URL on stderr once it answers.

    Raises: SandboxError (a host port taken).
    """
    import threading

    from ..sandbox.forward import is_loopback

    bind = opts.bind or "127.0.0.1"
    if opts.ports and not is_loopback(bind):
        report(f"--bind {bind}: the sandbox's ports are open to whoever can reach this host there", prefix="warning")
    for port, host_port in opts.ports:
        fwd = sandbox.forward(port, host_port, bind)

        def announce(fwd: Any = fwd) -> None:
            if fwd.wait_answering(1e9 if wait is None or wait == float("inf") else wait):
                sys.stderr.write(f"{PROG}: port {fwd.port} is answering at {fwd.url}\n")
                sys.stderr.flush()

        threading.Thread(target=announce, name=f"pygent-announce-{port}", daemon=True).start()


def _number(name: str, value: str, kind: Callable[[str], float | int]) -> float | int:
    try:
        return kind(value)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise UsageError(f"{name}: {value!r} is not {what}") from None


_FIELD_OPTION = {"memory": "--memory", "cpus": "--cpus", "pids": "--pids", "runtime": "--runtime", "mounts": "--mount"}


def build_policy(opts: Options) -> "SandboxPolicy":
    """The default (settings) policy with the options applied; ValueError -> UsageError."""
    from ..errors import ConfigError
    from ..sandbox import Mount
    from .common import cli_policy

    mounts = []
    for spec in opts.mounts:
        try:
            mount = Mount.parse(spec)
        except ValueError as exc:
            raise UsageError(f"--mount: {_first_error(exc)}") from None
        if not mount.source.is_dir():
            raise UsageError(f"--mount: {spec!r}: {mount.source} is not a directory on this host")
        mounts.append(mount)
    overrides: dict[str, object] = {
        "memory": opts.memory,
        "cpus": opts.cpus,
        "pids": opts.pids,
        "runtime": opts.runtime,
        "mounts": tuple(mounts) or None,
    }
    try:
        policy = cli_policy(network=opts.network, allow_hosts=opts.allow_hosts, **{k: v for k, v in overrides.items() if v is not None})
    except ConfigError as exc:
        raise UsageError(_option_named(str(exc))) from None
    return policy


def _option_named(text: str) -> str:
    """'memory: ...' -> '--memory: ...' (the option the user typed)."""
    field, sep, rest = text.partition(": ")
    return f"{_FIELD_OPTION[field]}: {rest}" if sep and field in _FIELD_OPTION else text


def _first_error(exc: ValueError, names: dict[str, str] | None = None) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):  # pydantic ValidationError
        try:
            e = errors()[0]
            loc = [str(p) for p in e.get("loc", ())]
            where = (names or {}).get(loc[0], loc[0]) if loc else ""
            msg = str(e.get("msg", "")).removeprefix("Value error, ")
            return f"{where}: {msg}" if where else msg
        except Exception:  # pragma: no cover
            pass
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


# --------------------------------------------------------------------------- streams


class _OutputClosed(Exception):
    """Our stdout's reader went away: stop the command (a pipeline's SIGPIPE)."""


def _writer(stream: object, *, fatal: bool) -> Callable[[bytes], None]:
    """A callback writing chunks to stream's binary buffer, flushed per chunk."""
    buffer = getattr(stream, "buffer", None)
    if buffer is None:
        return lambda data: None
    dead = False

    def write(data: bytes) -> None:
        nonlocal dead
        if dead:
            return
        try:
            buffer.write(data)
            buffer.flush()
        except (BrokenPipeError, ValueError, OSError):
            dead = True
            if fatal:
                raise _OutputClosed() from None

    return write


def _stdin_source() -> Iterator[bytes] | None:
    """Host stdin as chunks, or None when it is a terminal, closed, or /dev/null."""
    if sys.stdin is None:
        return None
    try:
        fd = sys.stdin.fileno()
        st = os.fstat(fd)
        if os.isatty(fd):
            return None
        devnull = os.stat(os.devnull)
        if st.st_rdev == devnull.st_rdev and st.st_ino == devnull.st_ino and st.st_dev == devnull.st_dev:
            return None
    except (OSError, ValueError, AttributeError):
        return None

    def chunks() -> Iterator[bytes]:
        while True:
            try:
                data = os.read(fd, 1 << 16)
            except InterruptedError:
                continue
            except OSError:
                return
            if not data:
                return
            yield data

    return chunks()


# --------------------------------------------------------------------------- signals


class _Interrupted(BaseException):
    """Raised from a signal handler: unwinds through the sandbox code so it cleans up."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.code = 128 + signum


class _Signals:
    """SIGINT/SIGTERM/SIGHUP: the first one interrupts; during clean-up they are only noted."""

    WATCHED = ("SIGINT", "SIGTERM", "SIGHUP")

    def __init__(self) -> None:
        self.received: int | None = None
        self.cleaning = False
        self.previous: dict[int, object] = {}

    def install(self) -> None:
        for name in self.WATCHED:
            signum = getattr(signal, name, None)
            if signum is None:
                continue
            try:
                if name == "SIGHUP" and signal.getsignal(signum) == signal.SIG_IGN:
                    continue  # nohup: keep ignoring it
                self.previous[signum] = signal.signal(signum, self._handle)
            except (ValueError, OSError):  # not the main thread
                pass

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            try:
                signal.signal(signum, handler)  # type: ignore[arg-type]
            except (ValueError, OSError, TypeError):
                pass
        self.previous.clear()

    def _handle(self, signum: int, frame: object) -> None:
        first = self.received is None
        if first:
            self.received = signum
        if first and not self.cleaning:
            raise _Interrupted(signum)


# --------------------------------------------------------------------------- running


def options_or_status(parse: Callable[[list[str]], Options], argv: list[str], help_text: str, bad: int) -> Options | int:
    """The parsed options, or the exit status when they were bad (`bad`, reported) or --help (printed).

    Shared with `mcp`, which parses exec's options too.
    """
    try:
        opts = parse(argv)
    except UsageError as exc:
        report(exc)
        return bad
    if opts.help:
        sys.stdout.write(help_text)
        sys.stdout.flush()
        return EXIT_OK
    return opts


def run(argv: list[str]) -> int:
    """Run `exec` with argv (what follows the word exec); return the exit status."""
    opts = options_or_status(parse_args, argv, HELP, EXIT_SANDBOX)
    if isinstance(opts, int):
        return opts
    signals = _Signals()
    signals.install()
    opened: list["Sandbox"] = []
    code = EXIT_SANDBOX
    try:
        code = _run(opts, opened.append)
    except _Interrupted as exc:
        code = exc.code
    finally:
        signals.cleaning = True  # a signal now is noted, not raised: removal must finish
        for sandbox in opened:
            try:
                # Closing the stream ends the container's main process and the engine's
                # auto-remove deletes it; not waiting for the remove saves ~45 ms per call.
                sandbox.close(wait=signals.received is None)
            except Exception as exc:  # the command's status stands; say what may be left behind
                report(exc, prefix="warning")
        signals.restore()
    if signals.received is not None:
        code = 128 + signals.received
    return code


def _run(opts: Options, keep: Callable[[Any], None]) -> int:
    from ..errors import PygentError

    from ..sandbox.lifecycle import PURPOSE

    PURPOSE.set("exec")  # `ps` shows what the sandbox is for (its labels are made from this)
    command = opts.command[0] if len(opts.command) == 1 else _join(opts.command)
    try:
        sandbox = _quick_sandbox(opts)
        fresh = sandbox is None
        if sandbox is None:
            from ..sandbox import open_sandbox

            sandbox = open_sandbox(opts.image, build_policy(opts), pool=False)
        memory = sandbox.memory_limit
        keep(sandbox)
        if opts.ports:
            publish(sandbox, opts, opts.timeout)
        result = sandbox.exec(
            command,
            timeout=opts.timeout,
            env=opts.env or None,
            workdir=opts.workdir,
            stdin=_stdin_source(),
            on_stdout=_writer(sys.stdout, fatal=True),
            on_stderr=_writer(sys.stderr, fatal=False),
        )
        if fresh:
            from . import exec_cache

            exec_cache.store(opts, sandbox, opts.image)
    except UsageError as exc:
        report(exc)
        return EXIT_SANDBOX
    except _OutputClosed:
        _silence_stdout()
        return EXIT_PIPE
    except PygentError as exc:
        report(exc)
        return EXIT_SANDBOX
    except (OSError, ValueError) as exc:  # e.g. a settings file we cannot read
        report(exc)
        return EXIT_SANDBOX
    if result.timed_out:
        return EXIT_TIMEOUT
    if result.oom_killed:
        report(f"the command was killed: out of memory (limit {memory}; raise it with --memory)")
        return EXIT_OOM
    return result.exit_code


def _quick_sandbox(opts: Options) -> Any:
    """A sandbox started from what an earlier run remembered, or None.

    The fast path (no pydantic, no docker-py): the same backend code as the library,
    from a stored recipe (cli/exec_cache.py). Any refusal before the command runs
    (image removed, runtime gone, engine restarted) means the full path, which
    repairs what it can and explains the rest.
    """
    from . import exec_cache

    entry = exec_cache.load(opts)
    if entry is None:
        return None
    from ..errors import PygentError
    from ..sandbox.registry import get_backend

    recipe = entry["recipe"]
    try:
        return get_backend(recipe["backend"]).start_from_recipe(recipe)
    except (PygentError, OSError, KeyError, TypeError, ValueError):
        return None


def _join(args: list[str]) -> str:
    import shlex

    return shlex.join(args)


def _silence_stdout() -> None:
    """After EPIPE: point fd 1 at /dev/null so the interpreter's final flush stays quiet."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError, AttributeError):
        pass


def main(argv: list[str]) -> NoReturn:
    """The fast path: run, flush, and leave without the interpreter's slow teardown."""
    code = run(argv)
    engine = sys.modules.get("pygent.sandbox.engine")
    if engine is not None:  # os._exit skips atexit: an ssh:// relay's socket directory must go too
        engine.reset_client()
    lifecycle = sys.modules.get("pygent.sandbox.lifecycle")
    if lifecycle is not None:  # os._exit skips atexit: close what a signal kept from reaching us
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        lifecycle.close_all()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code & 0xFF if code >= 0 else EXIT_SANDBOX)
