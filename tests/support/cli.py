"""CLI test helpers (importable by name: `conftest` is ambiguous across test folders).

Helpers for running the real CLI as a subprocess, and a leak check by owner pid.

Every CLI process gets its own pygent session id, so the suite-wide leak check
(tests/conftest.py, by session) cannot see its containers: here we remember the
pid of every CLI process we start and, at the end, require that no container
labelled with one of those owner pids is left (removing any we find).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


CLI = [sys.executable, "-m", "pygent.cli"]
OWNER_PID = "io.pygent.owner-pid"
REPO = Path(__file__).resolve().parents[2]  # the repository root

_pids: list[int] = []
#: `run` and `chat` always write a run log: the tests' go under here, never into the user's home
#: (XDG_STATE_HOME, not PYGENT_LOG_DIR: a PYGENT_ variable would change the exec cache's key).
STATE_HOME = Path(tempfile.mkdtemp(prefix="pygent-test-state-"))


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYGENT_CONFIG", None)
    env.setdefault("XDG_STATE_HOME", str(STATE_HOME))
    env.update(extra)
    return env


def popen(*args: str, env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
    """Start `pygent-runner ARGS...`; its pid is remembered for the leak check."""
    kw.setdefault("stdin", subprocess.DEVNULL)
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    proc = subprocess.Popen([*CLI, *args], env=env or cli_env(), cwd=REPO, **kw)
    _pids.append(proc.pid)
    return proc


def run(*args: str, input: bytes | None = None, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `pygent-runner ARGS...` to completion; stdin is /dev/null unless input is given."""
    proc = popen(*args, env=env, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL)
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def containers_of(pid: int) -> list[dict]:
    from support.engine import owned_by

    from pygent.sandbox.engine import get_client

    return owned_by(get_client().api, pid)


def wait_gone(pid: int, timeout: float = 10.0) -> list[dict]:
    """Containers still owned by pid after waiting up to timeout (empty = all gone)."""
    from support.engine import wait_owned_gone

    from pygent.sandbox.engine import get_client

    return wait_owned_gone(get_client().api, pid, timeout)


def wait_started(pid: int, timeout: float = 30.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [c for c in containers_of(pid) if c.get("State") == "running"]
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"no running container owned by pid {pid} after {timeout}s")


def one_error_line(stderr: bytes) -> str:
    """stderr must be exactly one `pygent-runner: error: ...` line; return it."""
    lines = stderr.decode().splitlines()
    assert len(lines) == 1, f"expected one error line, got: {lines!r}"
    assert lines[0].startswith("pygent-runner: error: "), lines[0]
    return lines[0]


