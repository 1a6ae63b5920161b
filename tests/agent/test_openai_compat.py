"""openai_compat: wire models, request bodies (checked against the official SDK), retries and failures.

Every HTTP test talks to a real loopback server (support.fake_openai).
"""

from __future__ import annotations

import json
import threading
import time
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessage

from pygent import openai_compat as oc
from pygent.errors import APIError, ConfigError, ModelError
from support.fake_openai import FakeOpenAI

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "bash",
            "description": "Run a shell command.",
            "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]},
        },
    }
]


def bash_call(cmd: str, id: str = "call_1") -> oc.ToolCall:  # noqa: A002
    return oc.ToolCall(id=id, type="function", function=oc.ToolCallFunction(name="bash", arguments=json.dumps({"cmd": cmd})))


# ---------------------------------------------------------------------------
# Wire models
# ---------------------------------------------------------------------------


def test_models_construct_like_the_seed_and_compare_by_value() -> None:
    a = oc.Message(role="assistant", content=None, tool_calls=[bash_call("ls")])
    b = oc.Message(role="assistant", tool_calls=[bash_call("ls")])
    assert a == b
    assert a != oc.Message(role="assistant", tool_calls=[bash_call("pwd")])
    assert a.tool_calls[0].function.name == "bash"
    assert json.loads(a.tool_calls[0].function.arguments) == {"cmd": "ls"}
    assert oc.ToolCall(id="1", function=oc.ToolCallFunction(name="f", arguments="{}")).type == "function"


def test_to_dict_keeps_null_content_and_omits_other_nones() -> None:
    msg = oc.Message(role="assistant", content=None, tool_calls=[bash_call("ls")])
    assert msg.to_dict() == {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "bash", "arguments": '{"cmd": "ls"}'}}],
    }
    assert oc.Message(role="user", content="hi").to_dict() == {"role": "user", "content": "hi"}
    tool_result = oc.Message(role="tool", content="out", tool_call_id="call_1", name="bash")
    assert tool_result.to_dict() == {"role": "tool", "content": "out", "tool_call_id": "call_1", "name": "bash"}


@pytest.mark.parametrize(
    "msg",
    [
        oc.Message(role="user", content="hello"),
        oc.Message(role="assistant", content=None, tool_calls=[bash_call("ls"), bash_call("pwd", "call_2")]),
        oc.Message(role="assistant", content="thinking", tool_calls=[bash_call("ls")]),
        oc.Message(role="tool", content="x", tool_call_id="call_1"),
    ],
)
def test_message_round_trips_through_dict_and_json(msg: oc.Message) -> None:
    assert oc.Message.from_dict(msg.to_dict()) == msg
    assert oc.Message.from_dict(json.loads(json.dumps(msg.to_dict()))) == msg


