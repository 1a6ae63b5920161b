"""MCP tests: fixtures (helpers live in mcphelpers.py, a name no other test directory uses)."""

from __future__ import annotations

import pytest

from mcphelpers import owner_pids


@pytest.fixture(scope="session", autouse=True)
def no_mcp_leaks(docker_client):
    yield
    from support.engine import reap_owned

    leaked = reap_owned(docker_client.api, owner_pids, timeout=15)
    assert not leaked, f"MCP servers left containers behind: {leaked}"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
