"""A small clone of the official OpenAI client's chat interface.

Why: user models (see docs on custom models) call
``openai_compat.chat.completions.create(...)`` and build ``Message`` /
``ToolCall`` objects; pygent must not require the ``openai`` package for that.
The wire format is OpenAI's, so any compatible endpoint works, and requests
are kept identical to what the official SDK sends for the same call.

Settings (``OPENAI_BASE_URL``, ``OPENAI_API_KEY``) are read at call time, so
changing the environment after import takes effect.

Answers are parsed at least as leniently as the official SDK parses them
(tool calls without id or type, arguments as objects, content parts,
reasoning fields, any finish_reason, several choices: docs/providers.md);
what a refusal means and whether it is retried is decided in
``provider_errors``; each call's latency, attempts and usage go to
``call_stats``.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer, model_validator
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from . import call_stats, provider_errors
from .errors import APIConnectionError, APIError, APIStatusError, ConfigError, MalformedResponse, ModelError
from .settings import get_settings

__all__ = [
    "ChatCompletion",
    "Choice",
    "Message",
    "ToolCall",
    "ToolCallFunction",
    "Usage",
    "chat",
    "close_client",
    "coerce_message",
    "message_to_dict",
    "new_tool_call_id",
    "MAX_ATTEMPTS",
    "DEFAULT_TIMEOUT",
]

# ---------------------------------------------------------------------------
# Wire models
# ---------------------------------------------------------------------------


class _Wire(BaseModel):
    """Base: unknown server fields are ignored; None fields are left off the wire.

    Why drop None: some OpenAI-compatible providers reject explicit nulls
    (``"tool_calls": null``), and the official SDK leaves unset fields out.
    """

    model_config = ConfigDict(extra="ignore")
    _keep_none: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _serialize(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        return {k: v for k, v in data.items() if v is not None or k in self._keep_none}

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI wire dict (JSON-ready)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):  # noqa: ANN206 - returns cls
        """Parse a wire dict; extra keys are ignored."""
        return cls.model_validate(d)


class ToolCallFunction(_Wire):
    """Name and JSON-encoded arguments of a function the model wants called.

    Lenient like the official SDK: ``arguments`` may come as a JSON string, as
    an object (some servers send that; it is re-encoded) or not at all (then
    ``"{}"``, no arguments); a missing name becomes "" (the agent then answers
    "unknown tool" instead of the whole run failing).
    """

    name: str = ""
    arguments: str = "{}"

    @field_validator("name", mode="before")
    @classmethod
    def _name_or_empty(cls, v: Any) -> Any:
        return "" if v is None else v

    @field_validator("arguments", mode="before")
    @classmethod
    def _arguments_as_json(cls, v: Any) -> Any:
        if v is None:
            return "{}"
        if isinstance(v, (dict, list, int, float, bool)):
            return json.dumps(v)
        return v


def new_tool_call_id() -> str:
    """A unique id for a tool call the provider sent without one (the tool result must cite an id)."""
    return f"call_{uuid.uuid4().hex[:24]}"


class ToolCall(_Wire):
    """One tool call in an assistant message.

    A call lacking ``id`` gets a generated unique one, and one lacking
    ``type`` is a ``function`` call (Ollama, some llama.cpp versions and
    routers leave them out; the official SDK accepts that).
    """

    id: str = Field(default_factory=new_tool_call_id)
    type: str = "function"
    function: ToolCallFunction

    @model_validator(mode="before")
    @classmethod
    def _fill_id_and_type(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            data = dict(data)
            if data.get("id") in (None, ""):
                data["id"] = new_tool_call_id()
            elif isinstance(data["id"], int) and not isinstance(data["id"], bool):
                data["id"] = str(data["id"])
            if data.get("type") in (None, ""):
                data["type"] = "function"
        return data


class Message(_Wire):
    """A chat message. ``content`` stays on the wire even when None, as OpenAI sends it.

    ``reasoning_content`` (DeepSeek, vLLM, llama.cpp; ``reasoning`` on routers
    and Ollama) is kept for callers to read but never sent back: providers that
    produce it reject it in requests.
    """

    _keep_none: ClassVar[frozenset[str]] = frozenset({"content"})

    role: str
    content: str | None = None
    tool_calls: list[ToolCall] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = Field(default=None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _reasoning_alias(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("reasoning_content") is None and isinstance(data.get("reasoning"), str):
            data = {**data, "reasoning_content": data["reasoning"]}
        return data

    @field_validator("content", mode="before")
    @classmethod
    def _join_parts(cls, v: Any) -> Any:
        # Some servers return content as a list of parts: join the text parts.
        if isinstance(v, list):
            texts = []
            for part in v:
                if isinstance(part, str):
                    texts.append(part)
                elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
                    texts.append(part["text"])
            return "".join(texts)
        return v

    @field_validator("tool_calls", mode="before")
    @classmethod
    def _empty_is_none(cls, v: Any) -> Any:
        # vLLM and others send "tool_calls": []; replayed, OpenAI rejects an empty array.
        return None if isinstance(v, list) and not v else v


class Choice(_Wire):
    """One completion choice; ``finish_reason`` may be any string or missing."""

    index: int = 0
    message: Message
    finish_reason: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _lenient(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        if data.get("index") is None:
            data["index"] = 0
        reason = data.get("finish_reason")
        if reason is not None and not isinstance(reason, str):
            data["finish_reason"] = str(reason)
        msg = data.get("message")
        if isinstance(msg, Mapping) and msg.get("role") in (None, ""):
            data["message"] = {**msg, "role": "assistant"}
        return data


class Usage(_Wire):
    """Token counts, when the provider reports them."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None


