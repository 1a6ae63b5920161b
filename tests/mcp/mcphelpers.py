"""Helpers for the MCP tests: the SDK's own clients against a real `pygent-runner mcp`.

Each test starts a real server process (stdio: spawned by the SDK's stdio_client;
HTTP: a subprocess on a free loopback port). Those processes have their own pygent
session ids, so the suite-wide leak check cannot see their containers: every
container a test looks up is remembered here by its owner pid, and at the end
none owned by one of those pids may be left.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from support.engine import OWNER_PID
from typing import Any, AsyncIterator, Iterator


REPO = Path(__file__).resolve().parents[2]
SERVER = [sys.executable, "-m", "pygent.cli", "mcp"]

#: Owner pids of every sandbox a test looked up (conftest's leak check reads it).
owner_pids: set[int] = set()


def server_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYGENT_CONFIG"}
    env.update(extra)
    return env


@asynccontextmanager
async def stdio_session(*args: str, env: dict[str, str] | None = None) -> AsyncIterator[Any]:
    """An initialized SDK ClientSession over stdio with `pygent-runner mcp ARGS...`."""
    from mcp import ClientSession, StdioServerParameters, stdio_client

    params = StdioServerParameters(command=SERVER[0], args=[*SERVER[1:], *args], env=env or server_env(), cwd=str(REPO))
    async with stdio_client(params, errlog=sys.stderr) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            yield session


class HttpServer:
    """A `pygent-runner mcp --http 127.0.0.1:0` subprocess: its URL, token and stderr."""

    def __init__(self, proc: subprocess.Popen, url: str, token: str, lines: list[str]) -> None:
        self.proc, self.url, self.token, self.lines = proc, url, token, lines


@contextmanager
def http_server(*args: str, timeout: float = 30.0) -> Iterator[HttpServer]:
    proc = subprocess.Popen(
        [*SERVER, "--http", "127.0.0.1:0", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=server_env(),
        cwd=REPO,
    )
    lines: list[str] = []
    ready = threading.Event()

    def drain() -> None:
        for line in proc.stderr:  # type: ignore[union-attr]
            lines.append(line)
            text = "".join(lines)
            if re.search(r"http://\S+/mcp", text) and ("bearer token:" in text or "--token" in args):
                ready.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    try:
        assert ready.wait(timeout), f"server did not start: {lines}"
        text = "".join(lines)
        url = re.search(r"(http://\S+/mcp)", text)
        assert url, f"no URL on stderr: {text}"
        token = re.search(r"bearer token: (\S+)", text)
        given = args[args.index("--token") + 1] if "--token" in args else None
        yield HttpServer(proc, url.group(1), given or (token.group(1) if token else ""), lines)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@asynccontextmanager
async def http_session(url: str, token: str | None) -> AsyncIterator[Any]:
    """An initialized SDK ClientSession over Streamable HTTP, sending `token` as the bearer."""
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(60.0)) as client:
        async with streamable_http_client(url, http_client=client) as (read, write, *_):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


def text_of(result: Any) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


def container_of(hostname: str) -> dict | None:
    """The engine's view of the sandbox whose hostname a tool call printed (remembered for the leak check)."""
    from pygent.sandbox.engine import get_client

    api = get_client().api
    found = api.containers(all=True, filters={"name": f"pygent-{hostname.strip().removeprefix('sandbox-')}-"})
    if found:
        owner_pids.add(int(found[0]["Labels"][OWNER_PID]))
    return found[0] if found else None


def wait_for_file(cid: str, path: str, timeout: float = 30.0) -> None:
    """Block until `path` exists in the container (seen through the engine, not through MCP)."""
    import time

    from pygent.sandbox.engine import get_client

    api = get_client().api
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        probe = api.exec_create(cid, ["test", "-e", path], user="1000")
        api.exec_start(probe["Id"])
        if api.exec_inspect(probe["Id"])["ExitCode"] == 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"{path} never appeared in {cid[:12]}")


def gone_within(cid: str, timeout: float) -> bool:
    from support.engine import wait_gone

    from pygent.sandbox.engine import get_client

    return wait_gone(get_client().api, cid, timeout)

#: How a result of a session-less (2026-07-28 over HTTP) call starts.
STATELESS = "note: this client speaks the stateless MCP revision"
