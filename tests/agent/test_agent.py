"""Agent: the loop, its stop reasons, history, the sandbox it uses, and model failures.

Real engine, real loopback HTTP server; models are plain objects with chat().
"""

from __future__ import annotations

import json
import os
import socket
import time

import pytest

from pygent import Agent, openai_compat
from pygent.agent import tools as tool_registry
from pygent.errors import SandboxError
from pygent.models import OpenAIModel
from pygent.sandbox import lifecycle
from support.fake_openai import FakeOpenAI
from support.scripted import Script, call, say
from support.engine import container_exists as exists, wait_gone

# ---- helpers ---------------------------------------------------------------------------


class Echo:
    def chat(self, messages, model, tools):
        return openai_compat.Message(role="assistant", content=f"Echo: {messages[-1]['content']}")


def bash(cmd: str) -> Script:
    """A model that runs `cmd` on every step and never stops."""
    return Script(say(call("bash", {"cmd": cmd})))


def session_containers(api) -> dict[str, dict]:
    return {c["Id"]: c for c in api.containers(all=True, filters={"label": f"{lifecycle.LABEL_SESSION}={lifecycle.SESSION_ID}"})}


@pytest.fixture
def new_agent(agents):
    def make(model=None, **kw) -> Agent:
        ag = Agent(model=model, **kw)
        agents.append(ag)
        return ag

    return make


# ---- the loop ---------------------------------------------------------------------------


def test_step_appends_assistant_message_and_one_tool_result_per_call(new_agent):
    model = Script(say(call("bash", {"cmd": "echo one"}, "a"), call("bash", {"cmd": "echo two >&2; exit 3"}, "b")))
    ag = new_agent(model)
    msg = ag.step("go")
    assert [c.id for c in msg.tool_calls] == ["a", "b"]
    assert [m["role"] for m in ag.history] == ["system", "user", "assistant", "tool", "tool"]
    assert ag.history[1] == {"role": "user", "content": "go"}
    assert ag.history[2]["tool_calls"][0]["function"]["name"] == "bash"
    assert ag.history[3] == {"role": "tool", "tool_call_id": "a", "content": "exit code: 0\nstdout:\none"}
    assert ag.history[4] == {"role": "tool", "tool_call_id": "b", "content": "exit code: 3\nstderr:\ntwo"}
    # The model was sent the history plus the tool schemas.
    assert model.seen[0][-1] == {"role": "user", "content": "go"}


def test_run_until_stop_stops_on_stop(new_agent):
    model = Script(say(content="thinking"), say(call("bash", {"cmd": "true"})), say(call("stop")))
    ag = new_agent(model)
    result = ag.run_until_stop("do it")
    assert (result.reason, result.steps) == ("stop", 3)
    assert result.last_message.tool_calls[0].function.name == "stop"
    assert ag.last_run is result
    # A reply without tool calls gets a "continue"; one with tool calls does not.
    assert model.seen[1][-1] == {"role": "user", "content": "continue"}
    assert model.seen[2][-1]["role"] == "tool"
    assert ag.history[-1] == {"role": "tool", "tool_call_id": "c1", "content": "Stopping."}


def test_run_until_stop_stops_on_ask_user(new_agent):
    ag = new_agent(Script(say(call("ask_user", {"question": "which file?"}))))
    result = ag.run_until_stop("edit the file")
    assert (result.reason, result.steps) == ("ask_user", 1)
    assert result.last_message.tool_calls[0].function.arguments == '{"question": "which file?"}'
    assert not ag.runtime.started  # no tool needed a sandbox


def test_run_until_stop_ends_at_max_steps_when_the_model_never_stops(new_agent):
    model = Script(say(content="still going"))
    ag = new_agent(model)
    result = ag.run_until_stop("loop", max_steps=3)
    assert (result.reason, result.steps, result.error) == ("max_steps", 3, None)
    assert len(model.seen) == 3
    assert str(result) == "max_steps after 3 step(s)"


