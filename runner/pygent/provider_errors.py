"""What an HTTP answer from a model provider means: which typed error, and whether to retry.

Why one module: the retry policy and the wording users read when a provider
refuses are one decision per status, made here once; ``openai_compat`` only
sends requests and parses successes.

Policy (the official SDK's, plus one exception it lacks):

- transport errors, 408, 409, 429 and 5xx are retried; a server's
  ``Retry-After`` / ``retry-after-ms`` is honoured, capped at ``RETRY_AFTER_CAP``;
- 400, 401, 403, 404 (every other 4xx) are never retried;
- a 5xx whose body says the provider could not parse the *model's own output*
  (llama.cpp: "the model produced output that does not match the expected ...
  format", "Failed to parse input at pos ..."; Ollama: "error parsing tool
  call") is not retried: the same request makes the same model say the same
  thing, so four attempts only quadruple the wait;
- ``x-should-retry: true|false`` from the server overrides the above, as in the SDK.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

from .errors import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    MalformedResponse,
    ModelOutputError,
    NotFoundError,
    RateLimitError,
    ServerError,
)

__all__ = ["RETRY_AFTER_CAP", "ERROR_TEXT_LIMIT", "classify", "html_title", "looks_like_html", "quote", "retry_after_seconds"]

RETRY_AFTER_CAP = 30.0  # never sleep longer than this for a server's Retry-After
ERROR_TEXT_LIMIT = 500  # characters of a provider's message or body quoted in an error

#: Wording of providers whose own parser rejected what the model generated.
MODEL_OUTPUT_PATTERNS = re.compile(
    r"does not match the expected .{0,80}format"
    r"|failed to parse (?:input at pos|tool call)"
    r"|error parsing tool call"
    r"|could not parse (?:the )?(?:model(?:'s)? )?(?:output|tool call)",
    re.IGNORECASE | re.DOTALL,
)

_RETRIED_STATUS = frozenset({408, 409, 429})


def quote(text: str, limit: int = ERROR_TEXT_LIMIT) -> str:
    """``text`` cut to ``limit`` characters (marked when cut), for error messages."""
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more characters]"


def looks_like_html(text: str, content_type: str = "") -> bool:
    """True for an HTML page (a proxy's or a web UI's), whatever status it came with."""
    if "html" in content_type.lower():
        return True
    head = text.lstrip()[:100].lower()
    return head.startswith(("<!doctype html", "<html", "<head", "<body"))


def html_title(text: str) -> str | None:
    """The page's <title> (e.g. "502 Bad Gateway"), or None."""
    match = re.search(r"<title[^>]*>(.*?)</title>", text[:20000], re.IGNORECASE | re.DOTALL)
    if match is None:
        return None
    return " ".join(match.group(1).split())[:200] or None


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (delta-seconds or HTTP date), capped.

    None when absent or unreadable (the caller then uses its backoff).
    """
    lower = {k.lower(): v for k, v in headers.items()}
    ms = lower.get("retry-after-ms")
    if ms:
        try:
            return _capped(float(ms) / 1000.0)
        except ValueError:
            pass
    value = (lower.get("retry-after") or "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    return _capped(seconds)


def _capped(seconds: float) -> float | None:
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP)


def provider_message(text: str, body: object, content_type: str = "") -> str:
    """What the provider said: ``error.message`` (or ``message`` / ``detail``) when JSON, else the text.

    An HTML page is summarised by its title rather than quoted tag by tag.
    """
    msg: object = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            msg = err.get("message")
        elif isinstance(err, str):
            msg = err
        if msg is None:
            msg = body.get("message") or body.get("detail")
    if isinstance(msg, str) and msg.strip():
        return quote(msg)
    if looks_like_html(text, content_type):
        title = html_title(text)
        return f"an HTML page{f' titled {title!r}' if title else ''}, not JSON: {quote(text, 200)!r}"
    return quote(text) or "(empty body)"


def classify(status: int, text: str, body: object, headers: Mapping[str, str], url: str) -> tuple[APIStatusError, bool]:
    """The typed error for an HTTP error answer, and whether the request is worth retrying.

    ``body`` is the parsed JSON (or the text when not JSON). The message says
    what the provider said and, where there is one, what to check.
    """
    said = provider_message(text, body, headers.get("content-type", ""))
    model_output = status >= 500 and bool(MODEL_OUTPUT_PATTERNS.search(text[:20000]))
    error: APIStatusError
    if model_output:
        error = ModelOutputError(
            f"the provider could not parse the model's output (not retried: the same request gives the same output): {said}. "
            "Try again with another model, or a server chat template that supports tool calls",
            status, body,
        )
    elif status in (401, 403):
        what = "rejected the API key" if status == 401 else "refused access"
        error = AuthenticationError(
            f"the provider at {url} {what}: {said}. Check OPENAI_API_KEY (the key sent as a bearer token) "
            "and OPENAI_BASE_URL (the endpoint it is sent to)",
            status, body,
        )
    elif status == 404:
        error = NotFoundError(
            f"{url} answered 404: {said}. Check OPENAI_BASE_URL (most servers want the URL ending in /v1) "
            "and the model name (PYGENT_MODEL / --model)",
            status, body,
        )
    elif status == 429:
        error = RateLimitError(said, status, body)
    elif status >= 500:
        error = ServerError(said, status, body)
    else:
        error = BadRequestError(said, status, body)
    retry = not model_output and (status in _RETRIED_STATUS or status >= 500)
    should = {k.lower(): v for k, v in headers.items()}.get("x-should-retry", "").strip().lower()
    if should in ("true", "false") and not model_output:
        retry = should == "true"
    return error, retry


def malformed(url: str, status: int, why: str, text: str, body: object, content_type: str = "") -> MalformedResponse:
    """A 2xx answer we cannot use; the message quotes (bounded) what came back."""
    if looks_like_html(text, content_type):
        title = html_title(text)
        return MalformedResponse(
            f"malformed response from {url}: an HTML page{f' titled {title!r}' if title else ''} instead of a chat completion "
            f"(is OPENAI_BASE_URL the API's address, usually ending in /v1?): {quote(text, 200)!r}",
            status, text,
        )
    return MalformedResponse(f"malformed response from {url}: {why}: {quote(text, 300)!r}", status, body)