class ChatCompletion(_Wire):
    """A chat completion response. Only ``choices`` is required; the rest defaults when absent or null."""

    id: str = ""
    object: str = "chat.completion"
    created: int = 0
    model: str = ""
    choices: list[Choice]
    usage: Usage | None = None

    @model_validator(mode="before")
    @classmethod
    def _nulls_to_defaults(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = {k: v for k, v in data.items() if not (v is None and k in ("id", "object", "created", "model"))}
        if isinstance(data.get("created"), float):
            data["created"] = int(data["created"])
        return data

    @field_validator("usage", mode="wrap")
    @classmethod
    def _usage_or_none(cls, v: Any, handler: Any) -> Any:
        # Token counts are informative only: an odd usage object must not cost the answer.
        try:
            return handler(v)
        except ValidationError:
            return None


# ---------------------------------------------------------------------------
# Conversions between our models, dicts and foreign (SDK) objects
# ---------------------------------------------------------------------------


def _plain(obj: Any) -> Any:
    """Turn models / SDK objects / namespaces into plain JSON-like data, recursively."""
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    if isinstance(obj, _Wire):
        return obj.to_dict()
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        return _plain(dump())
    if hasattr(obj, "__dict__"):
        return {k: _plain(v) for k, v in vars(obj).items() if not k.startswith("_")}
    return obj


def _drop_none(d: Mapping[str, Any]) -> dict[str, Any]:
    """Drop None-valued keys (SDK dumps carry refusal/audio/function_call=None), keep content.

    An empty ``annotations`` list (response-only, also in SDK dumps) goes too, so a
    message replayed from an SDK dump is sent exactly like our own Message.
    """
    return {k: v for k, v in d.items() if (v is not None or k == "content") and not (k == "annotations" and v == [])}


def message_to_dict(m: Any) -> dict[str, Any]:
    """Wire dict for a Message, a plain dict, or an SDK / attribute-style message object."""
    if isinstance(m, Message):
        return m.to_dict()
    if isinstance(m, Mapping):
        return _drop_none({k: _plain(v) for k, v in m.items()})
    return coerce_message(m).to_dict()


def coerce_message(obj: Any) -> Message:
    """A Message from whatever a model returned: Message, dict, SDK object, str, or a whole completion.

    Raises ModelError when ``obj`` cannot be read as a chat message.
    """
    if isinstance(obj, Message):
        return obj
    if isinstance(obj, str):
        return Message(role="assistant", content=obj)
    if isinstance(obj, ChatCompletion):
        return _first_message(obj)
    data = _plain(obj)
    if not isinstance(data, dict) or not data:
        raise ModelError(f"expected a chat message, got {type(obj).__name__}")
    if "choices" in data and "role" not in data:
        try:
            return _first_message(ChatCompletion.model_validate(data))
        except ValidationError as exc:
            raise ModelError(f"not a valid chat completion: {_brief(exc)}") from None
    data = _drop_none(data)
    data.setdefault("role", "assistant")
    try:
        return Message.model_validate(data)
    except ValidationError as exc:
        raise ModelError(f"not a valid chat message: {_brief(exc)}") from None


def _first_message(c: ChatCompletion) -> Message:
    if not c.choices:
        raise ModelError("chat completion has no choices")
    return c.choices[0].message


def _brief(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()[:5])


# ---------------------------------------------------------------------------
# HTTP client
# ---------------------------------------------------------------------------

DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=120.0, write=30.0, pool=10.0)
MAX_ATTEMPTS = 4  # total attempts, i.e. SDK max_retries=3
RETRY_AFTER_CAP = provider_errors.RETRY_AFTER_CAP  # the cap itself lives (and is patched) there
ERROR_TEXT_LIMIT = provider_errors.ERROR_TEXT_LIMIT
USER_AGENT = "pygent-runner"

