"""MCP tests: fixtures (helpers live in mcphelpers.py, a name no other test directory uses)."""

from __future__ import annotations

import time

import pytest

from mcphelpers import OWNER_PID, owner_pids


@pytest.fixture(scope="session", autouse=True)
def no_mcp_leaks(docker_client):
    yield
    leaked = []
    deadline = time.monotonic() + 15
    for pid in owner_pids:
        while True:
            left = docker_client.api.containers(all=True, filters={"label": f"{OWNER_PID}={pid}"})
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        for c in left:
            leaked.append((pid, c["Id"][:12]))
            try:
                docker_client.api.remove_container(c["Id"], force=True, v=True)
            except Exception:
                pass
    assert not leaked, f"MCP servers left containers behind: {leaked}"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
