"""Fixtures for agent tests (pytest_plugins is only allowed in the root conftest)."""

from support.fixtures import fake_openai, fast_retries  # noqa: F401
