"""Load: many sandboxes one after another and at once; nothing left, host resources back to level."""

import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from pygent.sandbox import lifecycle, open_sandbox
from pygent.sandbox.engine import release_idle_connections

pytestmark = pytest.mark.timeout(420)


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _one(_: int = 0) -> str:
    with open_sandbox("python", pool=False) as sb:
        r = sb.exec("echo ok")
        assert r.stdout == b"ok\n", r
        return sb.id


def _ours(api) -> list:
    return api.containers(all=True, filters={"label": f"{lifecycle.LABEL_SESSION}={lifecycle.SESSION_ID}"})


def test_200_sequential_and_32_concurrent_leave_nothing_and_resources_return(docker_client):
    api = docker_client.api
    # Warm up: imports, the client's connection pool at its working size, image resolution.
    with ThreadPoolExecutor(32) as ex:
        list(ex.map(_one, range(32)))
    release_idle_connections()  # idle keep-alive connections are reusable, not leaks: compare without them
    live0 = lifecycle.live_count()
    rss0, fds0 = _rss_kib(), _fds()

    ids = [_one() for _ in range(200)]
    assert len(set(ids)) == 200  # disposable: never the same container twice
    with ThreadPoolExecutor(32) as ex:
        ids32 = list(ex.map(_one, range(32)))
    assert len(set(ids32)) == 32

    made = set(ids) | set(ids32)
    left = [c["Id"] for c in _ours(api) if c["Id"] in made]  # (other tests' warm pools may exist)
    assert left == []
    # None of ours is still tracked (others' warm pool members may drain in the meantime: the linger).
    assert lifecycle.live_count() <= live0
    release_idle_connections()
    fds1, rss1 = _fds(), _rss_kib()
    assert fds1 <= fds0 + 2, f"open file descriptors grew from {fds0} to {fds1}"
    assert rss1 - rss0 < 20 * 1024, f"RSS grew by {(rss1 - rss0) / 1024:.1f} MiB over 232 sandboxes"