def test_completion_round_trip_and_extra_server_fields_ignored() -> None:
    wire = FakeOpenAI.reply("hi", usage={"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9, "prompt_tokens_details": {"cached_tokens": 0}})
    wire["choices"][0]["message"]["reasoning_content"] = "secret"
    wire["service_tier"] = "default"
    completion = oc.ChatCompletion.from_dict(wire)
    message = completion.choices[0].message
    assert message.to_dict() == {"role": "assistant", "content": "hi"}  # reasoning is never sent back
    assert message.reasoning_content == "secret"  # but the caller can read it
    assert message.tool_calls is None
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage == oc.Usage(prompt_tokens=7, completion_tokens=2, total_tokens=9)
    assert oc.ChatCompletion.from_dict(completion.to_dict()).to_dict() == completion.to_dict()
    assert "system_fingerprint" not in completion.to_dict()


def test_completion_without_usage_or_ids_parses() -> None:
    c = oc.ChatCompletion.from_dict({"choices": [{"message": {"role": "assistant", "content": "x"}}]})
    assert c.usage is None
    assert c.choices[0].index == 0
    assert "usage" not in c.to_dict()


def test_content_given_as_list_of_parts_is_joined() -> None:
    msg = oc.Message.from_dict({"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]})
    assert msg.content == "ab"


def test_tool_call_arguments_given_as_object_become_json() -> None:
    fn = oc.ToolCallFunction.from_dict({"name": "bash", "arguments": {"cmd": "ls"}})
    assert json.loads(fn.arguments) == {"cmd": "ls"}


# ---------------------------------------------------------------------------
# message_to_dict / coerce_message
# ---------------------------------------------------------------------------

SDK_MESSAGE = ChatCompletionMessage.model_validate(
    {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "annotations": [],
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "bash", "arguments": '{"cmd": "ls"}'}}],
    }
)
EXPECTED_TOOL_MESSAGE = oc.Message(role="assistant", content=None, tool_calls=[bash_call("ls")])


@pytest.mark.parametrize(
    "obj",
    [
        EXPECTED_TOOL_MESSAGE,
        EXPECTED_TOOL_MESSAGE.to_dict(),
        SDK_MESSAGE,
        SDK_MESSAGE.model_dump(),
        SimpleNamespace(
            role="assistant",
            content=None,
            tool_calls=[SimpleNamespace(id="call_1", type="function", function=SimpleNamespace(name="bash", arguments='{"cmd": "ls"}'))],
        ),
    ],
    ids=["Message", "dict", "sdk-object", "sdk-dump", "namespace"],
)
def test_any_message_shape_gives_the_same_wire_dict_and_message(obj: object) -> None:
    assert oc.message_to_dict(obj) == EXPECTED_TOOL_MESSAGE.to_dict()
    assert oc.coerce_message(obj) == EXPECTED_TOOL_MESSAGE


def test_message_to_dict_drops_sdk_nulls_but_keeps_content() -> None:
    d = oc.message_to_dict({"role": "assistant", "content": None, "refusal": None, "audio": None, "function_call": None})
    assert d == {"role": "assistant", "content": None}


def test_coerce_message_accepts_str_and_whole_completion() -> None:
    assert oc.coerce_message("hi") == oc.Message(role="assistant", content="hi")
    assert oc.coerce_message(FakeOpenAI.reply("yo")) == oc.Message(role="assistant", content="yo")
    assert oc.coerce_message(oc.ChatCompletion.from_dict(FakeOpenAI.reply("yo"))).content == "yo"


@pytest.mark.parametrize("bad", [42, None, {}, {"role": "assistant", "tool_calls": [{"id": 1}]}])
def test_coerce_message_rejects_non_messages(bad: object) -> None:
    with pytest.raises(ModelError):
        oc.coerce_message(bad)


# ---------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------


def test_request_body_mixes_dicts_and_messages(fake_openai: FakeOpenAI) -> None:
    history = [
        {"role": "system", "content": "be brief"},
        oc.Message(role="user", content="list files"),
        oc.Message(role="assistant", content=None, tool_calls=[bash_call("ls")]),
        {"role": "tool", "tool_call_id": "call_1", "content": "a.txt"},
    ]
    resp = oc.chat.completions.create(model="m1", messages=history)
    assert resp.choices[0].message == oc.Message(role="assistant", content="ok")
    req = fake_openai.requests[0]
    assert req.method == "POST"
    assert req.path == "/v1/chat/completions"
    assert req.body == {
        "model": "m1",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "list files"},
            {"role": "assistant", "content": None, "tool_calls": [bash_call("ls").to_dict()]},
            {"role": "tool", "tool_call_id": "call_1", "content": "a.txt"},
        ],
    }
    assert list(req.body) == ["model", "messages"]


def test_authorization_header_and_extras_in_body(fake_openai: FakeOpenAI) -> None:
    oc.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], tools=TOOLS, tool_choice="auto", temperature=0.1, max_tokens=5, timeout=5, max_retries=0)
    req = fake_openai.requests[0]
    assert req.headers["authorization"] == "Bearer test-key"
    assert req.headers["content-type"] == "application/json"
    assert list(req.body) == ["model", "messages", "tools", "tool_choice", "temperature", "max_tokens"]
    assert req.body["tools"] == TOOLS
    assert "timeout" not in req.body and "max_retries" not in req.body


@pytest.mark.parametrize("tools", [None, []])
def test_tools_and_tool_choice_omitted_without_tools(fake_openai: FakeOpenAI, tools: list | None) -> None:
    oc.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], tools=tools, tool_choice="auto")
    assert set(fake_openai.requests[0].body) == {"model", "messages"}