def test_run_until_stop_ends_at_max_time_and_kills_the_running_command(new_agent):
    ag = new_agent(bash("sleep 30"))
    t0 = time.monotonic()
    result = ag.run_until_stop("wait", max_time=1.5)
    elapsed = time.monotonic() - t0
    assert result.reason == "max_time"
    assert elapsed < 10, elapsed
    # The command was cut at the run's deadline, and the model is told the limit that applied.
    assert ag.history[-1]["content"].startswith("exit code: 124 (timed out after 1.")
    assert ag.runtime.deadline is None


def test_run_until_stop_step_timeout(new_agent):
    ag = new_agent(bash("sleep 30"))
    t0 = time.monotonic()
    result = ag.run_until_stop("wait", step_timeout=1)
    assert result.reason == "step_timeout"
    assert time.monotonic() - t0 < 10


def test_a_model_that_raises_ends_the_run_with_error(new_agent):
    class Broken:
        def chat(self, messages, model, tools):
            raise RuntimeError("backend exploded")

    result = new_agent(Broken()).run_until_stop("hi")
    assert result.reason == "error"
    assert "Broken raised RuntimeError: backend exploded" in result.error


# ---- history ---------------------------------------------------------------------------


def test_history_is_json_and_a_new_agent_resumes_from_it(new_agent):
    first = new_agent(Script(say(call("bash", {"cmd": "echo remembered"})), say(content="done")))
    first.step("session one")
    first.step(None)
    saved = json.dumps(first.history)
    first.close()

    model = Script(say(content="resumed"))
    second = new_agent(model, history=json.loads(saved))
    second.step("session two")
    sent = model.seen[0]
    assert sent[: len(first.history)] == first.history  # the old conversation, unchanged
    assert sent[0]["role"] == "system"
    assert any(m["role"] == "tool" and "remembered" in m["content"] for m in sent)
    assert sent[-1] == {"role": "user", "content": "session two"}
    assert second.system_msg == first.system_msg
    json.dumps(second.history)
    assert not second.runtime.started  # resuming does not start a sandbox


def test_default_system_prompt_mentions_the_sandbox_and_every_tool(new_agent):
    ag = new_agent(Echo())
    prompt = ag.history[0]["content"]
    assert ag.history[0]["role"] == "system"
    assert "sandbox" in prompt.lower() and "/workspace" in prompt
    assert "image: python" in prompt
    for name in tool_registry.TOOLS:
        assert name in prompt, name
    for name in ("bash", "write_file", "read_file", "stop", "ask_user", "delegate_task", "wait_tasks", "collect_file"):
        assert name in prompt
    custom = new_agent(Echo(), system_msg="You are terse.")
    assert custom.history[0] == {"role": "system", "content": "You are terse."}


# ---- the sandbox an agent uses -------------------------------------------------------


def test_an_agent_that_only_chats_starts_no_container(new_agent, api):
    def unpooled(containers: dict) -> set[str]:
        return {cid for cid, c in containers.items() if (c.get("Labels") or {}).get(lifecycle.LABEL_POOLED) != "1"}

    before = unpooled(session_containers(api))
    ag = new_agent(Echo())
    ag.step("hello")
    ag.run_until_stop("again", max_steps=2)
    assert ag.history[-1]["content"] == "Echo: continue"
    assert not ag.runtime.started and ag.runtime._sandbox is None
    assert unpooled(session_containers(api)) == before


def test_one_sandbox_is_reused_cd_and_files_persist(new_agent, api):
    model = Script(
        say(call("bash", {"cmd": "cd /tmp && echo kept > note.txt && hostname"})),
        say(call("bash", {"cmd": "pwd; cat note.txt; hostname"})),
    )
    ag = new_agent(model)
    ag.step("one")
    host1 = ag.history[-1]["content"].split("stdout:\n")[1].strip()
    ag.step("two")
    assert ag.history[-1]["content"] == f"exit code: 0\nstdout:\n/tmp\nkept\n{host1}"
    assert host1.startswith("sandbox-") and host1 != socket.gethostname()
    cid = ag.runtime.sandbox.id
    labels = api.inspect_container(cid)["Config"]["Labels"]
    assert labels[lifecycle.LABEL_SESSION] == lifecycle.SESSION_ID


