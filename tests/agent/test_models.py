"""models: the Model protocol, OpenAIModel, the global custom model and call_model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import openai
import pytest

from pygent import models, openai_compat
from pygent.errors import APIError, ConfigError, ModelError
from support.fake_openai import FakeOpenAI

TOOLS = [{"type": "function", "function": {"name": "bash", "parameters": {"type": "object", "properties": {}}}}]
USER = [{"role": "user", "content": "hi"}]


# The seed's user models, unchanged.
class EchoModel:
    def chat(self, messages, model, tools):
        last = messages[-1]["content"]
        return openai_compat.Message(role="assistant", content=f"Echo: {last}")


class BashModel:
    def chat(self, messages, model, tools):
        cmd = messages[-1]["content"]
        call = openai_compat.ToolCall(
            id="1",
            type="function",
            function=openai_compat.ToolCallFunction(name="bash", arguments=json.dumps({"cmd": cmd})),
        )
        return openai_compat.Message(role="assistant", content=None, tool_calls=[call])


class HTTPModel:
    def chat(self, messages, model, tools):
        resp = openai_compat.chat.completions.create(model=model, messages=messages, tools=tools, tool_choice="auto")
        return resp.choices[0].message


class SDKModel:
    """A model written on the official openai SDK."""

    def __init__(self, client: openai.OpenAI) -> None:
        self.client = client

    def chat(self, messages, model, tools):
        return self.client.chat.completions.create(model=model, messages=messages, tools=tools).choices[0].message


class Raising:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def chat(self, messages, model, tools):
        raise self.exc


@pytest.fixture(autouse=True)
def no_custom_model() -> Iterator[None]:
    models.set_custom_model(None)
    yield
    models.set_custom_model(None)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No provider configured: no key, default endpoint, no pygent.toml."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "PYGENT_MODEL", "PYGENT_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def test_protocol_is_runtime_checkable() -> None:
    assert isinstance(EchoModel(), models.Model)
    assert isinstance(models.OpenAIModel(), models.Model)
    assert not isinstance(object(), models.Model)


def test_openai_model_without_configuration_sends_nothing(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[object] = []
    monkeypatch.setattr(openai_compat, "_send_once", lambda *a, **k: sent.append(a))
    with pytest.raises(ModelError, match="no model configured: set OPENAI_API_KEY"):
        models.OpenAIModel().chat(USER, "gpt-4o-mini", [])
    assert sent == []


def test_openai_model_without_key_works_against_another_endpoint(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeOpenAI() as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
        msg = models.OpenAIModel().chat(USER, "local-llm", [])
        assert msg == openai_compat.Message(role="assistant", content="ok")
        assert "authorization" not in srv.requests[0].headers
        assert srv.requests[0].body["model"] == "local-llm"


def test_openai_model_sends_tools_with_auto_choice(fake_openai: FakeOpenAI) -> None:
    fake_openai.queue(FakeOpenAI.reply(None, [FakeOpenAI.tool_call("bash", {"cmd": "ls"}, id="c1")]))
    msg = models.OpenAIModel().chat(USER, "gpt-test", TOOLS)
    assert isinstance(msg, openai_compat.Message)
    assert msg.tool_calls[0].function.name == "bash"
    body = fake_openai.requests[0].body
    assert body == {"model": "gpt-test", "messages": USER, "tools": TOOLS, "tool_choice": "auto"}


def test_openai_model_name_precedence(fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYGENT_MODEL", "from-env")
    models.OpenAIModel().chat(USER, None, [])
    models.OpenAIModel("from-init").chat(USER, None, [])
    models.OpenAIModel("from-init").chat(USER, "from-call", [])
    assert [r.body["model"] for r in fake_openai.requests] == ["from-env", "from-init", "from-call"]
    assert all("tools" not in r.body and "tool_choice" not in r.body for r in fake_openai.requests)


def test_openai_model_lets_api_errors_through(fake_openai: FakeOpenAI) -> None:
    fake_openai.queue(FakeOpenAI.status(401, {"error": {"message": "bad key"}}))
    with pytest.raises(APIError) as info:
        models.call_model(models.OpenAIModel(), USER, "m", [])
    assert info.value.status_code == 401
    assert "bad key" in info.value.message and "OPENAI_API_KEY" in info.value.message


def test_custom_model_global(clean_env: None) -> None:
    assert models.get_custom_model() is None
    assert isinstance(models.default_model(), models.OpenAIModel)
    echo = EchoModel()
    models.set_custom_model(echo)
    assert models.get_custom_model() is echo
    assert models.default_model() is echo
    models.set_custom_model(None)
    assert isinstance(models.default_model(), models.OpenAIModel)


def test_set_custom_model_rejects_non_models() -> None:
    with pytest.raises(ConfigError):
        models.set_custom_model("gpt-4o")  # type: ignore[arg-type]
    assert models.get_custom_model() is None


def test_call_model_with_seed_models() -> None:
    assert models.call_model(EchoModel(), USER, "m", []) == openai_compat.Message(role="assistant", content="Echo: hi")
    msg = models.call_model(BashModel(), [{"role": "user", "content": "echo hi"}], "m", TOOLS)
    assert msg.content is None
    assert json.loads(msg.tool_calls[0].function.arguments) == {"cmd": "echo hi"}


def test_call_model_with_seed_http_model(fake_openai: FakeOpenAI) -> None:
    fake_openai.queue(FakeOpenAI.reply("remote"))
    assert models.call_model(HTTPModel(), USER, "gpt-x", TOOLS).content == "remote"
    assert fake_openai.requests[0].body["tool_choice"] == "auto"


def test_call_model_with_official_sdk_model(fake_openai: FakeOpenAI) -> None:
    fake_openai.queue(FakeOpenAI.reply(None, [FakeOpenAI.tool_call("bash", {"cmd": "ls"}, id="c7")]))
    with openai.OpenAI(base_url=fake_openai.base_url, api_key="test-key", max_retries=0) as client:
        msg = models.call_model(SDKModel(client), USER, "gpt-x", TOOLS)
    assert type(msg) is openai_compat.Message
    assert msg == openai_compat.Message(
        role="assistant",
        content=None,
        tool_calls=[openai_compat.ToolCall(id="c7", function=openai_compat.ToolCallFunction(name="bash", arguments='{"cmd": "ls"}'))],
    )


@pytest.mark.parametrize(
    "returned",
    [
        {"role": "assistant", "content": "d"},
        SimpleNamespace(role="assistant", content="d", tool_calls=None),
        "d",
    ],
    ids=["dict", "namespace", "str"],
)
def test_call_model_coerces_other_returns(returned: object) -> None:
    model = SimpleNamespace(chat=lambda messages, model, tools: returned)
    assert models.call_model(model, USER, "m", []) == openai_compat.Message(role="assistant", content="d")


def test_call_model_wraps_foreign_exceptions() -> None:
    boom = RuntimeError("boom")
    with pytest.raises(ModelError) as info:
        models.call_model(Raising(boom), USER, "m", [])
    assert str(info.value) == "model Raising raised RuntimeError: boom"
    assert info.value.__cause__ is boom


def test_call_model_passes_pygent_errors_unchanged() -> None:
    err = APIError("rate limited", 429)
    with pytest.raises(APIError) as info:
        models.call_model(Raising(err), USER, "m", [])
    assert info.value is err


def test_call_model_rejects_unusable_return() -> None:
    model = SimpleNamespace(chat=lambda messages, model, tools: 42)
    with pytest.raises(ModelError, match="returned an unusable message"):
        models.call_model(model, USER, "m", [])
