"""A backend-agnostic conformance suite: what every sandbox must do, on every engine.

Why shipped in the package (as inspect_ai's `self_check`): a new backend, a new
runtime or a user's own image is checked with the same code CI runs, from an
installed package:

    from pygent.sandbox import self_check
    report = self_check.run(lambda: open_sandbox("my/image", pool=False))
    assert report.failed == {}, report

Each check gets a fresh sandbox from `open_fn` (a factory) and raises
AssertionError with what it saw. A check may be a *known difference* of one
(backend, runtime, image kind): listed in KNOWN_DIFFERENCES with its reason,
never skipped silently. A known difference that passes is reported too, so
the list stays true.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from .base import Sandbox
    from .interface import Backend

OpenFn = Callable[[], "Sandbox"]
Check = Callable[["Sandbox"], None]

#: (backend, runtime or "*", image kind or "*") -> {check name: why it differs}.
#: Image kinds: "python" (python3 in the image), "bash" (bash, no python), "sh" (neither).
_GVISOR_NNP = ("under Docker, gVisor's /proc/self/status has no NoNewPrivs line to read (under Podman it has);"
               " the flag itself is applied by the engine, and with every capability dropped a setuid binary gains nothing")
_ROOTLESS_CGROUP1 = ("rootless on cgroup v1: an unprivileged user cannot be delegated cgroup v1 controllers, so the"
                     " engine sets no memory limit at all (doctor reports it as a FAIL); on cgroup v2 with systemd's"
                     " delegation the limit holds")
KNOWN_DIFFERENCES: dict[tuple[str, str, str], dict[str, str]] = {
    ("docker", "runsc", "*"): {"no_new_privs_flag_is_set": _GVISOR_NNP},
    # Backend names with a "-rootless-cgroup1" suffix: the engine runs as a user on a cgroup v1 host (variant()).
    ("podman-rootless-cgroup1", "*", "*"): {"memory_limit_reports_oom": _ROOTLESS_CGROUP1},
    ("docker-rootless-cgroup1", "*", "*"): {"memory_limit_reports_oom": _ROOTLESS_CGROUP1},
}


def variant(engine: "Backend") -> str:
    """The KNOWN_DIFFERENCES backend key for an engine: its name, plus "-rootless-cgroup1" when it runs
    rootless on cgroup v1, where it can enforce no cgroup limit. Docker says rootless in /info's
    SecurityOptions; Podman's compatible /info does not, its own /libpod/info does (the backend's rootless())."""
    info = engine.info()
    rootless = bool(getattr(engine, "rootless", lambda: False)())
    cgroup1 = str(info.get("CgroupVersion") or "1") == "1"
    return f"{engine.name}-rootless-cgroup1" if rootless and cgroup1 else engine.name


CHECKS: dict[str, Check] = {}


def check(fn: Check) -> Check:
    """Register a conformance check under its function name."""
    CHECKS[fn.__name__] = fn
    return fn


@dataclasses.dataclass
class Report:
    """Outcome per check: passed names, failures (name -> message), known differences seen."""

    passed: list[str] = dataclasses.field(default_factory=list)
    failed: dict[str, str] = dataclasses.field(default_factory=dict)
    known: dict[str, str] = dataclasses.field(default_factory=dict)
    unexpected_passes: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.unexpected_passes

    def __str__(self) -> str:
        lines = [f"{len(self.passed)} passed, {len(self.failed)} failed, {len(self.known)} known differences"]
        lines += [f"FAILED {name}: {msg}" for name, msg in self.failed.items()]
        lines += [f"known difference {name}: {why}" for name, why in self.known.items()]
        lines += [f"UNEXPECTED PASS {name} (listed as a known difference)" for name in self.unexpected_passes]
        return "\n".join(lines)


def known_for(backend: str, runtime: str, image_kind: str) -> dict[str, str]:
    """The known differences that apply to this combination."""
    out: dict[str, str] = {}
    for (b, r, k), checks in KNOWN_DIFFERENCES.items():
        if b == backend and r in ("*", runtime) and k in ("*", image_kind):
            out.update(checks)
    return out


def run(open_fn: OpenFn, *, known: dict[str, str] | None = None, only: list[str] | None = None) -> Report:
    """Run every check (or `only` these) on fresh sandboxes from `open_fn`."""
    known = known or {}
    report = Report()
    for name, fn in CHECKS.items():
        if only is not None and name not in only:
            continue
        try:
            sandbox = open_fn()
        except Exception as exc:  # noqa: BLE001 - a sandbox that cannot start fails every check
            message = f"could not open a sandbox: {type(exc).__name__}: {exc}"
            _record(report, name, message, known)
            continue
        try:
            fn(sandbox)
            message = None
        except Exception as exc:  # noqa: BLE001 - AssertionError, and anything a broken backend raises
            message = f"{type(exc).__name__}: {exc}"[:500]
        finally:
            sandbox.close()
        _record(report, name, message, known)
    return report


def _record(report: Report, name: str, message: str | None, known: dict[str, str]) -> None:
    if name in known:
        if message is None:
            report.unexpected_passes.append(name)
        else:
            report.known[name] = known[name]
    elif message is None:
        report.passed.append(name)
    else:
        report.failed[name] = message


def _eq(seen: object, wanted: object, what: str) -> None:
    if seen != wanted:
        raise AssertionError(f"{what}: wanted {wanted!r}, saw {seen!r}")


# --------------------------------------------------------------------------- commands


@check
def exit_code_and_separate_streams(sb: "Sandbox") -> None:
    r = sb.exec("echo out; echo err >&2; exit 3")
    _eq((r.exit_code, r.stdout, r.stderr), (3, b"out\n", b"err\n"), "exit code, stdout, stderr")


@check
def commands_run_under_bash(sb: "Sandbox") -> None:
    r = sb.exec('[[ -n "$BASH_VERSION" ]] && arr=(a b c) && echo "${#arr[@]}"')
    _eq((r.exit_code, r.stdout), (0, b"3\n"), "bash syntax works in every image")


@check
def stdin_is_passed_and_closed(sb: "Sandbox") -> None:
    r = sb.exec("cat; echo done", stdin=b"line1\nline2\n")
    _eq(r.stdout, b"line1\nline2\ndone\n", "stdin then EOF")


@check
def env_and_workdir(sb: "Sandbox") -> None:
    r = sb.exec('echo "$GREETING $PWD"', env={"GREETING": "hej"}, workdir="/tmp")
    _eq(r.stdout, b"hej /tmp\n", "env and workdir")


@check
def cwd_persists_between_commands(sb: "Sandbox") -> None:
    sb.exec("mkdir -p /workspace/sub && cd /workspace/sub")
    _eq(sb.exec("pwd").stdout, b"/workspace/sub\n", "cwd after cd")


@check
def timeout_kills_the_whole_tree(sb: "Sandbox") -> None:
    started = time.monotonic()
    r = sb.exec("(sleep 300 &) ; sleep 300", timeout=1)
    if not r.timed_out or r.exit_code != 124:
        raise AssertionError(f"not reported as a timeout: {r}")
    if time.monotonic() - started > 20:
        raise AssertionError("the call outlived its timeout by far")
    left = sb.exec("for d in /proc/[0-9]*; do c=$(tr '\\0' ' ' < $d/cmdline 2>/dev/null); case $c in 'sleep 300'*) echo $c;; esac; done")
    _eq(left.stdout, b"", "processes left after the timeout")


@check
def output_is_capped_head_and_tail(sb: "Sandbox") -> None:
    r = sb.exec("echo START; head -c 5000000 /dev/zero | tr '\\0' x; echo; echo END", max_output=4096)
    if not (r.stdout.startswith(b"START\n") and r.stdout.endswith(b"END\n") and r.stdout_truncated > 4_000_000):
        raise AssertionError(f"head/tail cap not applied: {len(r.stdout)} bytes kept, {r.stdout_truncated} cut")
    if len(r.stdout) > 4096 + 100:
        raise AssertionError(f"kept {len(r.stdout)} bytes for a 4096 cap")


@check
def background_child_does_not_hang_the_call(sb: "Sandbox") -> None:
    started = time.monotonic()
    r = sb.exec("sleep 30 & echo started", timeout=20)
    _eq((r.exit_code, r.stdout), (0, b"started\n"), "a background child holding stdout")
    if time.monotonic() - started > 10:
        raise AssertionError("the call waited for its background child")


@check
def memory_limit_reports_oom(sb: "Sandbox") -> None:
    # A memory hog any image has (dd's 700 MiB buffer; busybox and coreutils alike), fast under gVisor too.
    r = sb.exec("exec dd if=/dev/zero of=/dev/null bs=700M count=1", timeout=60)
    if not r.oom_killed or r.exit_code != 137:
        raise AssertionError(f"not reported as an OOM kill: exit {r.exit_code}, oom={r.oom_killed}, {r.stderr[-200:]!r}")


@check
def runs_as_non_root_without_capabilities(sb: "Sandbox") -> None:
    r = sb.exec("id -u; grep CapEff /proc/self/status")
    lines = r.stdout.decode().split()
    _eq(lines[0], "1000", "uid")
    _eq(lines[-1], "0000000000000000", "effective capabilities")


@check
def root_filesystem_is_read_only(sb: "Sandbox") -> None:
    r = sb.exec("echo x > /etc/pygent-probe")
    if r.exit_code == 0:
        raise AssertionError("wrote to /etc: the root is writable")


@check
def tooling_is_read_only(sb: "Sandbox") -> None:
    r = sb.exec("echo x > /opt/pygent/probe || echo refused")
    _eq(r.stdout.strip().splitlines()[-1:], [b"refused"], "the shared tooling volume is read-only")


@check
def no_network_interfaces_but_loopback(sb: "Sandbox") -> None:
    r = sb.exec("cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '")
    names = set(r.stdout.decode().split())
    if names - {"lo"}:
        raise AssertionError(f"network interfaces present: {sorted(names)}")


@check
def fork_bomb_is_contained(sb: "Sandbox") -> None:
    """Contained: the sandbox answers again, or (gVisor, whose sentry may die at the pids
    limit) it is reported gone with a clear error instead of hanging the caller."""
    from ..errors import SandboxError

    try:
        sb.exec("b() { b | b & }; b", timeout=5)
        r = sb.exec("echo alive", timeout=30)
    except SandboxError as exc:
        if "gone" not in str(exc):
            raise
        return
    if r.stdout != b"alive\n":
        raise AssertionError(f"the sandbox answers after a fork bomb: wanted b'alive\\n', saw {r.stdout!r} "
                             f"(exit {r.exit_code}, stderr {r.stderr[-300:]!r})")


@check
def cannot_mount(sb: "Sandbox") -> None:
    r = sb.exec("mkdir -p /tmp/m && mount -t tmpfs none /tmp/m && echo MOUNTED")
    if b"MOUNTED" in r.stdout:
        raise AssertionError("a command could mount a filesystem")


@check
def no_new_privs_flag_is_set(sb: "Sandbox") -> None:
    r = sb.exec("grep NoNewPrivs /proc/self/status")
    _eq(r.stdout.split()[-1:], [b"1"], "NoNewPrivs in /proc/self/status")


@check
def kernel_knobs_are_not_writable(sb: "Sandbox") -> None:
    r = sb.exec("for f in /proc/sys/kernel/hostname /proc/sysrq-trigger /sys/kernel/uevent_helper; do"
                " (echo x > $f) 2>/dev/null && echo WROTE $f; done; true")
    _eq(r.stdout, b"", "writes to kernel knobs")


@check
def workspace_is_size_bounded(sb: "Sandbox") -> None:
    r = sb.exec("dd if=/dev/zero of=/workspace/fill bs=1M count=400 2>&1; rm -f /workspace/fill", timeout=60)
    if b"No space left" not in r.stdout:
        raise AssertionError(f"a 400 MiB write into the 256 MiB workspace did not hit ENOSPC: {r.stdout[-200:]!r}")


# --------------------------------------------------------------------------- files


@check
def file_round_trip(sb: "Sandbox") -> None:
    sb.write_file("/workspace/dir/f.bin", bytes(range(256)) * 4)
    _eq(sb.read_file("/workspace/dir/f.bin"), bytes(range(256)) * 4, "read back what was written")
    _eq(sb.exec("wc -c < /workspace/dir/f.bin").stdout.strip(), b"1024", "the command sees the file")


@check
def missing_file_is_file_not_found(sb: "Sandbox") -> None:
    try:
        sb.read_file("/workspace/nope")
    except FileNotFoundError:
        return
    raise AssertionError("read_file of a missing file did not raise FileNotFoundError")


# --------------------------------------------------------------------------- ports

#: A loopback TCP service any image can run: the tooling volume's own python. Each
#: connection is read to its end (the client's half-close), then answered upper-cased.
TOOLING_PYTHON = "/opt/pygent/lib/ld.so --library-path /opt/pygent/lib /opt/pygent/bin/python3 -I -S"
ECHO_SERVICE = '''
import socket, sys, threading
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[1]))); srv.listen(64)
def serve(c):
    data = b""
    while True:
        got = c.recv(65536)
        if not got:
            break
        data += got
    c.sendall(data.upper()); c.close()
while True:
    c, _ = srv.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
'''


@check
def exposed_port_answers_over_the_channel(sb: "Sandbox") -> None:
    """expose(): a host connection reaches a loopback service inside, half-close included;
    a port nobody listens on is reset at once; close() ends the listener."""
    import socket
    from urllib.parse import urlsplit

    sb.write_file("/tmp/echo_service.py", ECHO_SERVICE)
    sb.exec_background(f"exec {TOOLING_PYTHON} /tmp/echo_service.py 7007")
    url = sb.expose(7007)
    address = (urlsplit(url).hostname, urlsplit(url).port)
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(address, timeout=10) as conn:
                conn.sendall(b"hello over the channel")
                conn.shutdown(socket.SHUT_WR)
                answer = b"".join(iter(lambda: conn.recv(65536), b""))
            if answer:
                break
        except OSError:
            pass  # reset: the service is not listening yet
        if time.monotonic() > deadline:
            raise AssertionError("the exposed port never answered")
        time.sleep(0.1)
    _eq(answer, b"HELLO OVER THE CHANNEL", "the service's answer after the client's half-close")
    dead = urlsplit(sb.expose(7008))
    try:
        # The reset may come before connect() returns: with a timeout Python connects
        # non-blocking and then reads SO_ERROR, which can already say ECONNRESET.
        with socket.create_connection((dead.hostname, dead.port), timeout=10) as conn:
            got = conn.recv(10)
    except ConnectionResetError:
        got = b""
    _eq(got, b"", "a connection to a port nobody listens on")
    sb.close()
    try:
        socket.create_connection(address, timeout=5).close()
    except OSError:
        return
    raise AssertionError("the listener still accepts after the sandbox was closed")


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    """`python -m pygent.sandbox.self_check [--image REF] [--runtime NAME] [--kind K] [--json]`:
    the suite against the backend this environment selects (PYGENT_BACKEND, DOCKER_HOST)."""
    import argparse
    import json

    from . import SandboxPolicy, open_sandbox
    from .registry import get_backend

    parser = argparse.ArgumentParser(prog="python -m pygent.sandbox.self_check")
    parser.add_argument("--image", default="python")
    parser.add_argument("--runtime", default=None)
    parser.add_argument("--kind", default="*", help="image kind for known differences: python, bash, sh")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    engine = get_backend()
    policy = SandboxPolicy(runtime=args.runtime)
    name = variant(engine)
    known = known_for(name, args.runtime or "*", args.kind)
    report = run(lambda: open_sandbox(args.image, policy, pool=False), known=known)
    if args.json:
        print(json.dumps(dataclasses.asdict(report) | {"backend": engine.name, "variant": name}))
    else:
        print(report)
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
