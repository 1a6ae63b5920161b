"""Operators' tools with PYGENT_BACKEND=ray, as an operator runs them: `pygent-runner doctor`
lists every node (engine, slots, tooling volume); `pygent-runner gc` works over the whole
cluster and touches only the cluster's node agents' sandboxes; a node's slots follow its engine."""

import subprocess
import sys

import pytest

from pygent.sandbox import SandboxPolicy
from pygent.sandbox.registry import get_backend

pytestmark = [pytest.mark.docker, pytest.mark.ray]


def _cli(env, *args, timeout=180):
    return subprocess.run([sys.executable, "-m", "pygent.cli", *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_doctor_lists_each_node_with_engine_slots_and_tooling(ray_env, ray_backend):
    with ray_backend.create("python", SandboxPolicy(), labels={"zone": "b"}):
        out = _cli(ray_env, "doctor")
    assert out.returncode == 0, out.stdout[-2000:]
    rows = [line for line in out.stdout.splitlines() if "node " in line and "slots used" in line]
    assert len(rows) == 3, out.stdout
    assert any("1 of 4 slots used (3 free)" in r for r in rows), rows
    assert all("engine" in r and "tooling volume ready" in r for r in rows), rows
    assert "3 live nodes" in out.stdout


def test_doctor_names_an_address_where_no_cluster_answers(ray_env):
    out = _cli(dict(ray_env, RAY_ADDRESS="127.0.0.1:9"), "doctor", timeout=60)
    assert out.returncode == 1 and "RAY_ADDRESS=127.0.0.1:9" in out.stdout, out.stdout[-1000:]


def test_gc_works_over_the_cluster_and_only_there(ray_env, ray_backend, docker_client):
    live = [ray_backend.create("python", SandboxPolicy(), labels={"zone": z}) for z in "ac"]
    local = get_backend("docker").create(get_backend("docker").resolve_image("python"), SandboxPolicy())
    try:
        kept = _cli(ray_env, "gc")
        assert kept.returncode == 0 and not any(b.id[:12] in kept.stdout for b in live), kept.stdout
        swept = _cli(ray_env, "gc", "--all")
        assert swept.returncode == 0, swept.stdout + swept.stderr[-1000:]
        assert all(f"removed {b.id[:12]}" in swept.stdout for b in live), swept.stdout
        assert local.id[:12] not in swept.stdout and local.exec("echo still").stdout == b"still\n"
    finally:
        for b in live:
            b.close()
        local.close()


def test_a_node_offers_slots_only_when_its_engine_answers(ray_env):
    cmd = [sys.executable, "-m", "pygent.sandbox.ray.node", "--resources"]
    env = dict(ray_env, PYGENT_RAY_SLOTS="5")
    env.pop("PYGENT_BACKEND")
    with_engine = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert with_engine.stdout.strip() == '{"pygent_slot": 5.0}', with_engine.stderr[-500:]
    without = subprocess.run(cmd, env=dict(env, DOCKER_HOST="unix:///nonexistent/docker.sock"), capture_output=True,
                             text=True, timeout=60)
    assert without.stdout.strip() == "{}", without.stderr[-500:]
