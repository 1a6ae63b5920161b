"""Engine-side checks the tests share: does a container exist, wait until it (or all of an owner's) is gone."""

from __future__ import annotations

import time


def container_exists(api, cid: str) -> bool:
    from docker.errors import NotFound

    try:
        api.inspect_container(cid)
        return True
    except NotFound:
        return False


def wait_gone(api, cid: str, timeout: float = 10.0) -> bool:
    """True once the engine no longer knows the container (polls)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not container_exists(api, cid):
            return True
        time.sleep(0.1)
    return not container_exists(api, cid)


OWNER_PID = "io.pygent.owner-pid"


def owned_by(api, pid: int) -> list[dict]:
    """Containers labelled with owner pid `pid` (a CLI or MCP server process the test started)."""
    return api.containers(all=True, filters={"label": f"{OWNER_PID}={pid}"})


def wait_owned_gone(api, pid: int, timeout: float = 10.0) -> list[dict]:
    """Containers still owned by pid after waiting up to timeout (empty = all gone)."""
    deadline = time.monotonic() + timeout
    while True:
        left = owned_by(api, pid)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def reap_owned(api, pids, timeout: float = 10.0) -> list[tuple[int, str]]:
    """(pid, short id) of every container still owned by one of `pids` after `timeout`; each is removed.

    For the leak checks of tests that start pygent processes of their own (CLI, MCP servers).
    """
    leaked = []
    for pid in pids:
        for c in wait_owned_gone(api, pid, timeout):
            leaked.append((pid, c["Id"][:12]))
            try:
                api.remove_container(c["Id"], force=True, v=True)
            except Exception:
                pass
    return leaked
