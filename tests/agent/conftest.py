"""Fixtures for agent tests (pytest_plugins is only allowed in the root conftest)."""

import pytest

from support.fixtures import fake_openai, fast_retries  # noqa: F401


@pytest.fixture(autouse=True)
def _clean_globals():
    """No test leaks a global custom model or a registered tool into the next."""
    yield
    from pygent.agent.tools import reset_tools
    from pygent.models import set_custom_model

    set_custom_model(None)
    reset_tools()


@pytest.fixture
def api(docker_client):
    return docker_client.api


@pytest.fixture
def agents():
    """Agents appended here are closed after the test."""
    made = []
    yield made
    for ag in made:
        ag.close()
