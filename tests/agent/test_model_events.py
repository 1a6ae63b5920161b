"""The model side is visible: Agent(on_event=...) gets one "model" event per model call,
with its latency, retries and token usage (when the provider reports them).

Real loopback server (support.fake_openai); the seed's HTTPModel shows the
figures reach the agent even when a user model calls openai_compat itself.
"""

from __future__ import annotations

import pytest

from pygent import Agent
from pygent.agent.loop import StepEvent
from support.fake_openai import FakeOpenAI
from support.seed import seed_class

pytestmark = pytest.mark.timeout(60)

USAGE = {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}


@pytest.mark.parametrize("which", ["default", "seed-http-model"])
def test_model_event_carries_latency_retries_and_usage(fake_openai: FakeOpenAI, agents: list, which: str) -> None:
    fake_openai.queue(FakeOpenAI.status(429, headers={"Retry-After": "0"}), FakeOpenAI.reply("hi", usage=USAGE))
    events: list[StepEvent] = []
    agent = Agent(model=seed_class("HTTPModel")() if which != "default" else None, on_event=events.append)
    agents.append(agent)
    agent.step("hello")
    assert [e.kind for e in events] == ["model", "assistant", "step"]  # step: the end of the step (issue 26)
    model = events[0]
    assert model.data["retries"] == 1 and model.data["attempts"] == 2
    assert model.data["usage"] == USAGE
    assert model.data["error"] is None
    assert model.data["latency_s"] == pytest.approx(model.duration, abs=1e-5) and model.duration > 0
    (request,) = model.data["requests"]
    assert request["status"] == 200 and request["url"] == fake_openai.base_url + "/chat/completions"
    assert request["retries"] == 1 and 0 < request["latency_s"] <= model.data["latency_s"] + 1e-5
    assert events[1].content == "hi"  # the assistant event is unchanged


def test_usage_is_none_when_the_provider_reports_none(fake_openai: FakeOpenAI, agents: list) -> None:
    body = FakeOpenAI.reply("no counts")
    del body["usage"]
    fake_openai.queue(body)
    events: list[StepEvent] = []
    agents.append(agent := Agent(on_event=events.append))
    agent.step("hello")
    assert events[0].kind == "model" and events[0].data["usage"] is None and events[0].data["retries"] == 0


def test_a_model_without_http_gets_a_model_event_too(agents: list) -> None:
    echo = seed_class("EchoModel")
    events: list[StepEvent] = []
    agents.append(agent := Agent(model=echo(), on_event=events.append))
    agent.step("test")
    model = events[0]
    assert model.kind == "model" and model.data["requests"] == [] and model.data["usage"] is None
    assert model.data["retries"] == 0 and model.data["latency_s"] >= 0


def test_a_failed_call_is_reported_before_the_run_ends(fake_openai: FakeOpenAI, agents: list) -> None:
    fake_openai.handler = lambda _: FakeOpenAI.status(401, {"error": {"message": "bad key"}})
    events: list[StepEvent] = []
    agents.append(agent := Agent(on_event=events.append))
    result = agent.run_until_stop("hello", max_steps=2)
    assert result.reason == "error"
    assert [e.kind for e in events] == ["model"]
    assert "bad key" in events[0].data["error"] and events[0].data["requests"][0]["status"] == 401
    assert events[0].data["retries"] == 0


def test_tool_steps_keep_their_events_in_order(fake_openai: FakeOpenAI, agents: list) -> None:
    fake_openai.queue(FakeOpenAI.reply(tool_calls=[FakeOpenAI.tool_call("bash", {"cmd": "echo hi"})]))
    events: list[StepEvent] = []
    agents.append(agent := Agent(on_event=events.append))
    agent.step("go")
    # sandbox: the agent's sandbox was created (issue 26); output: as the command prints; step: its end
    assert [e.kind for e in events] == ["model", "assistant", "sandbox", "output", "tool", "step"]
    events.remove(events[2])
    assert events[2].content == "hi\n" and events[3].tool == "bash" and "hi" in events[3].content