def test_settings_are_read_at_call_time(fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    # The module was imported long before this env points at the second server.
    with FakeOpenAI() as other:
        monkeypatch.setenv("OPENAI_BASE_URL", other.base_url + "/")  # trailing slash is stripped
        monkeypatch.setenv("OPENAI_API_KEY", "second-key")
        oc.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        assert [r.path for r in other.requests] == ["/v1/chat/completions"]
        assert other.requests[0].headers["authorization"] == "Bearer second-key"
    assert fake_openai.requests == []


def test_no_authorization_header_without_key(fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    oc.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert "authorization" not in fake_openai.requests[0].headers


def test_stream_is_refused() -> None:
    with pytest.raises(ConfigError):
        oc.chat.completions.create(model="m", messages=[], stream=True)


# ---------------------------------------------------------------------------
# Parity with the official openai SDK
# ---------------------------------------------------------------------------

PARITY_SCENARIOS = {
    "plain": (dict(messages=[{"role": "user", "content": "hi"}]), FakeOpenAI.reply("hello")),
    "tools": (
        dict(messages=[{"role": "user", "content": "ls"}], tools=TOOLS, tool_choice="auto"),
        FakeOpenAI.reply(None, [FakeOpenAI.tool_call("bash", {"cmd": "ls"}, id="call_9")]),
    ),
    "history-and-extras": (
        dict(
            messages=[
                {"role": "system", "content": "sys"},
                {"role": "user", "content": "ls"},
                {"role": "assistant", "content": None, "tool_calls": [bash_call("ls").to_dict()]},
                {"role": "tool", "tool_call_id": "call_1", "content": "a.txt"},
            ],
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "bash"}},
            temperature=0.0,
            max_tokens=64,
        ),
        FakeOpenAI.reply("done", usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}),
    ),
}


@pytest.mark.parametrize("name", list(PARITY_SCENARIOS))
def test_same_request_and_result_as_official_sdk(fake_openai: FakeOpenAI, name: str) -> None:
    kwargs, response = PARITY_SCENARIOS[name]
    fake_openai.queue(response, response)
    ours = oc.chat.completions.create(model="gpt-x", **kwargs)
    with openai.OpenAI(base_url=fake_openai.base_url, api_key="test-key", max_retries=0) as client:
        theirs = client.chat.completions.create(model="gpt-x", **kwargs)
    ours_req, sdk_req = fake_openai.requests
    assert ours_req.path == sdk_req.path
    assert ours_req.headers["authorization"] == sdk_req.headers["authorization"]
    assert ours_req.body == sdk_req.body
    ours_msg, sdk_msg = ours.choices[0].message, theirs.choices[0].message
    assert (ours_msg.role, ours_msg.content) == (sdk_msg.role, sdk_msg.content)
    assert [t.to_dict() for t in ours_msg.tool_calls or []] == [t.model_dump() for t in sdk_msg.tool_calls or []]
    assert oc.coerce_message(sdk_msg) == ours_msg
    assert ours.choices[0].finish_reason == theirs.choices[0].finish_reason
    assert ours.usage.total_tokens == theirs.usage.total_tokens


def test_sdk_message_sent_back_as_history_matches_our_message(fake_openai: FakeOpenAI) -> None:
    """An agent may keep SDK objects in its history; the request must be what our Message gives."""
    fake_openai.queue(FakeOpenAI.reply(None, [FakeOpenAI.tool_call("bash", {"cmd": "ls"}, id="call_1")]))
    with openai.OpenAI(base_url=fake_openai.base_url, api_key="test-key", max_retries=0) as client:
        sdk_msg = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "ls"}]).choices[0].message
    oc.chat.completions.create(model="m", messages=[sdk_msg])
    oc.chat.completions.create(model="m", messages=[EXPECTED_TOOL_MESSAGE])
    assert fake_openai.requests[1].body == fake_openai.requests[2].body


# ---------------------------------------------------------------------------
# Retries and failures
# ---------------------------------------------------------------------------

USER = [{"role": "user", "content": "x"}]


def test_429_then_success_is_retried(fake_openai: FakeOpenAI) -> None:
    fake_openai.queue(FakeOpenAI.status(429, headers={"Retry-After": "0"}), FakeOpenAI.reply("after"))
    resp = oc.chat.completions.create(model="m", messages=USER)
    assert resp.choices[0].message.content == "after"
    assert len(fake_openai.requests) == 2


def test_retry_after_parsing_and_cap() -> None:
    assert oc._retry_after_seconds("2") == 2.0
    assert oc._retry_after_seconds("1000") == oc.RETRY_AFTER_CAP
    assert oc._retry_after_seconds("soon") is None
    assert oc._retry_after_seconds(None) is None
    future = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=10), usegmt=True)
    assert 5 <= oc._retry_after_seconds(future) <= 10


def test_5xx_gives_up_after_max_attempts(fake_openai: FakeOpenAI) -> None:
    fake_openai.handler = lambda body: FakeOpenAI.status(500, {"error": {"message": "server melted"}})
    with pytest.raises(APIError) as info:
        oc.chat.completions.create(model="m", messages=USER)
    assert info.value.status_code == 500
    assert info.value.message == "server melted"
    assert len(fake_openai.requests) == oc.MAX_ATTEMPTS


