"""The model provider misbehaves: documented retries, then a clean failure; the sandbox still goes."""

import pytest

from pygent import Agent, openai_compat
from pygent.models import OpenAIModel
from support.fake_openai import FakeOpenAI

pytestmark = pytest.mark.timeout(120)

ATTEMPTS = openai_compat.MAX_ATTEMPTS


def _faults():
    return {
        "5xx": lambda: FakeOpenAI.status(503, {"error": {"message": "overloaded"}}),
        "dropped connection": FakeOpenAI.drop,
        "garbage JSON": FakeOpenAI.garbage,
        "slow": lambda: FakeOpenAI.hang(3),
    }


@pytest.mark.parametrize("fault", list(_faults()))
def test_fault_after_a_tool_call_ends_the_run_cleanly_and_removes_the_sandbox(fault, fake_openai, monkeypatch, docker_client):
    monkeypatch.setenv("PYGENT_API_TIMEOUT", "0.5")
    make = _faults()[fault]
    # First answer: a bash call (so the agent has a container); then the fault, every time.
    fake_openai.queue(FakeOpenAI.reply(tool_calls=[FakeOpenAI.tool_call("bash", {"cmd": "echo started"})]), *[make() for _ in range(ATTEMPTS + 2)])
    ag = Agent(model=OpenAIModel())
    result = ag.run_until_stop("go", max_steps=5)
    container = ag.runtime.sandbox.id
    assert result.reason == "error", result
    assert "started" in ag.history[3]["content"]  # the tool ran in the sandbox before the fault
    requests_after_first = len(fake_openai.requests) - 1
    if fault == "garbage JSON":
        assert requests_after_first == 1  # a 200 with a broken body is not retried
        assert "malformed" in result.error.lower() or "json" in result.error.lower(), result.error
    else:
        assert requests_after_first == ATTEMPTS, (fault, requests_after_first)
    if fault == "5xx":
        assert "503" in result.error and "overloaded" in result.error
    ag.close()
    assert docker_client.api.containers(all=True, filters={"id": container}) == []
