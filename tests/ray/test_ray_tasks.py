"""Delegated tasks with PYGENT_BACKEND=ray, driven as a model drives them (delegate_task,
wait_tasks, collect_file): each loop runs on the node holding its container, the parent's
tools are unchanged, and PYGENT_MAX_TASKS bounds task sandboxes over the whole cluster."""

import json
import sys
import threading
import time

import pytest

from pygent import Agent, openai_compat, set_custom_model
from pygent.agent import execute_tool
from pygent.sandbox import lifecycle

pytestmark = [pytest.mark.docker, pytest.mark.ray]


def _call(name, args=None, id="c"):  # noqa: A002
    return openai_compat.ToolCall(id=id, type="function", function=openai_compat.ToolCallFunction(
        name=name, arguments=json.dumps(args or {})))


class SaysWhereItRuns:
    """Writes a file with one command, then stops with the Ray node its loop ran on as its answer."""

    def chat(self, messages, model, tools):
        import ray

        if messages[-1]["role"] == "tool":
            return openai_compat.Message(role="assistant", content=ray.get_runtime_context().get_node_id(),
                                         tool_calls=[_call("stop", id="s")])
        return openai_compat.Message(role="assistant", content=None, tool_calls=[
            _call("bash", {"cmd": "sleep 0.5; echo made-on-$(hostname) > /workspace/out.txt"}, id="b")])


@pytest.fixture
def on_ray(ray_backend, monkeypatch):
    import ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the model goes to the nodes
    monkeypatch.setenv("PYGENT_BACKEND", "ray")
    monkeypatch.setenv("PYGENT_POOL_SIZE", "0")
    set_custom_model(SaysWhereItRuns())
    parent = Agent(model=SaysWhereItRuns())
    yield ray_backend, parent
    parent.close()
    set_custom_model(None)


def test_each_task_loop_runs_on_the_node_of_its_container(on_ray):
    backend, parent = on_ray
    ids = [execute_tool(_call("delegate_task", {"prompt": f"job {i}"}), parent.runtime).split()[1] for i in range(3)]
    statuses = json.loads(execute_tool(_call("wait_tasks", {"task_ids": ids, "timeout": 120}), parent.runtime))
    statuses = statuses if isinstance(statuses, list) else statuses.get("tasks", statuses)
    tasks = [parent.tasks.get(i) for i in ids]
    assert all(t.status.value == "finished" for t in tasks), [t.to_dict() for t in tasks]
    nodes = {backend._where[t.container] for t in tasks}
    assert all(t.answer == backend._where[t.container] for t in tasks), [(t.answer, t.container) for t in tasks]
    assert len(nodes) >= 2  # spread
    out = execute_tool(_call("collect_file", {"task_id": ids[0], "path": "out.txt", "dest": "got.txt"}), parent.runtime)
    assert "Copied" in out, out
    assert "made-on-sandbox-" in parent.runtime.bash("cat got.txt")


def test_max_tasks_bounds_task_sandboxes_over_the_cluster(on_ray, docker_client):
    backend, parent = on_ray
    parent.tasks.max_tasks = 2
    seen, stop = [], threading.Event()

    def watch():
        while not stop.is_set():
            found = docker_client.api.containers(all=True, filters={"label": lifecycle.LABEL_RAY_NODE})
            seen.append(len(found) - (1 if parent.runtime._sandbox is not None else 0))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        tasks = [parent.tasks.start(f"job {i}") for i in range(6)]
        parent.tasks.wait([t.id for t in tasks], timeout=180)
    finally:
        stop.set()
        watcher.join()
    assert all(t.status.value == "finished" for t in tasks), [t.to_dict() for t in tasks]
    assert max(seen) == 2, max(seen)


class SleepsAndCounts:
    """Counts its calls in a file (its loop runs in a loop host on a node of this machine),
    and always asks for one more long command."""

    def __init__(self, tally):
        self.tally = tally

    def chat(self, messages, model, tools):
        with open(self.tally, "a") as f:
            f.write("x")
        return openai_compat.Message(role="assistant", content=None, tool_calls=[_call("bash", {"cmd": "sleep 60"}, id="b")])


def test_cancel_task_through_ray_removes_its_container_and_its_loop_stops(on_ray, docker_client, tmp_path):
    """cancel_task as locally: the container goes at once, and the loop on the node makes no
    further model call (each would be a paid request), though it runs in a long-lived host."""
    backend, parent = on_ray
    tally = tmp_path / "calls"
    set_custom_model(SleepsAndCounts(str(tally)))
    task = parent.tasks.start("sleep forever", timeout=120)
    deadline = time.monotonic() + 60
    while not (task.container or (task.agent and task.agent.runtime._sandbox)) and time.monotonic() < deadline:
        time.sleep(0.05)
    while not tally.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tally.exists(), task.to_dict()
    cid = task.agent.runtime._sandbox.id
    time.sleep(0.5)  # the command runs
    status = json.loads(execute_tool(_call("cancel_task", {"task_id": task.id}), parent.runtime))
    assert status["status"] == "cancelled" and status["container"] == cid
    gone = time.monotonic() + 10
    while docker_client.api.containers(all=True, filters={"id": cid}) and time.monotonic() < gone:
        time.sleep(0.1)
    assert not docker_client.api.containers(all=True, filters={"id": cid})
    time.sleep(2)  # time for a loop that went on to call its model again
    assert tally.read_text() == "x"
