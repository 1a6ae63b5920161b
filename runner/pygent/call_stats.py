"""Per-request figures of model calls (latency, attempts, token usage), for transcripts and events.

Why a side channel: a user's model (the seed's ``HTTPModel``) calls
``openai_compat.chat.completions.create`` itself and returns only the message,
so the agent never sees the response's ``usage`` or how many attempts it took.
``create`` appends a ``CallRecord`` to the list opened by ``record_calls()``
in the current context (a ``ContextVar``: each thread, so each agent step and
delegated task, has its own); with no list open, nothing is kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypedDict

__all__ = ["CallRecord", "Usage", "record", "record_calls", "sum_usage"]


class Usage(TypedDict, total=False):
    """Token counts as the provider reported them (keys it did not report are absent)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CallRecord(TypedDict):
    """One ``chat.completions.create`` call: all its attempts, as the caller experienced it."""

    url: str
    model: str
    latency_s: float  #: from the first attempt's start to the answer (or the final error), retries included
    attempts: int
    retries: int  #: attempts - 1
    status: int | None  #: HTTP status of the last attempt; None when no answer came
    usage: Usage | None
    error: str | None


_current: ContextVar[list[CallRecord] | None] = ContextVar("pygent_model_calls", default=None)


@contextmanager
def record_calls() -> Iterator[list[CallRecord]]:
    """Collect the records of every ``create`` made in this context until the block ends."""
    calls: list[CallRecord] = []
    token = _current.set(calls)
    try:
        yield calls
    finally:
        _current.reset(token)


def record(entry: CallRecord) -> None:
    """Append ``entry`` to the open collection, if any (cheap no-op otherwise)."""
    calls = _current.get()
    if calls is not None:
        calls.append(entry)


def sum_usage(calls: list[CallRecord]) -> Usage | None:
    """Token counts summed over calls, per key; None when no call reported any."""
    total: dict[str, int] = {}
    for call in calls:
        for key, value in (call["usage"] or {}).items():
            if isinstance(value, int):
                total[key] = total.get(key, 0) + value
    return Usage(**total) if total else None  # type: ignore[typeddict-item]
