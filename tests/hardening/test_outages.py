"""Sandboxes that die under us (issue 12): the pool never hands one out, an Agent recovers
once with a clear message, a delegated task ends `lost`, and warm sandboxes go with demand.

Each outage kind an operator or a command can cause on the shared engine: `docker rm -f`,
`docker kill`, the command server killed from inside. (An engine restart is in
test_engine_faults.py, on the private engine.) Each is applied to warm pool members and to
a live agent's sandbox.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from pygent import Agent, openai_compat, set_custom_model
from pygent.agent import TaskStatus
from pygent.sandbox import default_policy, lifecycle
from pygent.sandbox.images import resolve_image
from pygent.sandbox.pool import get_pool
from support.scripted import Script, call, say

pytestmark = pytest.mark.timeout(120)

KINDS = ("rm", "kill", "server")


@pytest.fixture
def agents():
    """Agents appended here are closed after the test (and no custom model outlives it)."""
    made: list[Agent] = []
    yield made
    for ag in made:
        ag.close()
    set_custom_model(None)


def _outage(kind: str, cid: str) -> None:
    """What an operator (or a command in the sandbox) does to container `cid`."""
    argv = {
        "rm": ["docker", "rm", "-f", cid],
        "kill": ["docker", "kill", cid],
        # The command server is PID 2 (under tini); a command of the sandbox's own user kills it.
        "server": ["docker", "exec", cid, "kill", "-9", "2"],
    }[kind]
    subprocess.run(argv, capture_output=True, timeout=60)
    # `docker kill` and `docker exec` return before the container has died: wait until the engine
    # says it has (that is when a user would see it dead in `docker ps`).
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        out = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", cid], capture_output=True, text=True)
        if out.returncode != 0 or out.stdout.strip() != "true":
            return
        time.sleep(0.05)


def _warm_pool():
    pool = get_pool(resolve_image("python"), default_policy())
    assert pool is not None, "these tests need the warm pool (PYGENT_POOL_SIZE > 0)"
    pool.acquire().close()  # a sandbox was asked for: the pool fills
    deadline = time.monotonic() + 60
    while pool.ready < pool.size and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pool.ready == pool.size, pool.last_error
    return pool


@pytest.mark.parametrize("kind", KINDS)
def test_the_pool_never_hands_out_a_dead_member(kind, docker_client):
    pool = _warm_pool()
    members = [sb.id for sb in list(pool._ready)]
    for cid in members:
        _outage(kind, cid)
    sandboxes = [pool.acquire() for _ in members]  # every one the pool had is dead now
    try:
        for sb in sandboxes:
            assert sb.id not in members
            assert sb.exec("echo alive").stdout == b"alive\n"
    finally:
        for sb in sandboxes:
            sb.close()
    # Dead members were dropped and replaced: the pool is full of working sandboxes again.
    deadline = time.monotonic() + 60
    while pool.ready < pool.size and time.monotonic() < deadline:
        time.sleep(0.05)
    fresh = pool.acquire()
    try:
        assert fresh.id not in members and fresh.exec("echo ok").exit_code == 0
    finally:
        fresh.close()


def _tool_results(ag: Agent) -> list[str]:
    return [m["content"] for m in ag.history if m.get("role") == "tool"]


@pytest.mark.parametrize("kind", KINDS)
def test_an_agent_whose_sandbox_dies_mid_command_is_told_once_then_gets_a_fresh_one(kind, agents, docker_client):
    script = Script(
        say(call("bash", {"cmd": "echo precious > notes.txt; echo ok"})),
        # The server kind: the command itself kills the sandbox's server.
        say(call("bash", {"cmd": "kill -9 $PPID; sleep 30" if kind == "server" else "sleep 30"})),
        say(call("bash", {"cmd": "echo again; ls /workspace"})),
    )
    ag = Agent(model=script)
    agents.append(ag)
    ag.step("go")
    first = ag.runtime.sandbox.id
    if kind != "server":
        threading.Timer(1.0, _outage, (kind, first)).start()
    ag.step(None)
    ag.step(None)
    done, lost, again = _tool_results(ag)
    assert done.startswith("exit code: 0")
    assert lost.startswith("error:") and "died" in lost, lost
    assert "lost" in lost and "fresh sandbox" in lost, lost
    reason = {"rm": "killed from outside", "kill": "killed from outside", "server": "command server exited"}[kind]
    assert reason in lost, lost
    assert again.startswith("exit code: 0") and "again" in again, again
    assert "notes.txt" not in again  # a new sandbox: the old workspace is gone, as the message said
    assert ag.runtime.sandbox.id != first


@pytest.mark.parametrize("kind", ("rm", "kill"))
def test_an_agent_whose_sandbox_died_while_idle_is_told_before_its_command(kind, agents, docker_client):
    script = Script(
        say(call("bash", {"cmd": "echo ok"})),
        say(call("write_file", {"path": "a.txt", "content": "x"})),
        say(call("bash", {"cmd": "echo fresh"})),
    )
    ag = Agent(model=script)
    agents.append(ag)
    ag.step("go")
    first = ag.runtime.sandbox.id
    _outage(kind, first)
    deadline = time.monotonic() + 20  # the engine closes the stream as the container dies
    while ag.runtime._sandbox.healthy() and time.monotonic() < deadline:
        time.sleep(0.05)
    ag.step(None)
    ag.step(None)
    _, lost, fresh = _tool_results(ag)
    assert lost.startswith("error:") and "did not run" in lost and "fresh sandbox" in lost, lost
    assert fresh.startswith("exit code: 0") and "fresh" in fresh, fresh


def test_a_host_directory_workspace_is_said_to_be_kept(agents, docker_client, tmp_path):
    tmp_path.chmod(0o777)
    script = Script(say(call("bash", {"cmd": "echo kept > k.txt; kill -9 $PPID"})), say(call("bash", {"cmd": "cat k.txt"})))
    ag = Agent(model=script, workspace=tmp_path)
    agents.append(ag)
    ag.step("go")
    ag.step(None)
    lost, again = _tool_results(ag)
    assert "host directory" in lost and "kept" in lost, lost
    assert "kept" in again and again.startswith("exit code: 0"), again


class _KillsItsServer:
    """Stateless sub-agent model: kill the sandbox's server, then (if ever asked again) stop."""

    def chat(self, messages, model, tools):
        if messages[-1].get("role") == "tool":
            return say(call("stop"))
        return say(call("bash", {"cmd": "kill -9 $PPID"}))