# Backoff between attempts when the server gives no Retry-After. Module-level so
# tests can monkeypatch it (e.g. tenacity.wait_none()).
_wait: Any = wait_random_exponential(multiplier=0.5, max=20)

_client: httpx.Client | None = None
_client_lock = threading.Lock()

# Transport failures worth retrying: connect errors, timeouts, resets, dropped connections.
_TRANSIENT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


def _get_client() -> httpx.Client:
    """The shared pooled client, created on first use (thread-safe)."""
    global _client
    client = _client
    if client is None:
        with _client_lock:
            if _client is None:
                _client = httpx.Client(
                    timeout=DEFAULT_TIMEOUT,
                    limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
                )
            client = _client
    return client


def close_client() -> None:
    """Close the shared client's connections (a new one is made on next use)."""
    global _client
    with _client_lock:
        client, _client = _client, None
    if client is not None:
        client.close()


class _Retryable(Exception):
    """Internal: an attempt failed in a way worth retrying; carries the final APIError."""

    def __init__(self, error: APIError, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


def _retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a Retry-After header value (delta-seconds or HTTP date), capped; None if absent/bad."""
    return provider_errors.retry_after_seconds({"retry-after": value or ""})


def _wait_before_retry(state: RetryCallState) -> float:
    """Honour the server's Retry-After when given, else exponential backoff with jitter."""
    exc = state.outcome.exception() if state.outcome is not None else None
    if isinstance(exc, _Retryable) and exc.retry_after is not None:
        return exc.retry_after
    return float(_wait(state))


def _text(resp: httpx.Response) -> str:
    """The body as text, whatever charset the server claims (a wrong one must not raise)."""
    try:
        return resp.text
    except (UnicodeError, LookupError):
        return resp.content.decode("utf-8", "replace")


def _json(resp: httpx.Response) -> object:
    """Parsed JSON; ValueError for anything unusable (not JSON, too deeply nested, bad charset)."""
    try:
        return resp.json()
    except (RecursionError, UnicodeError, LookupError) as exc:
        raise ValueError(f"unusable JSON body: {type(exc).__name__}") from None


def _parse_success(resp: httpx.Response, url: str) -> ChatCompletion:
    """Parse a 2xx body; anything that is not a chat completion is a (non-retried) error.

    Raises MalformedResponse (not JSON, an HTML page, no choices, an unreadable
    choice) or APIStatusError (a 2xx carrying an ``error`` object).
    """
    ctype = resp.headers.get("content-type", "")
    try:
        data = _json(resp)
    except ValueError:
        text = _text(resp)
        raise provider_errors.malformed(url, resp.status_code, "the body is not JSON", text, text, ctype) from None
    if isinstance(data, dict) and "choices" not in data and data.get("error"):
        text = _text(resp)
        raise APIStatusError(provider_errors.provider_message(text, data, ctype), resp.status_code, data)
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
        raise provider_errors.malformed(url, resp.status_code, "no 'choices' list", _text(resp), data)
    if not data["choices"]:
        raise provider_errors.malformed(url, resp.status_code, "no choices (an empty 'choices' list)", _text(resp), data)
    try:
        return ChatCompletion.model_validate(data)
    except ValidationError as exc:
        raise provider_errors.malformed(url, resp.status_code, _brief(exc), _text(resp), data) from None


def _send_once(url: str, headers: dict[str, str], payload: bytes, timeout: httpx.Timeout, last: dict[str, Any]) -> ChatCompletion:
    """One HTTP attempt. Raises _Retryable for transient failures, APIError subclasses for final ones.

    ``last["status"]`` is set to this attempt's HTTP status (None: no answer), for the call record.
    """
    last["status"] = None
    try:
        resp = _get_client().post(url, content=payload, headers=headers, timeout=timeout)
    except _TRANSIENT as exc:
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise _Retryable(APIConnectionError(f"could not reach the model endpoint {url} ({detail})", None)) from exc
    except httpx.DecodingError as exc:  # e.g. a Content-Encoding the body does not have
        raise MalformedResponse(f"malformed response from {url}: cannot decode the body ({exc})", None) from None
    last["status"] = resp.status_code
    if 200 <= resp.status_code < 300:
        return _parse_success(resp, url)
    text = _text(resp)
    try:
        body: object = _json(resp)
    except ValueError:
        body = text
    error, retry = provider_errors.classify(resp.status_code, text, body, resp.headers, url)
    if retry:
        raise _Retryable(error, provider_errors.retry_after_seconds(resp.headers))
    raise error


def _timeout_of(value: float | httpx.Timeout | None) -> httpx.Timeout:
    if value is None:
        return DEFAULT_TIMEOUT
    if isinstance(value, httpx.Timeout):
        return value
    return httpx.Timeout(float(value))


def _build_body(model: str, messages: Iterable[Any], tools: Any, tool_choice: Any, extra: dict[str, Any]) -> dict[str, Any]:
    """Request body in the SDK's shape: model, messages, tools, tool_choice, then extras.

    Empty ``tools`` are left out (OpenAI rejects ``"tools": []``), and so is a
    ``tool_choice`` without tools (OpenAI rejects that too).
    """
    body: dict[str, Any] = {"model": model, "messages": [message_to_dict(m) for m in messages]}
    if tools:
        body["tools"] = _plain(list(tools))
        if tool_choice is not None:
            body["tool_choice"] = _plain(tool_choice)
    for key, value in extra.items():
        body[key] = _plain(value)
    return body


def _usage_dict(usage: Usage | None) -> call_stats.Usage | None:
    if usage is None:
        return None
    counts = {k: v for k, v in usage.to_dict().items() if isinstance(v, int)}
    return call_stats.Usage(**counts) if counts else None  # type: ignore[typeddict-item]


class _Completions:
    """``chat.completions``: mirrors ``openai.OpenAI().chat.completions``."""

    def create(
        self,
        model: str,
        messages: Iterable[Any],
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        *,
        timeout: float | httpx.Timeout | None = None,
        max_retries: int | None = None,
        **extra: Any,
    ) -> ChatCompletion:
        """POST a chat completion and return it parsed.

        ``timeout`` (seconds) and ``max_retries`` (total attempts = max_retries + 1)
        work like the official SDK's options; other keyword arguments
        (temperature, max_tokens, ...) go into the request body. Each call's
        latency, attempts and token usage are recorded (``call_stats``).

        Raises:
            ConfigError: stream=True, or a negative max_retries.
            APIConnectionError: the endpoint could not be reached, after the retries.
            AuthenticationError, NotFoundError, BadRequestError: a 401/403, 404, other 4xx (never retried).
            RateLimitError, ServerError: a 429 / 5xx that persisted through the retries.
            ModelOutputError: the provider could not parse the model's output (never retried).
            MalformedResponse: a 2xx that is not a chat completion (HTML page, not JSON, no choices).
            (all subclasses of APIError)
        """
        if extra.get("stream"):
            raise ConfigError("openai_compat does not support stream=True")
        if max_retries is not None and max_retries < 0:
            raise ConfigError("max_retries must be >= 0")
        settings = get_settings()
        url = settings.openai_base_url.rstrip("/") + "/chat/completions"
        headers = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": USER_AGENT}
        if settings.openai_api_key:
            headers["Authorization"] = f"Bearer {settings.openai_api_key}"
        body = _build_body(model, messages, tools, tool_choice, {k: v for k, v in extra.items() if v is not None})
        payload = json.dumps(body).encode()
        attempts = MAX_ATTEMPTS if max_retries is None else max_retries + 1
        retrying = Retrying(
            stop=stop_after_attempt(attempts),
            wait=_wait_before_retry,
            retry=retry_if_exception_type(_Retryable),
            reraise=True,
        )
        last: dict[str, Any] = {"status": None}
        started = time.monotonic()
        result: ChatCompletion | None = None
        failure: BaseException | None = None
        try:
            result = retrying(_send_once, url, headers, payload, _timeout_of(timeout), last)
            return result
        except _Retryable as exc:
            err = exc.error
            if err.status_code is None:
                tried = retrying.statistics.get("attempt_number", attempts)
                err = APIConnectionError(f"{err.message}; gave up after {tried} attempt(s)", None, err.body)
            failure = err
            raise err from exc.__cause__
        except BaseException as exc:
            failure = exc
            raise
        finally:
            done = int(retrying.statistics.get("attempt_number", 1) or 1)
            call_stats.record(call_stats.CallRecord(
                url=url, model=model, latency_s=round(time.monotonic() - started, 6), attempts=done, retries=done - 1,
                status=last["status"], usage=_usage_dict(result.usage) if result is not None else None,
                error=str(failure)[:ERROR_TEXT_LIMIT] if failure is not None else None,
            ))


class _Chat:
    """``chat``: holds ``completions`` like the official client."""

    def __init__(self) -> None:
        self.completions = _Completions()


chat = _Chat()
