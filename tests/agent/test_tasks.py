"""Delegated tasks: each a sub-agent in its own container, in the background, bounded and cleaned up.

Sub-agents use the model set with set_custom_model. One model object is shared by
every sub-agent at once, so the models here are stateless: they decide from the
messages alone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pygent import Agent, openai_compat, set_custom_model
from pygent.agent import TaskStatus, execute_tool
from pygent.sandbox import gc as sandbox_gc
from pygent.sandbox import lifecycle
from support.seed import seed_class
from support.engine import wait_gone

ROOT = Path(__file__).resolve().parents[2]
HOST_PASSWD = Path("/etc/passwd").read_text()


# ---- helpers ---------------------------------------------------------------------------------


def call(name: str, args: dict | None = None, id: str = "c1") -> openai_compat.ToolCall:  # noqa: A002
    return openai_compat.ToolCall(id=id, type="function", function=openai_compat.ToolCallFunction(name=name, arguments=json.dumps(args or {})))


def say(*calls: openai_compat.ToolCall, content: str | None = None) -> openai_compat.Message:
    return openai_compat.Message(role="assistant", content=content, tool_calls=list(calls) or None)


class RunThenStop:
    """Runs one tool call; once its result is in, stops with that result as the answer."""

    def __init__(self, name: str, args: dict) -> None:
        self.name, self.args = name, args

    def chat(self, messages, model, tools):
        last = messages[-1]
        if last["role"] == "tool":
            return say(call("stop", id="s"), content=last["content"])
        return say(call(self.name, self.args, id="t"))


def bash_then_stop(cmd: str) -> RunThenStop:
    return RunThenStop("bash", {"cmd": cmd})


class Forever:
    """Runs `cmd` on every step, never stops."""

    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def chat(self, messages, model, tools):
        return say(call("bash", {"cmd": self.cmd}))


class Script:
    """The parent's model: replies in order, the last one repeats."""

    def __init__(self, *replies) -> None:
        self.replies = list(replies)

    def chat(self, messages, model, tools):
        return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]


# The seed's delegation model, verbatim (read from the seed document itself).
DelegateModel = seed_class("DelegateModel")