def test_fresh_sandbox_per_call_shares_only_the_workspace(new_agent, api):
    model = Script(
        say(call("bash", {"cmd": "hostname; echo first > /workspace/shared.txt; echo private > /tmp/p"})),
        say(call("bash", {"cmd": "hostname; cat /workspace/shared.txt; ls /tmp/p"})),
    )
    ag = new_agent(model, fresh_sandbox_per_call=True)
    ag.step("one")
    out1 = ag.history[-1]["content"]
    ag.step("two")
    out2 = ag.history[-1]["content"]
    host1 = out1.split("stdout:\n")[1].splitlines()[0]
    lines2 = out2.split("stdout:\n")[1].splitlines()
    assert host1.startswith("sandbox-") and lines2[0].startswith("sandbox-")
    assert host1 != lines2[0]
    assert lines2[1] == "first"
    assert "No such file" in out2 and out2.startswith("exit code: 2")  # /tmp is per container
    assert not ag.runtime.started  # no long-lived sandbox was kept
    workspace = ag.runtime._tmp_workspace
    ag.close()
    assert workspace is not None and not os.path.exists(workspace)


def test_close_removes_the_container(new_agent, api):
    ag = new_agent(bash("true"))
    ag.step("x")
    cid = ag.runtime.sandbox.id
    assert exists(api, cid)
    ag.close()
    assert wait_gone(api, cid)
    assert not ag.runtime.started
    ag.close()  # idempotent


def test_context_manager_removes_the_container(api):
    with Agent(model=bash("echo in-with")) as ag:
        ag.step("x")
        cid = ag.runtime.sandbox.id
        assert "in-with" in ag.history[-1]["content"]
    assert wait_gone(api, cid)


def test_a_dropped_agent_removes_its_container(api):
    import gc

    ag = Agent(model=bash("true"))
    ag.step("x")
    cid = ag.runtime.sandbox.id
    del ag
    gc.collect()
    assert wait_gone(api, cid)


def test_runtime_api_bash_write_read_cleanup(new_agent, api):
    rt = new_agent(Echo()).runtime
    assert not rt.started
    assert rt.bash("echo hi") == "exit code: 0\nstdout:\nhi"
    assert rt.started
    assert rt.write_file("dir/sub/a.txt", "héllo\n") == "Wrote 7 bytes to /workspace/dir/sub/a.txt"
    assert rt.read_file("dir/sub/a.txt") == "héllo\n"
    assert rt.read_file("/workspace/dir/sub/a.txt") == "héllo\n"
    assert rt.bash("stat -c '%U %s' dir/sub/a.txt") == "exit code: 0\nstdout:\nsandbox 7"
    assert rt.exec("exit 5").exit_code == 5
    cid = rt.sandbox.id
    rt.cleanup()
    assert wait_gone(api, cid)
    with pytest.raises(SandboxError):
        rt.bash("true")
    rt.cleanup()  # idempotent


def test_pygent_image_minimal_selects_the_image(new_agent, api, monkeypatch):
    monkeypatch.setenv("PYGENT_IMAGE", "minimal")
    ag = new_agent(bash("command -v python3 || echo no-python; busybox | head -1"))
    assert ag.runtime.image == "minimal"
    assert "image: minimal" in ag.system_msg
    ag.step("x")
    out = ag.history[-1]["content"]
    assert "no-python" in out and "BusyBox" in out
    image = api.inspect_container(ag.runtime.sandbox.id)["Config"]["Image"]
    assert "minimal" in image
    explicit = new_agent(Echo(), image="python")
    assert explicit.runtime.image == "python"


