"""Pytest fixtures built on the fake OpenAI server.

Import them into a conftest: ``from support.fixtures import fake_openai  # noqa: F401``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tenacity import wait_none

from support.fake_openai import FakeOpenAI


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """No backoff sleeps between retries (a server's Retry-After is still honoured)."""
    from pygent import openai_compat

    monkeypatch.setattr(openai_compat, "_wait", wait_none())


@pytest.fixture
def fake_openai(monkeypatch: pytest.MonkeyPatch, fast_retries: None) -> Iterator[FakeOpenAI]:
    """A running FakeOpenAI, with OPENAI_BASE_URL / OPENAI_API_KEY pointing at it."""
    with FakeOpenAI() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        yield server
