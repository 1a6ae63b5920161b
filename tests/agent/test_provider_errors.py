"""What a provider's refusal turns into: the typed error, its wording, and whether (and when) it is retried.

Real loopback server (support.fake_openai). Timing assertions here are bounds
on the retry policy (a Retry-After is waited for; a huge one is capped), not
speed claims.
"""

from __future__ import annotations

import time

import openai
import pytest

from pygent import Agent
from pygent import openai_compat as oc
from pygent import provider_errors
from pygent.errors import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    BadRequestError,
    MalformedResponse,
    ModelOutputError,
    NotFoundError,
    RateLimitError,
    ServerError,
)
from support.fake_openai import FakeOpenAI

pytestmark = pytest.mark.timeout(60)

USER = [{"role": "user", "content": "x"}]

LLAMA_CPP_BAD_OUTPUT = {"error": {"code": 500, "type": "server_error",
                                  "message": "The model produced output that does not match the expected peg-native format"}}
LLAMA_CPP_PARSE_POS = {"error": {"code": 500, "type": "server_error", "message": "Failed to parse input at pos 395: <|tool_call_start|>[f(x=1)]"}}
OLLAMA_BAD_TOOL_CALL = {"error": {"message": "error parsing tool call: raw='{\"name\": \"bash\", \"arguments\": {', err=unexpected end of JSON input",
                                  "type": "api_error", "param": None, "code": None}}


def _create(**kw: object) -> oc.ChatCompletion:
    return oc.chat.completions.create(model="m", messages=USER, **kw)


@pytest.mark.parametrize(
    ("code", "kind", "hint"),
    [(401, AuthenticationError, "OPENAI_API_KEY"), (403, AuthenticationError, "OPENAI_API_KEY"),
     (404, NotFoundError, "OPENAI_BASE_URL"), (400, BadRequestError, None)],
)
def test_client_errors_are_not_retried_and_say_what_to_check(fake_openai: FakeOpenAI, code: int, kind: type, hint: str | None) -> None:
    fake_openai.handler = lambda body: FakeOpenAI.status(code, {"error": {"message": f"provider says {code}", "type": "invalid_request_error"}})
    with pytest.raises(kind) as info:
        _create()
    assert len(fake_openai.requests) == 1
    assert info.value.status_code == code
    assert f"provider says {code}" in str(info.value)
    if hint:
        assert hint in str(info.value) and "OPENAI_BASE_URL" in str(info.value)


@pytest.mark.parametrize("body", [LLAMA_CPP_BAD_OUTPUT, LLAMA_CPP_PARSE_POS, OLLAMA_BAD_TOOL_CALL], ids=["llama.cpp-format", "llama.cpp-pos", "ollama"])
def test_model_output_parse_failure_is_not_retried(fake_openai: FakeOpenAI, body: dict) -> None:
    fake_openai.handler = lambda _: FakeOpenAI.status(500, body)
    with pytest.raises(ModelOutputError) as info:
        _create()
    assert len(fake_openai.requests) == 1
    assert body["error"]["message"][:40] in str(info.value)
    assert "could not parse the model's output" in str(info.value)


def test_agent_run_ends_at_once_on_model_output_failure(fake_openai: FakeOpenAI, agents: list) -> None:
    fake_openai.handler = lambda _: FakeOpenAI.status(500, LLAMA_CPP_BAD_OUTPUT)
    agent = Agent()
    agents.append(agent)
    result = agent.run_until_stop("go", max_steps=3)
    assert result.reason == "error" and result.steps == 1
    assert "does not match the expected peg-native format" in result.error
    assert len(fake_openai.requests) == 1


def test_plain_500_is_still_retried(fake_openai: FakeOpenAI) -> None:
    fake_openai.queue(FakeOpenAI.status(500, {"error": {"message": "CUDA out of memory"}}), FakeOpenAI.reply("fine"))
    assert _create().choices[0].message.content == "fine"
    assert len(fake_openai.requests) == 2


@pytest.mark.parametrize("code", [502, 503, 504])
def test_gateway_errors_are_retried(fake_openai: FakeOpenAI, code: int) -> None:
    fake_openai.queue(FakeOpenAI.html(code, f"{code} Gateway Trouble"), FakeOpenAI.reply("back"))
    assert _create().choices[0].message.content == "back"
    assert len(fake_openai.requests) == 2


def test_persisting_html_error_page_is_quoted_by_title(fake_openai: FakeOpenAI) -> None:
    fake_openai.handler = lambda _: FakeOpenAI.html(502, "502 Bad Gateway")
    with pytest.raises(ServerError) as info:
        _create(max_retries=1)
    assert len(fake_openai.requests) == 2
    assert "HTML page titled '502 Bad Gateway'" in str(info.value)
    assert len(str(info.value)) < 600


