"""Containers go away with their owner, however it ends; errors say what to do.

Owners are real child Python processes, killed with real signals.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid

import pydantic
import pytest

from pygent.errors import ConfigError, ImageNotFound, RuntimeUnavailable
from pygent.sandbox import SandboxPolicy, lifecycle, open_sandbox
from pygent.sandbox.policy import Mount

from sbhelpers import COMBO_IDS, COMBOS, container_exists, run_child, volume_exists, volume_names, wait_gone

pytestmark = pytest.mark.docker


def _session_containers(api, *extra_labels: str) -> list[dict]:
    labels = [f"{lifecycle.LABEL_SESSION}={lifecycle.SESSION_ID}", *extra_labels]
    return api.containers(all=True, filters={"label": labels})


def _start_owner(code: str) -> tuple[subprocess.Popen, str]:
    """Start a child owner; returns it and the container id it printed first."""
    child = run_child(code, start_new_session=True)
    line = child.stdout.readline().strip()
    if not line.startswith("ID "):
        child.kill()
        out, err = child.communicate(timeout=10)
        pytest.fail(f"the owner did not start a sandbox: {line}{out}\n{err}")
    return child, line.split()[1]


# -- labels --------------------------------------------------------------------------------


def test_containers_carry_owner_labels(docker_client):
    before = time.time()
    with open_sandbox("minimal", SandboxPolicy(), pool=False) as sb:
        labels = docker_client.api.inspect_container(sb.id)["Config"]["Labels"]
    assert labels[lifecycle.LABEL_MANAGED] == "1"
    assert labels[lifecycle.LABEL_OWNER_PID] == str(os.getpid())
    assert labels[lifecycle.LABEL_OWNER_HOST] == socket.gethostname()
    assert labels[lifecycle.LABEL_SESSION] == lifecycle.SESSION_ID
    assert before - 1 <= float(labels[lifecycle.LABEL_CREATED]) <= time.time() + 1
    assert lifecycle.LABEL_POOLED not in labels


# -- the owner dies ------------------------------------------------------------------------


@pytest.mark.parametrize("image, runtime", COMBOS, ids=COMBO_IDS)
def test_owner_killed_with_sigkill_mid_command_container_disappears(image, runtime, docker_client):
    api = docker_client.api
    child, cid = _start_owner(
        f"""
        from pygent.sandbox import open_sandbox, SandboxPolicy
        sb = open_sandbox({image!r}, SandboxPolicy(runtime={runtime!r}), pool=False)
        print("ID", sb.id, flush=True)
        sb.exec("sleep 300", timeout=600)
        """
    )
    try:
        assert container_exists(api, cid)
        volumes = volume_names(api, cid)
        time.sleep(0.5)  # the command is running now
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        assert wait_gone(api, cid, timeout=10), f"container {cid[:12]} outlived its SIGKILLed owner"
        for v in volumes:
            assert not volume_exists(api, v), f"volume {v} outlived its container"
    finally:
        if child.poll() is None:
            child.kill()
        if container_exists(api, cid):
            api.remove_container(cid, force=True, v=True)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, -signal.SIGINT)], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("image", ["python", "minimal"])
def test_owner_stopped_by_signal_closes_its_sandbox(image, sig, code, docker_client):
    api = docker_client.api
    child, cid = _start_owner(
        f"""
        import atexit, time
        from pygent.sandbox import lifecycle, open_sandbox
        # Registered first, so it runs last: after pygent's own exit handler.
        atexit.register(lambda: print("live-at-exit", lifecycle.live_count(), flush=True))
        sb = open_sandbox({image!r}, pool=False)
        print("ID", sb.id, flush=True)
        time.sleep(300)
        """
    )
    try:
        os.kill(child.pid, sig)
        out, err = child.communicate(timeout=20)
        assert "live-at-exit 0" in out, f"the owner did not close its sandbox on {sig.name}: {out}\n{err}"
        assert child.returncode == code, err
        assert wait_gone(api, cid, timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
        if container_exists(api, cid):
            api.remove_container(cid, force=True, v=True)


# -- gc ------------------------------------------------------------------------------------


def test_gc_removes_containers_of_dead_owners_only(docker_client):
    from pygent.sandbox import gc
    from pygent.sandbox.images import resolve_image

    api = docker_client.api
    gone = subprocess.Popen(["true"])
    gone.wait()
    image = resolve_image("minimal")

    def orphan_like(owner_pid: int) -> str:
        labels = {
            lifecycle.LABEL_MANAGED: "1",
            lifecycle.LABEL_OWNER_PID: str(owner_pid),
            lifecycle.LABEL_OWNER_HOST: lifecycle.HOSTNAME,
            lifecycle.LABEL_SESSION: f"gc-test-{uuid.uuid4().hex[:8]}",
            lifecycle.LABEL_CREATED: f"{time.time():.3f}",
        }
        cid = api.create_container(
            image, ["sleep", "300"], labels=labels, network_disabled=True,
            host_config=api.create_host_config(init=True),
        )["Id"]
        api.start(cid)
        return cid

    dead = live = None
    try:
        live = orphan_like(os.getpid())  # a live owner (this process, another session)
        dead = orphan_like(gone.pid)
        removed = gc.collect()
        mine = [r for r in removed if r.id == dead]
        assert mine, f"gc did not report the orphan: {removed}"
        assert mine[0].reason == "owner process is gone" and mine[0].owner_pid == gone.pid
        assert not container_exists(api, dead)
        assert container_exists(api, live), "gc removed a container whose owner is alive"
        assert live not in [r.id for r in removed]
    finally:
        for cid in (dead, live):
            if cid and container_exists(api, cid):
                api.remove_container(cid, force=True, v=True)


# -- pool ----------------------------------------------------------------------------------


def test_gc_reclaims_the_scratch_volumes_an_operators_rm_f_left(docker_client):
    """`docker rm -f` (no -v) keeps a container's anonymous volumes: the sandbox's
    /workspace and /tmp. They carry our label, and gc removes them once dangling,
    while the tooling volume (also unused between sandboxes) stays."""
    from pygent.sandbox import gc

    api = docker_client.api
    sb = open_sandbox("python", pool=False)
    names = volume_names(api, sb.id)
    assert len(names) == 2
    tooling = [m["Name"] for m in api.inspect_container(sb.id)["Mounts"] if m.get("Destination") == "/opt/pygent"]
    subprocess.run(["docker", "rm", "-f", sb.id], check=True, capture_output=True)
    sb.close()
    assert all(volume_exists(api, n) for n in names), "docker rm -f without -v keeps the volumes"
    removed = {r.id: r.reason for r in gc.collect()}
    assert set(names) <= set(removed), removed
    assert not any(volume_exists(api, n) for n in names)
    assert tooling and volume_exists(api, tooling[0]), "gc must keep the tooling volume"


def test_pool_hands_out_distinct_pooled_containers_and_removes_them(docker_client):
    from pygent.sandbox import pool
    from pygent.sandbox.images import resolve_image

    api = docker_client.api
    policy = SandboxPolicy(timeout=17)  # a pool of its own
    a = open_sandbox("python", policy, pool=True)
    b = open_sandbox("python", policy, pool=True)
    try:
        assert a.id != b.id
        assert a.exec("echo a").stdout == b"a\n" and b.exec("echo b").stdout == b"b\n"
        warm = pool.get_pool(resolve_image("python"), policy)
        deadline = time.monotonic() + 30
        while warm.ready < warm.size and time.monotonic() < deadline:
            time.sleep(0.1)
        assert warm.ready == warm.size, warm.last_error
        pooled = {c["Id"] for c in _session_containers(api, f"{lifecycle.LABEL_POOLED}=1")}
        assert {sb.id for sb in list(warm._ready)} <= pooled
        c = open_sandbox("python", policy, pool=True)  # comes warm from the pool
        assert c.id in pooled
        assert api.inspect_container(c.id)["Config"]["Labels"][lifecycle.LABEL_POOLED] == "1"
        c.close()
        assert not container_exists(api, c.id), "a closed pooled sandbox must be removed, not recycled"
        assert c.id not in {sb.id for sb in list(warm._ready)}
    finally:
        a.close()
        b.close()
        pool.drain_all()
    assert not container_exists(api, a.id) and not container_exists(api, b.id)
    deadline = time.monotonic() + 15  # a refill in flight is removed when it lands
    while _session_containers(api, f"{lifecycle.LABEL_POOLED}=1") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _session_containers(api, f"{lifecycle.LABEL_POOLED}=1") == []


def test_pool_grows_to_a_burst_serves_the_next_burst_warm_and_shrinks_after(docker_client, monkeypatch):
    """A fan-out of 4 finds the base pool (1) warm; the pool then keeps 4, so the next
    fan-out starts all 4 warm; once the bursts are past, the extra members are removed."""
    from concurrent.futures import ThreadPoolExecutor

    from pygent.sandbox import pool
    from pygent.sandbox.images import resolve_image

    api = docker_client.api
    policy = SandboxPolicy(timeout=19)  # a pool of its own
    warm = pool.SandboxPool(resolve_image("python"), policy, size=1, most=4)

    def burst() -> list:
        with ThreadPoolExecutor(4) as ex:
            sandboxes = list(ex.map(lambda _: warm.acquire(), range(4)))
        for sb in sandboxes:
            assert sb.exec("echo hi").stdout == b"hi\n"
        return sandboxes

    def wait_full(n: int) -> None:
        deadline = time.monotonic() + 60
        while (warm.ready < n or warm._creating) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert warm.ready == n, warm.last_error

    try:
        warm.acquire().close()  # the first ask: the pool fills to its base
        wait_full(1)
        first = burst()
        pooled = sum(api.inspect_container(sb.id)["Config"]["Labels"].get(lifecycle.LABEL_POOLED) == "1" for sb in first)
        assert pooled < 4, "the first burst finds only the base pool warm (and a member being started)"
        for sb in first:
            sb.close()
        assert warm.size == 4
        wait_full(4)
        members = {sb.id for sb in warm._ready}
        second = burst()
        assert {sb.id for sb in second} == members, "the next burst of 4 should start all 4 warm"
        for sb in second:
            sb.close()
        wait_full(4)
        monkeypatch.setattr(pool, "_BURST_MEMORY", 0.0)  # the bursts are long past
        assert warm.size == 1
        deadline = time.monotonic() + 15
        while warm.ready > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert warm.ready == 1
        extra = members - {sb.id for sb in warm._ready}
        deadline = time.monotonic() + 15
        while any(container_exists(api, cid) for cid in extra) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(container_exists(api, cid) for cid in extra), "members past the burst must be removed"
    finally:
        warm.idle()


# -- errors --------------------------------------------------------------------------------


def test_no_engine_raises_engine_unavailable_with_a_fix(tmp_path):
    child = run_child(
        f"""
        import os
        os.environ["DOCKER_HOST"] = "unix://{tmp_path}/no-engine.sock"
        from pygent.sandbox.engine import reset_client
        reset_client()
        from pygent.errors import EngineUnavailable
        from pygent.sandbox import open_sandbox, gc
        for what, call in [
            ("python", lambda: open_sandbox("python", pool=False)),
            ("minimal", lambda: open_sandbox("minimal", pool=False)),
            ("pooled", lambda: open_sandbox("python", pool=True)),
            ("other", lambda: open_sandbox("busybox:latest", pool=False)),
            ("gc", gc.collect),
        ]:
            try:
                call()
                print(what, "NO ERROR")
            except EngineUnavailable as exc:
                print(what, "EngineUnavailable", str(exc).replace("\\n", " "))
            except BaseException as exc:
                print(what, "WRONG", type(exc).__name__, exc)
        reset_client()
        """
    )
    out, err = child.communicate(timeout=60)
    lines = out.strip().splitlines()
    assert len(lines) == 5, out + err
    for line in lines:
        assert "EngineUnavailable" in line, line
        assert "make engine" in line and "DOCKER_HOST" in line, line


def test_unknown_image_raises_image_not_found(docker_client):
    count = len(_session_containers(docker_client.api))
    with pytest.raises(ImageNotFound):
        open_sandbox(f"pygent-no-such-image-{uuid.uuid4().hex[:8]}:latest", pool=False)
    with pytest.raises(ImageNotFound):
        open_sandbox("pygent/python:000000000000", pool=False)
    assert len(_session_containers(docker_client.api)) == count


def test_unknown_runtime_raises_runtime_unavailable(docker_client):
    count = len(_session_containers(docker_client.api))
    with pytest.raises(RuntimeUnavailable) as info:
        open_sandbox("minimal", SandboxPolicy(runtime="nonexistent"), pool=False)
    assert "runc" in str(info.value)  # says which runtimes the engine has
    assert len(_session_containers(docker_client.api)) == count


@pytest.mark.parametrize(
    "bad",
    [
        {"memory": "lots"},
        {"memory": "0"},
        {"tmp_size": "0m"},
        {"pids": 0},
        {"cpus": 0},
        {"timeout": -1},
        {"max_output": 10},
        {"user": "root"},
        {"runtime": "bad name; rm -rf /"},
        {"unknown_key": 1},
        {"mounts": ({"source": "/tmp", "target": "relative"},)},
    ],
    ids=lambda d: next(iter(d)),
)
def test_invalid_policy_values_are_rejected(bad):
    from pygent.sandbox import default_policy

    with pytest.raises(pydantic.ValidationError) as info:
        SandboxPolicy(**bad)
    assert isinstance(info.value, ValueError)  # callers catching ValueError keep working
    if "unknown_key" not in bad:
        with pytest.raises(pydantic.ValidationError):
            default_policy(**bad)


def test_mount_spec_errors_are_value_errors():
    with pytest.raises(ValueError):
        Mount.parse("no-colon")
    with pytest.raises(ValueError):
        Mount.parse("/tmp:/x:rx")


def test_invalid_settings_raise_config_error(monkeypatch):
    from pygent.sandbox import default_policy

    monkeypatch.setenv("PYGENT_MAX_OUTPUT", "not-a-number")
    with pytest.raises(ConfigError):
        default_policy()