def wait_running_in_container(task, within: float = 30.0) -> str:
    """Wait until the task's sub-agent has a started container; return its id."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        agent = task.agent
        sandbox = agent.runtime._sandbox if agent is not None else None
        if sandbox is not None and task.first_command:
            return sandbox.id
        time.sleep(0.02)
    raise AssertionError(f"task {task.id} never started a container: {task.to_dict()}")


def stdout_of(answer: str | None) -> str:
    assert answer and "stdout:\n" in answer, answer
    return answer.split("stdout:\n", 1)[1].split("\n[pygent] cost: ")[0]  # a slow command's cost line


@pytest.fixture
def parent() -> Iterator[Agent]:
    """A parent agent (its own model never used unless a test sets one); closed after the test."""
    ag = Agent(model=Script(say(call("stop"))))
    yield ag
    ag.close()


# ---- starting tasks ----------------------------------------------------------------------------


def test_the_seed_delegation_snippet(api):
    set_custom_model(bash_then_stop("hostname"))
    events = []
    ag = Agent(model=DelegateModel(), on_event=events.append)
    try:
        result = ag.run_until_stop("begin", max_steps=2)
        assert (result.reason, result.steps) == ("stop", 2)
        started = ag.history[3]
        assert started["tool_call_id"] == "1" and started["content"].startswith("started ")
        task_id = started["content"].split()[1]
        [status] = ag.tasks.wait(timeout=60)
        assert status["task_id"] == task_id and status["status"] == "finished"
        assert stdout_of(status["answer"]).strip().startswith("sandbox-")
        assert wait_gone(api, status["container"])
        delegate = next(e for e in events if e.kind == "tool" and e.tool == "delegate_task")
        assert delegate.duration < 0.5, delegate.duration  # returns at once; the task runs in the background
        assert {e.content for e in events if e.kind == "task"} >= {"queued", "running", "finished"}
    finally:
        ag.close()


def test_delegate_task_returns_at_once(parent):
    set_custom_model(Forever("sleep 30"))
    t0 = time.monotonic()
    out = execute_tool(call("delegate_task", {"prompt": "slow", "timeout": 60}), parent.runtime)
    took = time.monotonic() - t0
    assert out.startswith("started "), out
    assert took < 0.5, took  # a generous bound: not a benchmark
    status = json.loads(execute_tool(call("task_status", {"task_id": out.split()[1]}), parent.runtime))
    assert status["status"] in ("queued", "running")
    assert json.loads(execute_tool(call("list_tasks"), parent.runtime))[0]["task_id"] == out.split()[1]


def test_sixteen_tasks_at_once_each_in_its_own_container(api):
    set_custom_model(bash_then_stop("hostname"))
    delegations = [call("delegate_task", {"prompt": f"task {i}"}, id=f"d{i}") for i in range(16)]
    events = []
    ag = Agent(
        model=Script(say(*delegations), say(call("wait_tasks", {"timeout": 120}, id="w")), say(call("stop"))),
        on_event=events.append,
    )
    try:
        t0 = time.monotonic()
        result = ag.run_until_stop("fan out")
        assert result.reason == "stop", result
        statuses = json.loads(ag.history[-3]["content"])  # the wait_tasks result
        assert len(statuses) == 16
        assert [s["status"] for s in statuses] == ["finished"] * 16, statuses
        hostnames = {stdout_of(s["answer"]).strip() for s in statuses}
        containers = {s["container"] for s in statuses}
        assert len(hostnames) == 16 and all(h.startswith("sandbox-") for h in hostnames)
        assert len(containers) == 16 and None not in containers
        for cid in containers:
            assert wait_gone(api, cid), cid
        slowest_delegation = max(e.duration for e in events if e.kind == "tool" and e.tool == "delegate_task")
        assert slowest_delegation < 0.5
        assert time.monotonic() - t0 < 90
    finally:
        ag.close()
    left = api.containers(all=True, filters={"label": f"{lifecycle.LABEL_SESSION}={lifecycle.SESSION_ID}"})
    assert not (containers & {c["Id"] for c in left})


# ---- limits, cancellation and failures ----------------------------------------------------------


def test_a_task_time_limit_ends_it_and_removes_its_container(parent, api):
    set_custom_model(Forever("sleep 60"))
    t0 = time.monotonic()
    task = parent.tasks.start("sleep forever", timeout=2)
    assert task.done.wait(20)
    assert time.monotonic() - t0 < 10
    assert task.status == TaskStatus.TIMEOUT, task.to_dict()
    assert "2s" in task.reason
    assert task.container is not None
    assert wait_gone(api, task.container)


def test_the_watchdog_ends_a_task_whose_model_hangs(parent, api):
    release = threading.Event()

    class Hangs:
        def chat(self, messages, model, tools):
            release.wait(30)
            return say(call("stop"))

    set_custom_model(Hangs())
    try:
        task = parent.tasks.start("hang", timeout=1)
        assert task.done.wait(10)
        assert task.status == TaskStatus.TIMEOUT
        assert "wall clock" in task.reason
    finally:
        release.set()


def test_cancel_task_removes_its_container(parent, api):
    class Counting(Forever):
        calls = 0

        def chat(self, messages, model, tools):
            Counting.calls += 1
            return super().chat(messages, model, tools)

    set_custom_model(Counting("sleep 60"))
    task = parent.tasks.start("sleep forever", timeout=120)
    cid = wait_running_in_container(task)
    t0 = time.monotonic()
    status = json.loads(execute_tool(call("cancel_task", {"task_id": task.id}), parent.runtime))
    assert time.monotonic() - t0 < 10
    assert status["status"] == "cancelled" and status["container"] == cid
    assert wait_gone(api, cid)
    assert task.done.is_set()
    # The cancelled sub-agent does not go on calling its model (each call would be a paid API request).
    calls = Counting.calls
    time.sleep(0.5)
    assert Counting.calls == calls == 1
    assert task.status == TaskStatus.CANCELLED


def test_a_task_whose_model_raises_fails_with_the_reason(parent):
    class Broken:
        def chat(self, messages, model, tools):
            raise RuntimeError("no tokens left")

    set_custom_model(Broken())
    task = parent.tasks.start("anything")
    assert task.done.wait(20)
    assert task.status == TaskStatus.FAILED
    assert "Broken raised RuntimeError: no tokens left" in task.reason
    assert task.container is None  # it never needed a sandbox


def test_delegation_beyond_depth_one_is_refused_with_a_clear_error(parent, monkeypatch):
    set_custom_model(RunThenStop("delegate_task", {"prompt": "go deeper"}))
    task = parent.tasks.start("try to delegate")
    assert task.done.wait(20)
    assert task.status == TaskStatus.FINISHED
    assert task.answer.startswith("error: delegation depth 2 exceeds the limit of 1 (PYGENT_TASK_DEPTH)"), task.answer

    monkeypatch.setenv("PYGENT_TASK_DEPTH", "0")
    flat = Agent(model=Script(say(call("stop"))))
    try:
        out = execute_tool(call("delegate_task", {"prompt": "x"}), flat.runtime)
        assert out.startswith("error: delegation depth 1 exceeds the limit of 0")
    finally:
        flat.close()


def test_unknown_task_ids_are_errors(parent):
    for name in ("task_status", "cancel_task"):
        assert execute_tool(call(name, {"task_id": "nope"}), parent.runtime) == f"error: {name} failed: no task 'nope'; known: none"


# ---- files in and out ----------------------------------------------------------------------------


def test_files_are_copied_from_the_parent_sandbox_as_the_container_sees_them(parent):
    assert "sandbox:x:1000" not in HOST_PASSWD
    parent.runtime.bash(
        "mkdir -p data && echo payload > data/in.txt && echo secret > real.txt && "
        "ln -s real.txt alias && ln -s /etc/passwd pw"
    )
    set_custom_model(bash_then_stop("cat data/in.txt alias; cat pw"))
    task = parent.tasks.start("read the files", files=["data/in.txt", "alias", "pw"])
    assert task.done.wait(30)
    assert task.status == TaskStatus.FINISHED, task.to_dict()
    out = stdout_of(task.answer)
    assert out.startswith("payload\nsecret\n")
    assert "sandbox:x:1000:1000" in out  # the container's passwd ...
    assert HOST_PASSWD not in out and out.split("secret\n", 1)[1] != HOST_PASSWD  # ... never the host's


def test_collect_file_after_the_task_container_is_gone(parent, api):
    set_custom_model(bash_then_stop("mkdir -p out && echo result-data > out/result.txt && echo more > out/b.txt"))
    task = parent.tasks.start("produce")
    assert task.done.wait(30)
    assert task.status == TaskStatus.FINISHED
    assert wait_gone(api, task.container)
    out = execute_tool(call("collect_file", {"task_id": task.id, "path": "out/result.txt", "dest": "got/r.txt"}), parent.runtime)
    assert out == f"Copied out/result.txt from task {task.id} to /workspace/got/r.txt"
    assert parent.runtime.read_file("got/r.txt") == "result-data\n"
    execute_tool(call("collect_file", {"task_id": task.id, "path": "out"}), parent.runtime)
    assert parent.runtime.bash("cat out/b.txt; stat -c %U out/b.txt") == "exit code: 0\nstdout:\nmore\nsandbox"
    missing = execute_tool(call("collect_file", {"task_id": task.id, "path": "nope.txt"}), parent.runtime)
    assert missing.startswith("error:") and "does not exist" in missing
    outside = execute_tool(call("collect_file", {"task_id": task.id, "path": "../etc/passwd"}), parent.runtime)
    assert outside.startswith("error:") and "outside" in outside


def test_collect_file_before_the_task_ends_is_an_error(parent):
    set_custom_model(Forever("sleep 60"))
    task = parent.tasks.start("slow", timeout=60)
    out = execute_tool(call("collect_file", {"task_id": task.id, "path": "x"}), parent.runtime)
    assert out.startswith("error:") and "has not ended yet" in out


# ---- waiting and closing --------------------------------------------------------------------------


def test_wait_tasks_returns_when_the_tasks_end(parent):
    set_custom_model(bash_then_stop("sleep 1; echo woke"))
    ids = [parent.tasks.start(f"nap {i}").id for i in range(3)]
    t0 = time.monotonic()
    statuses = json.loads(execute_tool(call("wait_tasks", {"task_ids": ids, "timeout": 60}), parent.runtime))
    took = time.monotonic() - t0
    assert [s["status"] for s in statuses] == ["finished"] * 3
    assert all(stdout_of(s["answer"]) == "woke" for s in statuses)
    assert 0.9 < took < 30, took


def test_wait_tasks_with_a_timeout_returns_while_tasks_still_run(parent):
    set_custom_model(Forever("sleep 60"))
    task = parent.tasks.start("slow", timeout=60)
    t0 = time.monotonic()
    [status] = json.loads(execute_tool(call("wait_tasks", {"timeout": 0.5}), parent.runtime))
    assert 0.4 < time.monotonic() - t0 < 3
    assert status["task_id"] == task.id and status["status"] in ("queued", "running")


def test_closing_the_parent_cancels_running_and_queued_tasks_and_removes_their_containers(api):
    set_custom_model(Forever("sleep 60"))
    ag = Agent(model=Script(say(call("stop"))))
    ag.tasks.max_tasks = 2  # the third waits in the queue
    tasks = [ag.tasks.start(f"sleep {i}", timeout=120) for i in range(3)]
    cids = [wait_running_in_container(t) for t in tasks[:2]]
    assert tasks[2].status == TaskStatus.QUEUED
    t0 = time.monotonic()
    ag.close()
    assert time.monotonic() - t0 < 10
    for task in tasks:
        assert task.status == TaskStatus.CANCELLED and task.reason == "parent closed"
        assert task.done.is_set()
    for cid in cids:
        assert wait_gone(api, cid)
    time.sleep(0.3)
    assert tasks[2].agent is None and tasks[2].container is None  # the queued one never started
    assert "closed" in execute_tool(call("delegate_task", {"prompt": "late"}), ag.runtime)


CHILD = textwrap.dedent(
    """
    import json, sys, time
    sys.path.insert(0, {runner!r})
    from pygent import Agent, openai_compat, set_custom_model

    class Sleep:
        def chat(self, messages, model, tools):
            call = openai_compat.ToolCall(id="1", function=openai_compat.ToolCallFunction(
                name="bash", arguments=json.dumps({{"cmd": "sleep 30"}})))
            return openai_compat.Message(role="assistant", content=None, tool_calls=[call])

    set_custom_model(Sleep())
    ag = Agent(model=Sleep())
    tasks = [ag.tasks.start("sleep", timeout=120) for _ in range(3)]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        running = [t.agent.runtime._sandbox for t in tasks if t.agent is not None]
        if len(running) == 3 and all(s is not None for s in running) and all(t.first_command for t in tasks):
            break
        time.sleep(0.05)
    print(json.dumps([s.id for s in running]), flush=True)
    time.sleep(120)
    """
)


def test_containers_of_a_sigkilled_process_are_reclaimed(api, tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(runner=str(ROOT / "runner")))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    label = f"{lifecycle.LABEL_OWNER_PID}={proc.pid}"
    try:
        line = proc.stdout.readline()
        cids = json.loads(line)
        assert len(cids) == 3
        owned = {c["Id"] for c in api.containers(all=True, filters={"label": label})}
        assert set(cids) <= owned
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
    deadline = time.monotonic() + 15
    while True:
        sandbox_gc.collect()
        left = api.containers(all=True, filters={"label": label})
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not left, [c["Id"][:12] for c in left]