def test_workspace_mounts_a_host_directory(new_agent, tmp_path):
    tmp_path.chmod(0o777)  # the sandbox user (uid 1000) must be able to write it
    (tmp_path / "input.txt").write_text("from host\n")
    ag = new_agent(
        Script(
            say(call("bash", {"cmd": "cat input.txt && echo from-agent > out.txt"})),
            say(call("write_file", {"path": "sub/w.txt", "content": "written"})),
        ),
        workspace=tmp_path,
    )
    ag.step("one")
    assert ag.history[-1]["content"] == "exit code: 0\nstdout:\nfrom host"
    ag.step("two")
    assert (tmp_path / "out.txt").read_text() == "from-agent\n"
    assert (tmp_path / "sub" / "w.txt").read_text() == "written"


# ---- a real HTTP model -------------------------------------------------------------------


def test_openai_model_over_loopback_runs_bash_then_stops(new_agent, fake_openai: FakeOpenAI):
    fake_openai.queue(
        FakeOpenAI.reply(tool_calls=[FakeOpenAI.tool_call("bash", {"cmd": "echo via-http"}, id="call_a")]),
        FakeOpenAI.reply("all done", tool_calls=[FakeOpenAI.tool_call("stop", {}, id="call_b")]),
    )
    ag = new_agent()  # the default model: OpenAIModel, configured by OPENAI_BASE_URL
    assert isinstance(ag.model, OpenAIModel)
    result = ag.run_until_stop("say it")
    assert (result.reason, result.steps) == ("stop", 2)
    assert len(fake_openai.requests) == 2
    first, second = (r.body for r in fake_openai.requests)
    assert first["messages"][-1] == {"role": "user", "content": "say it"}
    assert {t["function"]["name"] for t in first["tools"]} >= {"bash", "stop", "delegate_task"}
    assert fake_openai.requests[0].headers["authorization"] == "Bearer test-key"
    assert second["messages"][-1] == {"role": "tool", "tool_call_id": "call_a", "content": "exit code: 0\nstdout:\nvia-http"}
    assert second["messages"][-2]["tool_calls"][0]["id"] == "call_a"
    assert ag.history[-2]["content"] == "all done"


def test_a_429_then_success_completes(new_agent, fake_openai: FakeOpenAI):
    fake_openai.queue(
        FakeOpenAI.status(429, headers={"Retry-After": "0"}),
        FakeOpenAI.reply(tool_calls=[FakeOpenAI.tool_call("stop", {})]),
    )
    result = new_agent().run_until_stop("go")
    assert result.reason == "stop"
    assert len(fake_openai.requests) == 2


def test_500s_until_giving_up_end_the_run_with_error_and_close_removes_the_sandbox(new_agent, fake_openai, api):
    fake_openai.queue(
        FakeOpenAI.reply(tool_calls=[FakeOpenAI.tool_call("bash", {"cmd": "true"})]),
        *[FakeOpenAI.status(500)] * openai_compat.MAX_ATTEMPTS,
    )
    ag = new_agent()
    result = ag.run_until_stop("go")
    assert (result.reason, result.steps) == ("error", 2)
    assert "500" in result.error and "fake error 500" in result.error
    assert len(fake_openai.requests) == 1 + openai_compat.MAX_ATTEMPTS
    cid = ag.runtime.sandbox.id
    ag.close()
    assert wait_gone(api, cid)


def test_a_hanging_server_hits_the_timeout(new_agent, fake_openai: FakeOpenAI):
    class ShortTimeout:  # OpenAIModel has no timeout knob: a custom model passes one
        def chat(self, messages, model, tools):
            resp = openai_compat.chat.completions.create(
                model=model, messages=messages, tools=tools, tool_choice="auto", timeout=0.5, max_retries=1
            )
            return resp.choices[0].message

    fake_openai.queue(FakeOpenAI.hang(10), FakeOpenAI.hang(10))
    t0 = time.monotonic()
    result = new_agent(ShortTimeout()).run_until_stop("go")
    elapsed = time.monotonic() - t0
    assert result.reason == "error"
    assert "could not reach the model endpoint" in result.error and "Timeout" in result.error
    assert "gave up after 2 attempt(s)" in result.error
    assert elapsed < 5, elapsed
