"""No container outlives its MCP session: client killed mid-call, server SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from mcphelpers import OWNER_PID, REPO, SERVER, container_of, gone_within, server_env, stdio_session, wait_for_file

pytestmark = [pytest.mark.docker]

# A client process of its own (the SDK's stdio_client, which spawns the server): it
# prints the sandbox's hostname, then blocks in a long call until it is killed.
CLIENT = textwrap.dedent(
    f"""
    import anyio, sys
    from mcp import ClientSession, StdioServerParameters, stdio_client

    async def main():
        params = StdioServerParameters(command={SERVER[0]!r}, args={SERVER[1:] + ["--timeout", "600"]!r})
        async with stdio_client(params) as (r, w), ClientSession(r, w) as s:
            await s.initialize()
            host = (await s.call_tool("bash", {{"cmd": "hostname"}})).structured_content["stdout"]
            print(host.strip(), flush=True)
            await s.call_tool("bash", {{"cmd": "echo started > /tmp/mark; sleep 600"}})

    anyio.run(main)
    """
)


def test_a_client_killed_mid_call_leaves_no_container():
    client = subprocess.Popen([sys.executable, "-c", CLIENT], stdout=subprocess.PIPE, text=True, env=server_env(), cwd=REPO)
    try:
        host = client.stdout.readline().strip()
        assert host.startswith("sandbox-"), f"client printed {host!r}"
        container = container_of(host)
        assert container is not None and container["State"] == "running"
        wait_for_file(container["Id"], "/tmp/mark")  # the long call is really running inside the sandbox
        client.send_signal(signal.SIGKILL)
        client.wait(10)
        assert gone_within(container["Id"], 30), "the sandbox outlived its killed client"
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(10)


@pytest.mark.anyio
async def test_a_sigkilled_server_leaves_no_container():
    from contextlib import AsyncExitStack

    stack = AsyncExitStack()
    s = await stack.enter_async_context(stdio_session())
    try:
        host = (await s.call_tool("bash", {"cmd": "hostname"})).structured_content["stdout"]
        container = container_of(host)
        assert container is not None
        server_pid = int(container["Labels"][OWNER_PID])
        assert server_pid != os.getpid()
        os.kill(server_pid, signal.SIGKILL)  # no atexit, no finally: only the owner-death net is left
        assert gone_within(container["Id"], 30), "the sandbox outlived its SIGKILLed server"
    finally:
        try:
            await stack.aclose()
        except Exception:  # the server is gone: the SDK client may complain while closing
            pass