def test_max_retries_kwarg_bounds_attempts(fake_openai: FakeOpenAI) -> None:
    fake_openai.handler = lambda body: FakeOpenAI.status(502, "bad gateway")
    with pytest.raises(APIError) as info:
        oc.chat.completions.create(model="m", messages=USER, max_retries=1)
    assert info.value.status_code == 502
    assert info.value.message == "bad gateway"
    assert len(fake_openai.requests) == 2


def test_400_is_not_retried_and_carries_provider_message(fake_openai: FakeOpenAI) -> None:
    fake_openai.queue(FakeOpenAI.status(400, {"error": {"message": "Invalid 'messages[0].role'", "type": "invalid_request_error"}}))
    with pytest.raises(APIError) as info:
        oc.chat.completions.create(model="m", messages=USER)
    assert info.value.status_code == 400
    assert "Invalid 'messages[0].role'" in str(info.value)
    assert info.value.body["error"]["type"] == "invalid_request_error"
    assert len(fake_openai.requests) == 1


def test_long_text_error_is_truncated(fake_openai: FakeOpenAI) -> None:
    fake_openai.queue(FakeOpenAI.status(404, "x" * 2000))
    with pytest.raises(APIError) as info:
        oc.chat.completions.create(model="m", messages=USER)
    assert info.value.status_code == 404
    assert "x" * 500 in info.value.message and "x" * 501 not in info.value.message  # quoted, bounded
    assert "1500 more characters" in info.value.message
    assert "OPENAI_BASE_URL" in info.value.message  # what to check


def test_hanging_server_times_out(fake_openai: FakeOpenAI) -> None:
    fake_openai.handler = lambda body: FakeOpenAI.hang(10)
    start = time.monotonic()
    with pytest.raises(APIError) as info:
        oc.chat.completions.create(model="m", messages=USER, timeout=0.5, max_retries=1)
    elapsed = time.monotonic() - start
    assert 0.9 <= elapsed < 4
    assert info.value.status_code is None
    assert fake_openai.base_url in str(info.value)
    assert len(fake_openai.requests) == 2


def test_dropped_connection_then_success(fake_openai: FakeOpenAI) -> None:
    fake_openai.queue(FakeOpenAI.drop(), FakeOpenAI.reply("back"))
    resp = oc.chat.completions.create(model="m", messages=USER)
    assert resp.choices[0].message.content == "back"
    assert len(fake_openai.requests) == 2


def test_unreachable_endpoint_names_the_url(monkeypatch: pytest.MonkeyPatch, fast_retries: None) -> None:
    with FakeOpenAI() as dead:
        url = dead.base_url
    monkeypatch.setenv("OPENAI_BASE_URL", url)  # closed: connections are refused
    with pytest.raises(APIError) as info:
        oc.chat.completions.create(model="m", messages=USER)
    assert info.value.status_code is None
    assert "could not reach" in str(info.value)
    assert url in str(info.value)
    assert f"after {oc.MAX_ATTEMPTS} attempt" in str(info.value)


@pytest.mark.parametrize(
    "response",
    [FakeOpenAI.garbage(), {"id": "x", "object": "chat.completion"}, {"choices": [{"message": {"content": 5}}]}],
    ids=["not-json", "no-choices", "bad-choice"],
)
def test_malformed_success_raises_without_retry(fake_openai: FakeOpenAI, response: object) -> None:
    fake_openai.queue(response)
    with pytest.raises(APIError) as info:
        oc.chat.completions.create(model="m", messages=USER)
    assert "malformed response" in str(info.value)
    assert len(fake_openai.requests) == 1


def test_200_with_error_body_reports_the_error(fake_openai: FakeOpenAI) -> None:
    fake_openai.queue({"error": {"message": "quota exceeded"}})
    with pytest.raises(APIError, match="quota exceeded"):
        oc.chat.completions.create(model="m", messages=USER)


def test_default_backoff_is_bounded_exponential_with_jitter() -> None:
    waits = [oc._wait(SimpleNamespace(attempt_number=n)) for n in range(1, 12)]
    assert all(0 <= w <= 20 for w in waits)


def test_shared_client_is_created_once_across_threads(fake_openai: FakeOpenAI) -> None:
    oc.close_client()
    barrier = threading.Barrier(8)
    clients: list[httpx.Client] = []
    results: list[str] = []

    def worker() -> None:
        barrier.wait()
        clients.append(oc._get_client())
        results.append(oc.chat.completions.create(model="m", messages=USER).choices[0].message.content)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len({id(c) for c in clients}) == 1
    assert results == ["ok"] * 8
    assert len(fake_openai.requests) == 8
