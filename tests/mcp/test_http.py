"""`pygent-runner mcp --http`: Streamable HTTP on loopback, bearer token, one sandbox per session."""

from __future__ import annotations

import anyio
import httpx2
import pytest

from mcphelpers import REPO, SERVER, container_of, gone_within, http_server, http_session, server_env, text_of

pytestmark = [pytest.mark.docker]

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.mark.anyio
async def test_two_http_sessions_each_get_their_own_isolated_sandbox():
    with http_server() as srv:
        assert srv.url.startswith("http://127.0.0.1:")
        async with http_session(srv.url, srv.token) as a, http_session(srv.url, srv.token) as b:
            await a.call_tool("write_file", {"path": "secret.txt", "content": "only a"})
            results = {}

            async def host(name, s):
                results[name] = (await s.call_tool("bash", {"cmd": "hostname; ls /workspace"})).structured_content["stdout"].split()

            async with anyio.create_task_group() as tg:  # both at once
                tg.start_soon(host, "a", a)
                tg.start_soon(host, "b", b)
            assert results["a"][0] != results["b"][0]
            assert "secret.txt" in results["a"] and "secret.txt" not in results["b"]
            missing = await b.call_tool("read_file", {"path": "secret.txt"})
            assert missing.is_error
            ca, cb = container_of(results["a"][0]), container_of(results["b"][0])
        # leaving the client context sends DELETE: each session's sandbox goes with it
        assert gone_within(ca["Id"], 20) and gone_within(cb["Id"], 20)


@pytest.mark.anyio
async def test_a_missing_or_wrong_token_is_refused_with_401():
    with http_server("--token", "t0ken-given-by-the-user") as srv:
        assert "bearer token:" not in "".join(srv.lines)  # a token the user gave is not echoed
        async with httpx2.AsyncClient(timeout=30) as raw:
            for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": "t0ken-given-by-the-user"}):
                r = await raw.post(srv.url, json=INIT, headers={**HEADERS, **headers})
                assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
            good = {**HEADERS, "Authorization": "Bearer t0ken-given-by-the-user"}
            ok = await raw.post(srv.url, json=INIT, headers=good)
            assert ok.status_code == 200
            # a web page reaching loopback through a name it controls (DNS rebinding) is refused too
            assert (await raw.post(srv.url, json=INIT, headers={**good, "Host": "evil.example:80"})).status_code == 421
            assert (await raw.post(srv.url, json=INIT, headers={**good, "Origin": "http://evil.example"})).status_code == 403
            huge = {**INIT, "params": {**INIT["params"], "padding": "x" * (5 << 20)}}
            assert (await raw.post(srv.url, json=huge, headers=good)).status_code == 413  # bounded before parsing
        with pytest.raises(Exception):
            async with http_session(srv.url, "wrong-token-wrong-token"):
                pass
        async with http_session(srv.url, srv.token) as s:
            assert (await s.call_tool("bash", {"cmd": "echo ok"})).structured_content["stdout"] == "ok\n"
            container_of((await s.call_tool("bash", {"cmd": "hostname"})).structured_content["stdout"])  # for the leak check


def test_a_generated_token_is_printed_and_non_loopback_needs_an_explicit_flag():
    import subprocess

    with http_server() as srv:
        assert len(srv.token) >= 32
    refused = subprocess.run([*SERVER, "--http", "0.0.0.0:0"], capture_output=True, text=True, env=server_env(), cwd=REPO, timeout=60)
    assert refused.returncode == 2
    assert "not a loopback address" in refused.stderr and "--allow-remote" in refused.stderr


@pytest.mark.anyio
async def test_the_sdk_client_gets_a_session_over_http_and_a_stateless_one_is_told():
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    from mcphelpers import STATELESS

    with http_server() as srv:
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {srv.token}"}, timeout=60) as hc:
            async with Client(streamable_http_client(srv.url, http_client=hc)) as client:  # mode "auto"
                assert client.protocol_version != "2026-07-28"  # discover refused: it fell back to a session
                host = (await client.call_tool("bash", {"cmd": "cd /tmp && hostname"})).structured_content["stdout"]
                again = await client.call_tool("bash", {"cmd": "pwd; hostname"})
                assert again.structured_content["stdout"].split() == ["/tmp", host.strip()]
                container_of(host)
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {srv.token}"}, timeout=60) as hc:
            async with Client(streamable_http_client(srv.url, http_client=hc), mode="2026-07-28") as client:
                r = await client.call_tool("bash", {"cmd": "hostname"})
                assert text_of(r).startswith(STATELESS) and not r.is_error
                container = container_of(r.structured_content["stdout"])
                assert container is None or gone_within(container["Id"], 20)  # that call's sandbox is already gone


@pytest.mark.anyio
async def test_a_client_that_disconnects_without_ending_its_session_loses_its_sandbox_after_the_idle_timeout():
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    with http_server("--idle-timeout", "2") as srv:
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {srv.token}"}, timeout=60) as hc:
            async with streamable_http_client(srv.url, http_client=hc, terminate_on_close=False) as (r, w, *_):
                async with ClientSession(r, w) as s:  # no DELETE when this closes: the client just goes
                    await s.initialize()
                    host = (await s.call_tool("bash", {"cmd": "hostname"})).structured_content["stdout"]
        container = container_of(host)
        assert container is not None
        assert gone_within(container["Id"], 30), "an abandoned session kept its sandbox"


@pytest.mark.anyio
async def test_sessions_beyond_max_sessions_are_refused_until_one_ends():
    with http_server("--max-sessions", "1") as srv:
        async with httpx2.AsyncClient(timeout=30) as raw:
            auth = {**HEADERS, "Authorization": f"Bearer {srv.token}"}
            first = await raw.post(srv.url, json=INIT, headers=auth)
            assert first.status_code == 200
            assert (await raw.post(srv.url, json=INIT, headers=auth)).status_code == 503
            sid = first.headers["mcp-session-id"]
            assert (await raw.delete(srv.url, headers={**auth, "mcp-session-id": sid})).status_code == 200
            assert (await raw.post(srv.url, json=INIT, headers=auth)).status_code == 200