def test_a_delegated_task_whose_sandbox_dies_ends_lost_with_the_reason(agents, docker_client):
    set_custom_model(_KillsItsServer())
    parent = Agent(model=Script(say(content="hi")))
    agents.append(parent)
    task = parent.tasks.start("break your sandbox")
    [status] = parent.tasks.wait([task.id], timeout=90)
    assert status["status"] == TaskStatus.LOST.value, status
    assert "command server exited" in status["reason"] and "lost" in status["reason"], status


LINGER_SCRIPT = textwrap.dedent("""
    import json, sys, time
    from pygent import Agent
    from pygent.sandbox import lifecycle
    from support.scripted import Script, call, say
    script = Script(say(call("bash", {"cmd": "echo hi"})))
    with Agent(model=script) as ag:
        ag.step("go")
    # warm: the pool filled once the agent asked for a sandbox
    print(json.dumps({"session": lifecycle.SESSION_ID}), flush=True)
    with Agent(model=Script(say(call("bash", {"cmd": "echo again"})))) as second:
        second.step("go")  # back to back, within the linger: still warm
        labels = second.runtime.sandbox.create_config["Labels"]
        print(json.dumps({"pooled": labels.get(lifecycle.LABEL_POOLED) == "1"}), flush=True)
    print(json.dumps({"closed": time.time()}), flush=True)
    time.sleep(60)  # alive: only the linger may remove the warm sandboxes
""")


def _ours(session: str) -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={lifecycle.LABEL_SESSION}={session}"],
        capture_output=True, text=True, check=True,
    )
    return out.stdout.split()


def test_warm_sandboxes_go_within_the_linger_once_the_last_agent_closes(docker_client):
    linger = 2.0
    env = dict(os.environ, PYGENT_POOL_LINGER=str(linger), PYGENT_POOL_SIZE="2",
               PYTHONPATH=os.path.join(os.path.dirname(__file__), ".."))
    proc = subprocess.Popen([sys.executable, "-c", LINGER_SCRIPT], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        session = json.loads(proc.stdout.readline())["session"]
        assert _ours(session), "the pool should be warm while agents come and go"
        assert json.loads(proc.stdout.readline())["pooled"], "the second agent, within the linger, should start warm"
        closed = json.loads(proc.stdout.readline())["closed"]
        while _ours(session) and time.time() < closed + linger + 2.0:
            time.sleep(0.1)
        assert not _ours(session), f"warm sandboxes still there linger + 2 s after the last agent closed"
        assert proc.poll() is None, proc.stderr.read()  # the process still runs: the linger removed them
    finally:
        proc.kill()
        proc.wait()


def test_an_agent_whose_whole_sandbox_ran_out_of_memory_is_told_with_the_result(agents, docker_client):
    from pygent.sandbox import SandboxPolicy

    script = Script(
        say(call("bash", {"cmd": "python3 -c \"b = b'x' * (2 << 30)\""})),
        say(call("bash", {"cmd": "echo fresh"})),
    )
    # Under gVisor the host's OOM killer ends the whole sandbox, not just the command.
    ag = Agent(model=script, policy=SandboxPolicy(runtime="runsc", memory="256m", timeout=60))
    agents.append(ag)
    ag.step("go")
    ag.step(None)
    oom, fresh = _tool_results(ag)
    assert "out of memory" in oom and "died" in oom and "fresh sandbox" in oom, oom
    assert fresh.startswith("exit code: 0") and "fresh" in fresh, fresh
