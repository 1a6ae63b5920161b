"""What every section gets: run size, a console, child processes, and leak bookkeeping."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from .core import REPO

#: The docker CLI baselines run exactly these images (what `pygent-runner images build` tags).
PY_IMAGE = "pygent/python:latest"
MIN_IMAGE = "pygent/minimal:latest"


@dataclass
class Ctx:
    quick: bool = False
    console: Any = None
    #: io.pygent.session labels of every process that made sandboxes for us (leak check)
    sessions: set[str] = field(default_factory=set)
    #: pids of child processes that may have made sandboxes (owner-pid label)
    child_pids: set[int] = field(default_factory=set)

    def n(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def log(self, msg: str) -> None:
        if self.console is not None:
            self.console.print(f"[dim]  · {msg}[/dim]")

    # -- child processes ---------------------------------------------------------
    def child(self, *args: str, timeout: float = 300) -> dict[str, Any]:
        """Run `python -m bench.child ARGS` (a fresh interpreter) and return its JSON report."""
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.child", *args], cwd=REPO, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.child_pids.add(proc.pid)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise RuntimeError(f"bench.child {' '.join(args)} timed out after {timeout:g}s") from None
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            tail = (err or out).strip().splitlines()[-3:]
            raise RuntimeError(f"bench.child {' '.join(args)} failed (rc {proc.returncode}): {' | '.join(tail)[:400]}")
        report = json.loads(lines[-1])
        if report.get("session"):
            self.sessions.add(report["session"])
        return report

    def popen_pid(self, pid: int) -> None:
        self.child_pids.add(pid)


def run_cmd(argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)


_demand = None


def wait_pool_full(pool: Any, timeout: float = 60.0) -> bool:
    """Block until a SandboxPool holds `size` ready sandboxes (and is not creating more).

    The bench is a long-lived process that keeps wanting sandboxes, as an app with a live
    Agent does: it holds demand (so the pool's linger never drains it between rows) and
    asks for one sandbox first when the pool has not been asked yet (it fills on demand).
    """
    global _demand
    if _demand is None:
        from pygent.sandbox import demand

        _demand = demand.hold(wait_pool_full)
    if not getattr(pool, "running", True):
        pool.acquire().close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pool.ready >= pool.size:
            return True
        if pool.last_error is not None and time.monotonic() + 1 > deadline:
            break
        time.sleep(0.005)
    return False


def leftover_containers(ctx: Ctx, wait: float = 15.0) -> list[dict[str, Any]]:
    """Containers still on the engine that this benchmark (or its children) made."""
    from pygent.sandbox import lifecycle
    from pygent.sandbox.engine import get_client

    api = get_client().api
    pids = {str(p) for p in ctx.child_pids | {os.getpid()}}
    sessions = set(ctx.sessions) | {lifecycle.SESSION_ID}
    deadline = time.monotonic() + wait
    while True:
        mine = []
        for c in api.containers(all=True, filters={"label": lifecycle.LABEL_MANAGED}):
            labels = c.get("Labels") or {}
            if labels.get(lifecycle.LABEL_SESSION) in sessions or (
                labels.get(lifecycle.LABEL_OWNER_PID) in pids and labels.get(lifecycle.LABEL_OWNER_HOST) == lifecycle.HOSTNAME
            ):
                mine.append(c)
        if not mine or time.monotonic() > deadline:
            return mine
        time.sleep(0.25)
