"""`pygent-runner gc` removes orphans and reports each one."""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import pytest

from support.cli import one_error_line, run, cli_env

pytestmark = pytest.mark.docker


def _orphan(docker_client, *, owner_pid: int, age: float) -> str:
    """A container labelled like a pygent sandbox, with the given owner and age."""
    from pygent.sandbox import lifecycle
    from pygent.sandbox.images import resolve_image

    labels = {
        lifecycle.LABEL_MANAGED: "1",
        lifecycle.LABEL_OWNER_PID: str(owner_pid),
        lifecycle.LABEL_OWNER_HOST: lifecycle.HOSTNAME,
        lifecycle.LABEL_SESSION: uuid.uuid4().hex[:12],  # not this test process's session
        lifecycle.LABEL_CREATED: f"{time.time() - age:.3f}",
    }
    api = docker_client.api
    cid = api.create_container(
        resolve_image("minimal"), command=["sleep", "300"], labels=labels,
        network_disabled=True, host_config=api.create_host_config(init=True),
    )["Id"]
    api.start(cid)
    return cid


def _remove(docker_client, cid: str) -> None:
    try:
        docker_client.api.remove_container(cid, force=True, v=True)
    except Exception:
        pass


def _exists(docker_client, cid: str) -> bool:
    return bool(docker_client.api.containers(all=True, filters={"id": cid}))


def test_gc_removes_a_too_old_sandbox_and_reports_it(docker_client):
    # Owner alive (this pytest process) but 5.5 h old: other processes' automatic gc
    # (max age 6 h) leaves it alone, `gc --max-age 5h` must remove it.
    cid = _orphan(docker_client, owner_pid=os.getpid(), age=5.5 * 3600)
    try:
        r = run("gc", "--max-age", str(5 * 3600))
        assert r.returncode == 0, r.stderr
        out = r.stdout.decode()
        line = next(l for l in out.splitlines() if cid[:12] in l)
        assert "older than 18000s" in line and f"owner pid {os.getpid()}" in line
        assert out.splitlines()[-1].startswith("gc: removed ")
        assert not _exists(docker_client, cid)
    finally:
        _remove(docker_client, cid)


def test_gc_removes_a_dead_owners_sandbox(docker_client):
    dead = subprocess.Popen(["true"])
    dead.wait()
    cid = _orphan(docker_client, owner_pid=dead.pid, age=1)
    try:
        r = run("gc")
        assert r.returncode == 0, r.stderr
        # Another pygent process's background gc may have removed it first; if we did, say why.
        for line in r.stdout.decode().splitlines():
            if cid[:12] in line:
                assert "owner process is gone" in line
        assert r.stdout.decode().splitlines()[-1].startswith("gc: ")
        assert not _exists(docker_client, cid)
    finally:
        _remove(docker_client, cid)


def test_gc_leaves_live_owners_sandboxes_alone(docker_client):
    cid = _orphan(docker_client, owner_pid=os.getpid(), age=1)
    try:
        r = run("gc")
        assert r.returncode == 0
        assert cid[:12] not in r.stdout.decode()
        assert _exists(docker_client, cid)
    finally:
        _remove(docker_client, cid)


def test_gc_with_the_engine_down_is_one_line():
    r = run("gc", env=cli_env(DOCKER_HOST="unix:///nonexistent.sock"))
    assert r.returncode == 1
    assert "no Docker engine answers" in one_error_line(r.stderr)
    assert r.stdout == b""