@pytest.mark.parametrize("code", [429, 503])
def test_retry_after_is_waited_for(fake_openai: FakeOpenAI, code: int) -> None:
    fake_openai.queue(FakeOpenAI.status(code, headers={"Retry-After": "0.5"}), FakeOpenAI.reply("after"))
    start = time.monotonic()
    assert _create().choices[0].message.content == "after"
    assert time.monotonic() - start >= 0.5  # not retried before the server said
    assert len(fake_openai.requests) == 2


def test_retry_after_ms_is_waited_for(fake_openai: FakeOpenAI) -> None:
    fake_openai.queue(FakeOpenAI.status(429, headers={"retry-after-ms": "400", "Retry-After": "0"}), FakeOpenAI.reply("after"))
    start = time.monotonic()
    _create()
    assert time.monotonic() - start >= 0.4


def test_huge_retry_after_is_capped(fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(provider_errors, "RETRY_AFTER_CAP", 0.3)
    fake_openai.queue(FakeOpenAI.status(429, headers={"Retry-After": "3600"}), FakeOpenAI.status(503, headers={"Retry-After": "3600"}),
                      FakeOpenAI.reply("after"))
    start = time.monotonic()
    assert _create().choices[0].message.content == "after"
    elapsed = time.monotonic() - start
    assert 0.6 <= elapsed < 20  # waited the cap twice, not an hour
    assert len(fake_openai.requests) == 3


def test_persisting_429_is_a_rate_limit_error_after_all_attempts(fake_openai: FakeOpenAI) -> None:
    fake_openai.handler = lambda _: FakeOpenAI.status(429, {"error": {"message": "Rate limit reached for gpt-4o"}}, {"Retry-After": "0"})
    with pytest.raises(RateLimitError, match="Rate limit reached"):
        _create()
    assert len(fake_openai.requests) == oc.MAX_ATTEMPTS


def test_server_may_forbid_a_retry(fake_openai: FakeOpenAI) -> None:
    fake_openai.handler = lambda _: FakeOpenAI.status(503, headers={"x-should-retry": "false"})
    with pytest.raises(ServerError):
        _create()
    assert len(fake_openai.requests) == 1


def test_transport_errors_are_retried_then_named(fake_openai: FakeOpenAI) -> None:
    fake_openai.queue(FakeOpenAI.drop(), FakeOpenAI.drop(), FakeOpenAI.reply("third time"))
    assert _create().choices[0].message.content == "third time"
    fake_openai.handler = lambda _: FakeOpenAI.drop()
    with pytest.raises(APIConnectionError) as info:
        _create(max_retries=2)
    assert "gave up after 3 attempt(s)" in str(info.value) and fake_openai.base_url in str(info.value)
    assert isinstance(info.value, (APIError, ConnectionError))


@pytest.mark.parametrize(
    ("response", "quoted"),
    [
        (FakeOpenAI.raw(200, {"id": "x", "object": "chat.completion", "choices": []}), '"choices": []'),
        (FakeOpenAI.raw(200, {"object": "list", "data": [{"id": "llama3"}]}), "no 'choices' list"),
        (FakeOpenAI.raw(200, "upstream said: nope", "text/plain"), "upstream said: nope"),
        (FakeOpenAI.html(200, "Open WebUI"), "HTML page titled 'Open WebUI'"),
    ],
    ids=["empty-choices", "not-a-completion", "not-json", "html-page"],
)
def test_unusable_success_is_an_error_quoting_what_came_back(fake_openai: FakeOpenAI, response: object, quoted: str) -> None:
    fake_openai.queue(response)
    with pytest.raises(MalformedResponse) as info:
        _create()
    assert quoted in str(info.value)
    assert fake_openai.base_url in str(info.value)
    assert len(fake_openai.requests) == 1


def test_quoted_bodies_are_bounded(fake_openai: FakeOpenAI) -> None:
    fake_openai.queue(FakeOpenAI.raw(200, "z" * 100_000, "text/plain"))
    with pytest.raises(MalformedResponse) as info:
        _create()
    assert len(str(info.value)) < 1000


def test_sdk_also_rejects_what_we_reject_for_auth(fake_openai: FakeOpenAI) -> None:
    """Our typed errors line up with the SDK's classes for the same answers."""
    fake_openai.handler = lambda _: FakeOpenAI.status(401, {"error": {"message": "Incorrect API key provided"}})
    with openai.OpenAI(base_url=fake_openai.base_url, api_key="test-key", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="m", messages=USER)
    with pytest.raises(AuthenticationError, match="Incorrect API key provided"):
        _create()
