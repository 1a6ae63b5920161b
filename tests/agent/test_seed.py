"""The seed document's snippets (custom models), executed in-process exactly as written.

Every ```python block of the seed (docs/custom-models.md) runs, in order, in one
namespace (the global-model snippet uses the echo snippet's EchoModel). The HTTP
snippet talks to the loopback fake server through OPENAI_BASE_URL.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from pygent import Agent, set_custom_model
from pygent.agent import TaskStatus
from pygent.models import get_custom_model
from pygent.sandbox import lifecycle
from support.fake_openai import FakeOpenAI

from support.seed import SEED, SHARED_SEED, seed_blocks


@pytest.fixture
def run_seed(fake_openai: FakeOpenAI) -> Iterator[tuple[dict, list[Agent]]]:
    """Run every block; return the namespace and the `ag` each block left behind."""
    fake_openai.queue(FakeOpenAI.reply("You are the test user."))  # for the HTTP snippet
    # Later requests come from the delegated "noop" task (default model, no custom one set): it stops.
    fake_openai.handler = lambda body: FakeOpenAI.reply(tool_calls=[FakeOpenAI.tool_call("stop", {})])
    blocks = seed_blocks()
    ns: dict = {"__name__": "__seed__"}
    agents: list[Agent] = []
    try:
        for i, code in enumerate(blocks):
            exec(compile(code, f"{SEED}[block {i + 1}]", "exec"), ns)
            agents.append(ns["ag"])
        yield ns, agents
    finally:
        for ag in agents:
            ag.close()


def test_the_seed_has_the_five_snippets():
    blocks = seed_blocks()
    assert len(blocks) == 5
    assert [b for b in blocks if "class EchoModel" in b] and "set_custom_model(EchoModel())" in blocks[3]


def test_every_seed_snippet_runs_unchanged(run_seed, fake_openai, docker_client):
    ns, (echo, http, bash, global_, delegate) = run_seed
    api = docker_client.api

    # Echo model: the reply is in the history, and chatting started no container.
    assert echo.history[-2:] == [{"role": "user", "content": "test"}, {"role": "assistant", "content": "Echo: test"}]
    assert not echo.runtime.started

    # HTTP model through openai_compat against OPENAI_BASE_URL.
    assert http.history[-1] == {"role": "assistant", "content": "You are the test user."}
    sent = fake_openai.requests[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer test-key"
    assert sent.body["messages"][-1] == {"role": "user", "content": "who am I?"}
    assert sent.body["tool_choice"] == "auto" and {t["function"]["name"] for t in sent.body["tools"]} >= {"bash", "stop"}

    # Bash model: the command ran in a container, not on the host.
    assert bash.history[-1] == {"role": "tool", "tool_call_id": "1", "content": "exit code: 0\nstdout:\nhi from tool"}
    cid = bash.runtime.sandbox.id
    assert api.inspect_container(cid)["Config"]["Labels"][lifecycle.LABEL_SESSION] == lifecycle.SESSION_ID
    bash.step("hostname")
    seen = bash.history[-1]["content"].split("stdout:\n")[1].strip()
    assert seen.startswith("sandbox-") and seen != socket.gethostname()
    bash.step("cat /proc/1/comm; id -u")
    assert bash.history[-1]["content"].split("stdout:\n")[1].split() == ["docker-init", "1000"]  # PID 1: the container's init (tini)

    # Global custom model: Agent() picked it up; the snippet reset it afterwards.
    assert isinstance(global_.model, ns["EchoModel"])
    assert global_.history[-1] == {"role": "assistant", "content": "Echo: hello"}
    assert get_custom_model() is None

    # Delegation: the parent delegated once, then stopped; the sub-task ran to its end.
    assert (delegate.last_run.reason, delegate.last_run.steps) == ("stop", 2)
    assert delegate.history[3]["content"].startswith("started ")
    [status] = delegate.tasks.wait(timeout=60)
    assert status["status"] == "finished" and status["reason"] == "stop"
    assert any(r.body["messages"][-1] == {"role": "user", "content": "noop"} for r in fake_openai.requests[1:])


def test_a_global_custom_model_drives_delegated_tasks(run_seed):
    ns, _ = run_seed
    set_custom_model(ns["EchoModel"]())
    ag = Agent(model=ns["DelegateModel"]())
    try:
        assert isinstance(ag.model, ns["DelegateModel"])
        assert ag.run_until_stop("begin", max_steps=2).reason == "stop"
        [task] = ag.tasks.tasks.values()
        assert task.done.wait(30)
        assert task.status == TaskStatus.FINISHED, task.to_dict()
        assert task.answer and task.answer.startswith("Echo: ")  # the sub-agent used the global EchoModel
    finally:
        ag.close()
        set_custom_model(None)
    # An Agent() made now gets the default model again.
    from pygent.models import OpenAIModel

    plain = Agent()
    try:
        assert isinstance(plain.model, OpenAIModel)
    finally:
        plain.close()


def test_the_docs_copy_is_the_seed_users_code_against():
    """docs/custom-models.md is the seed; where the shared seed is beside the repo, they match."""
    blocks = seed_blocks()
    assert len(blocks) == 5 and "class DelegateModel" in blocks[-1]
    if SHARED_SEED.exists():
        assert SEED.read_text() == SHARED_SEED.read_text()
