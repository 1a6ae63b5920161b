"""Engine-side checks the tests share: does a container exist, wait until it is gone."""

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
