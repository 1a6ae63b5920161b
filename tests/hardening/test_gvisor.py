"""gVisor end to end: the agent's sandbox and its delegated tasks run under runsc."""

import json
import time

import pytest

from pygent import Agent, openai_compat
from pygent.models import set_custom_model

pytestmark = pytest.mark.timeout(180)

KERNEL_PROBE = "dmesg 2>/dev/null | head -n 3; cat /proc/version"


def _bash_call(cmd: str, id_: str = "1") -> openai_compat.Message:
    fn = openai_compat.ToolCallFunction(name="bash", arguments=json.dumps({"cmd": cmd}))
    return openai_compat.Message(role="assistant", content=None, tool_calls=[openai_compat.ToolCall(id=id_, type="function", function=fn)])


class ProbeThenStop:
    """Probe the kernel, then stop; decides from the messages, so sub-agents can share it."""

    def __init__(self):
        self.seen: list[str] = []  # tool results the sub-agents got back

    def chat(self, messages, model, tools):
        if messages[-1]["role"] == "tool":
            self.seen.append(messages[-1]["content"])
            fn = openai_compat.ToolCallFunction(name="stop", arguments="{}")
            return openai_compat.Message(role="assistant", content="done", tool_calls=[openai_compat.ToolCall(id="s", type="function", function=fn)])
        return _bash_call(KERNEL_PROBE)


def _is_gvisor(text: str) -> bool:
    return "gVisor" in text or "Starting gVisor" in text


def test_agent_and_its_delegated_tasks_run_under_runsc(monkeypatch, docker_client):
    monkeypatch.setenv("PYGENT_RUNTIME", "runsc")
    model = ProbeThenStop()
    set_custom_model(model)
    try:
        with Agent() as ag:
            out = ag.runtime.bash(KERNEL_PROBE)
            assert _is_gvisor(out), out
            info = docker_client.api.inspect_container(ag.runtime.sandbox.id)
            assert info["HostConfig"]["Runtime"] == "runsc"

            task = ag.tasks.start("probe the kernel")
            (status,) = ag.tasks.wait([task.id], timeout=120)
            assert status["status"] == "finished", status
            assert model.seen and all(_is_gvisor(s) for s in model.seen), model.seen

            # The same through the model-visible tool, and the task's container is gone afterwards.
            from pygent.agent.tools import execute_tool

            call = openai_compat.ToolCall(id="d", type="function", function=openai_compat.ToolCallFunction(
                name="delegate_task", arguments=json.dumps({"prompt": "probe again"})))
            started = execute_tool(call, ag.runtime)
            assert started.startswith("started "), started
            tid = started.split()[-1]
            ag.tasks.wait([tid], timeout=120)
            t = ag.tasks.get(tid)
            assert t.status.value == "finished", t.to_dict()
            assert t.container
            deadline = time.monotonic() + 15  # a finished task's container is removed in the background
            while docker_client.api.containers(all=True, filters={"id": t.container}) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert docker_client.api.containers(all=True, filters={"id": t.container}) == []
    finally:
        set_custom_model(None)


def test_runsc_sandbox_enforces_the_same_limits(docker_client):
    from pygent.sandbox import SandboxPolicy, open_sandbox

    policy = SandboxPolicy(runtime="runsc", memory="128m", timeout=5)
    with open_sandbox("python", policy, pool=False) as sb:
        assert _is_gvisor(sb.exec(KERNEL_PROBE).text)
        r = sb.exec("sleep 100 & sleep 100", timeout=1)
        assert r.timed_out and r.exit_code == 124
        assert "sleep" not in sb.exec("ps -eo comm").text
        net = sb.exec("ls /sys/class/net 2>/dev/null; cat /proc/net/dev | tail -n +3 | cut -d: -f1").text.split()
        assert set(net) <= {"lo"}, net


def test_network_on_a_no_network_runsc_registration_is_refused_clearly(docker_client):
    from pygent.errors import ConfigError
    from pygent.sandbox import SandboxPolicy, open_sandbox

    args = (docker_client.info()["Runtimes"]["runsc"].get("runtimeArgs") or [])
    if "--network=none" not in args:
        pytest.fail("make engine registers runsc with --network=none; this engine does not")
    with pytest.raises(ConfigError, match="network"):
        open_sandbox("python", SandboxPolicy(runtime="runsc", network=True), pool=False)
