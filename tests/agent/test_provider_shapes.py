"""Every documented provider response shape works, and we accept at least what the official SDK accepts.

For each shape (support.provider_shapes), in one test and from the same
loopback server (support.fake_openai): the official `openai` client parses
the body, our `chat.completions.create` parses it to the same content, tool
calls and usage, and then an agent runs it end to end twice, once through the
seed's HTTPModel snippet and once through Agent()'s default model: the tool
call runs in a sandbox and its result goes back under the call's id.
"""

from __future__ import annotations

import json

import openai
import pytest

from pygent import Agent
from pygent import openai_compat as oc
from support.fake_openai import FakeOpenAI
from support.provider_shapes import SHAPES, Shape
from support.seed import seed_class

pytestmark = pytest.mark.timeout(120)

USER = [{"role": "user", "content": "go"}]
TOOLS = [{"type": "function", "function": {"name": "bash", "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}}}}]


def _sdk_text(content: object) -> str | None:
    """The SDK leaves content parts as the list it got: their text, as we join it."""
    if isinstance(content, list):
        return "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return content  # type: ignore[return-value]


def _sdk_arguments(arguments: object) -> object:
    return arguments if isinstance(arguments, dict) else json.loads(arguments)  # type: ignore[arg-type]


def _check_agent_ran_it(fake: FakeOpenAI, agent: Agent, shape: Shape, marker: str) -> None:
    fake.queue(FakeOpenAI.raw(200, shape.body(f"echo {marker}")))
    message = agent.step("go")
    if shape.text is not None:
        assert message.content == shape.text
        assert agent.history[-1] == {"role": "assistant", "content": shape.text}  # reasoning is not replayed
        assert not agent.runtime.started  # a text answer starts no sandbox
        return
    assistant, result = agent.history[-2:]
    assert result["role"] == "tool" and result["content"] == f"exit code: 0\nstdout:\n{marker}"
    assert result["tool_call_id"] == assistant["tool_calls"][0]["id"] != ""
    assert "reasoning_content" not in assistant
    # The next request sends the call and its result back, ids matching, as OpenAI requires.
    fake.queue(FakeOpenAI.reply("done"))
    agent.step(None)
    sent = fake.requests[-1].body["messages"]
    call_id = sent[-2]["tool_calls"][0]["id"]
    assert sent[-2]["tool_calls"][0]["type"] == "function"
    assert sent[-1] == {"role": "tool", "tool_call_id": call_id, "content": result["content"]}


@pytest.mark.parametrize("shape", SHAPES, ids=[s.name for s in SHAPES])
def test_provider_shape_parses_like_the_sdk_and_drives_an_agent(shape: Shape, fake_openai: FakeOpenAI, agents: list) -> None:
    body = shape.body("echo parsed")

    # The official SDK, from the same server: what it accepts, we must accept.
    fake_openai.queue(FakeOpenAI.raw(200, body))
    with openai.OpenAI(base_url=fake_openai.base_url, api_key="test-key", max_retries=0) as client:
        sdk = client.chat.completions.create(model="m", messages=USER, tools=TOOLS)
    fake_openai.queue(FakeOpenAI.raw(200, body))
    ours = oc.chat.completions.create(model="m", messages=USER, tools=TOOLS)
    assert fake_openai.requests[0].body == fake_openai.requests[1].body

    sdk_msg, msg = sdk.choices[0].message, ours.choices[0].message
    assert msg.role == "assistant"
    assert msg.content == _sdk_text(sdk_msg.content)
    if shape.text is not None:
        assert msg.content == shape.text
    assert msg.reasoning_content == shape.reasoning
    assert len(msg.tool_calls or []) == len(sdk_msg.tool_calls or [])
    for mine, theirs in zip(msg.tool_calls or [], sdk_msg.tool_calls or []):
        assert mine.type == "function"
        assert (mine.function.name, json.loads(mine.function.arguments)) == (theirs.function.name, _sdk_arguments(theirs.function.arguments))
        assert json.loads(mine.function.arguments) == {"cmd": "echo parsed"}  # the first choice's
        if theirs.id:
            assert mine.id == theirs.id
        else:  # the provider sent none (or ""): a unique one stands in
            assert mine.id.startswith("call_") and len(mine.id) > 10
    if sdk.usage is not None and getattr(sdk.usage, "total_tokens", None) is not None:
        assert ours.usage is not None and ours.usage.total_tokens == sdk.usage.total_tokens

    # End to end: the seed's HTTPModel snippet, then Agent()'s default model (OPENAI_BASE_URL).
    http_model = seed_class("HTTPModel")
    for label, agent in (("seed", Agent(model=http_model())), ("default", Agent())):
        agents.append(agent)
        _check_agent_ran_it(fake_openai, agent, shape, f"{shape.name}-via-{label}")


def test_generated_tool_call_ids_are_unique() -> None:
    body = {"choices": [{"message": {"tool_calls": [{"function": {"name": "bash"}}, {"function": {"name": "bash"}}]}}]}
    ids = {c.id for _ in range(50) for c in oc.ChatCompletion.from_dict(body).choices[0].message.tool_calls}
    assert len(ids) == 100
    call = oc.ChatCompletion.from_dict(body).choices[0].message.tool_calls[0]
    assert (call.type, call.function.arguments) == ("function", "{}")  # missing arguments: no arguments
