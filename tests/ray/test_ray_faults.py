"""Faults on the real cluster: a node removed under a command and under a delegated task, a
killed node agent, a SIGKILLed driver, an address where no cluster answers. Each prints its
timing (`pytest -s` shows them; the figures are in docs/scale.md), and asserts only the
bounds users are promised."""

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from pygent import Agent, openai_compat, set_custom_model
from pygent.agent import TaskStatus
from pygent.errors import SandboxGone
from pygent.sandbox import SandboxPolicy
from cluster import GIB

pytestmark = [pytest.mark.docker, pytest.mark.ray]


def _say(name=None, args=None, content=None):
    calls = [openai_compat.ToolCall(id="c", type="function", function=openai_compat.ToolCallFunction(
        name=name, arguments=json.dumps(args or {})))] if name else None
    return openai_compat.Message(role="assistant", content=content, tool_calls=calls)


class Forever:
    def chat(self, messages, model, tools):
        return _say("bash", {"cmd": "sleep 60"})


def _gone_within(docker_client, ids, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = [i for i in ids if docker_client.api.containers(all=True, filters={"id": i})]
        if not left:
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def doomed_node(ray_cluster, ray_backend, monkeypatch):
    """A fourth node, to be removed by the test; sandboxes pinned to it by label."""
    zone = f"doomed-{os.urandom(2).hex()}"
    node = ray_cluster.add(num_cpus=2, memory=2 * GIB, resources={"pygent_slot": 2}, labels={"zone": zone})
    monkeypatch.setenv("PYGENT_BACKEND", "ray")
    monkeypatch.setenv("PYGENT_POOL_SIZE", "0")
    ray_backend.pin_labels = {"zone": zone}
    yield node
    if node in ray_cluster.cluster.worker_nodes:
        ray_cluster.remove(node)
    print(f"\nremoved node listed dead after {ray_cluster.wait_dead(node):.1f}s")


def test_node_removed_under_a_command_then_the_agent_goes_on_elsewhere(ray_cluster, ray_backend, doomed_node):
    from pygent.agent.runtime import Runtime

    rt = Runtime(image="python")
    try:
        assert "warm" in rt.bash("echo warm")
        dead = rt.sandbox.node_id
        ray_backend.pin_labels = {}  # the recovery may go anywhere
        seen = {}

        def run():
            try:
                seen["out"] = rt.bash("sleep 60", timeout=90)
            except SandboxGone as exc:
                seen["gone"], seen["at"] = exc, time.monotonic()

        worker = threading.Thread(target=run)
        worker.start()
        time.sleep(1.0)
        removed = time.monotonic()
        ray_cluster.remove(doomed_node)
        worker.join(60)
        assert "gone" in seen, seen
        print(f"\nnode removed -> SandboxGone in {seen['at'] - removed:.2f}s")
        assert dead[:12] in str(seen["gone"])
        assert "back" in rt.bash("echo back")
        assert rt.sandbox.node_id != dead
    finally:
        rt.cleanup()


def test_a_delegated_task_on_a_dying_node_ends_lost_with_the_reason(ray_cluster, ray_backend, doomed_node):
    import ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the model goes to the node
    set_custom_model(Forever())
    parent = Agent(model=Forever())
    try:
        task = parent.tasks.start("sleep", timeout=120)
        deadline = time.monotonic() + 60
        while not (task.agent and task.agent.runtime._sandbox) and time.monotonic() < deadline:
            time.sleep(0.05)
        node = task.agent.runtime._sandbox.node_id
        time.sleep(2.0)  # its loop, on that node, is in `sleep 60` by now
        removed = time.monotonic()
        ray_cluster.remove(doomed_node)
        assert task.done.wait(60), task.to_dict()
        print(f"\nnode removed -> task lost in {time.monotonic() - removed:.2f}s")
        assert task.status == TaskStatus.LOST and node[:12] in task.reason, task.to_dict()
    finally:
        parent.close()
        set_custom_model(None)


def test_a_killed_node_agent_leaves_none_of_its_containers(ray_backend, docker_client):
    import ray

    boxes = [ray_backend.create("python", SandboxPolicy(), labels={"zone": "b"}) for _ in range(2)]
    node = boxes[0].node_id
    killed = time.monotonic()
    ray.kill(ray_backend._agents[node], no_restart=True)
    assert _gone_within(docker_client, [b.id for b in boxes], 30)
    print(f"\nnode agent killed -> its containers gone in {time.monotonic() - killed:.2f}s")
    with pytest.raises(SandboxGone) as err:
        boxes[0].exec("true")
    assert node[:12] in str(err.value) and not boxes[1].healthy()
    for b in boxes:
        b.close()
    with ray_backend.create("python", SandboxPolicy(), labels={"zone": "b"}) as again:  # a new agent
        assert again.exec("echo ok").stdout == b"ok\n"


DRIVER = """
import sys, time
from pygent.sandbox.registry import get_backend
from pygent.sandbox import SandboxPolicy
backend = get_backend("ray")
boxes = [backend.create("python", SandboxPolicy(), labels={"zone": z}) for z in "abc"]
print("IDS", " ".join(b.id for b in boxes), flush=True)
time.sleep(600)
"""


def test_a_sigkilled_driver_leaves_no_sandbox_on_any_node(ray_env, docker_client):
    proc = subprocess.Popen([sys.executable, "-c", DRIVER], env=ray_env, stdout=subprocess.PIPE, text=True)
    try:
        line = ""
        while not line.startswith("IDS "):  # Ray may print its own lines first
            line = proc.stdout.readline()
            assert line, "the driver ended before making its sandboxes"
        ids = line.split()[1:]
        assert len(ids) == 3 and all(docker_client.api.containers(filters={"id": i}) for i in ids)
    finally:
        proc.kill()
        proc.wait()
    killed = time.monotonic()
    assert _gone_within(docker_client, ids, 30)
    print(f"\ndriver SIGKILLed -> its 3 sandboxes on 3 nodes gone in {time.monotonic() - killed:.2f}s")


def test_an_address_where_no_cluster_answers_is_named_within_10s(ray_env):
    env = dict(ray_env, RAY_ADDRESS="127.0.0.1:9")
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", "from pygent.sandbox import open_sandbox; open_sandbox()"],
                         env=env, capture_output=True, text=True, timeout=60)
    took = time.monotonic() - started
    print(f"\nunreachable RAY_ADDRESS -> error in {took:.2f}s")
    assert out.returncode != 0 and took < 10
    assert "ClusterUnavailable" in out.stderr and "RAY_ADDRESS=127.0.0.1:9" in out.stderr, out.stderr[-800:]


@pytest.mark.timeout(360)
def test_a_driver_with_another_ray_version_is_told_which_to_install(ray_env, other_ray):
    """A real second Ray release as the driver (PYTHONPATH puts it first) against our cluster:
    the user's entry point says the cluster's version and the pip line that fixes it."""
    import ray

    version, path = other_ray
    env = dict(ray_env, PYTHONPATH=path)
    probe = subprocess.run([sys.executable, "-c", "import ray; print(ray.__version__)"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() == version, probe.stderr[-500:]
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "pygent.cli", "exec", "--", "echo", "hi"], env=env,
                         capture_output=True, text=True, timeout=120)
    took = time.monotonic() - started
    print(f"\ndriver Ray {version} vs cluster Ray {ray.__version__} -> error in {took:.2f}s")
    assert out.returncode != 0 and out.stdout == "" and took < 10, out.stderr[-800:]
    said = " ".join(out.stderr.split())
    assert f"runs Ray {ray.__version__}" in said and f"this process Ray {version}" in said, said[-800:]
    assert f"pip install 'ray=={ray.__version__}'" in said and "Traceback" not in out.stderr, said[-800:]
