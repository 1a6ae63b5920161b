"""`pygent-runner mcp` over stdio, through the SDK's own stdio_client and ClientSession."""

from __future__ import annotations

import anyio
import pytest

from mcphelpers import container_of, gone_within, stdio_session, text_of

pytestmark = [pytest.mark.anyio, pytest.mark.docker]


async def test_initialize_lists_the_tools_with_schemas_and_descriptions():
    async with stdio_session() as s:
        tools = {t.name: t for t in (await s.list_tools()).tools}
        assert set(tools) == {"bash", "write_file", "read_file", "list_files", "expose_port"}
        for tool in tools.values():
            assert tool.input_schema["type"] == "object" and tool.input_schema.get("additionalProperties") is False
            assert "container" in tool.description and len(tool.description) > 80
        assert tools["bash"].input_schema["required"] == ["cmd"]
        assert {"exit_code", "stdout", "stderr", "truncated", "timed_out"} <= set(tools["bash"].output_schema["properties"])
        assert tools["read_file"].annotations.read_only_hint is True


async def test_bash_returns_text_and_structured_content_and_cwd_persists():
    async with stdio_session() as s:
        r = await s.call_tool("bash", {"cmd": "mkdir -p d && cd d && echo out; echo err >&2; exit 3"})
        assert not r.is_error
        assert text_of(r) == "exit code: 3\nstdout:\nout\nstderr:\nerr"
        sc = r.structured_content
        assert (sc["exit_code"], sc["stdout"], sc["stderr"], sc["cwd"]) == (3, "out\n", "err\n", "/workspace/d")
        assert sc["timed_out"] is False and sc["truncated"] is False
        r = await s.call_tool("bash", {"cmd": "pwd; id -u; cat /proc/net/dev | grep -c eth0 || true"})
        assert r.structured_content["stdout"].split() == ["/workspace/d", "1000", "0"]  # cwd kept, non-root, no network


async def test_file_round_trip_between_the_file_tools_and_bash():
    async with stdio_session() as s:
        w = await s.call_tool("write_file", {"path": "src/app.py", "content": "print('héllo')\n"})
        assert not w.is_error and "/workspace/src/app.py" in text_of(w)
        r = await s.call_tool("bash", {"cmd": "python3 src/app.py && echo more >> src/app.py"})
        assert r.structured_content["stdout"] == "héllo\n"
        r = await s.call_tool("read_file", {"path": "/workspace/src/app.py"})
        assert text_of(r) == "print('héllo')\nmore\n"
        ls = await s.call_tool("list_files", {"path": "src"})
        assert ls.structured_content["entries"] == [{"name": "app.py", "type": "file", "size": len("print('héllo')\nmore\n".encode())}]
        missing = await s.call_tool("read_file", {"path": "nope.txt"})
        assert missing.is_error and "no such file" in text_of(missing)


async def test_a_timeout_kills_the_command_and_the_session_goes_on():
    async with stdio_session("--timeout", "20") as s:
        r = await s.call_tool("bash", {"cmd": "sleep 60 & sleep 60; echo never", "timeout": 1})
        assert not r.is_error
        assert r.structured_content["timed_out"] is True and r.structured_content["exit_code"] == 124
        assert "timed out after 1s" in text_of(r)
        # a client cannot ask for more than the server's --timeout
        r = await s.call_tool("bash", {"cmd": "ps -e -o comm= | grep -c sleep || true", "timeout": 10_000})
        assert r.structured_content["stdout"].strip() == "0"  # the background child was killed too


async def test_ten_concurrent_calls_all_get_their_own_answer():
    async with stdio_session() as s:
        results: dict[int, str] = {}

        async def call(i: int) -> None:
            r = await s.call_tool("bash", {"cmd": f"echo {i}; echo {i} >> calls.log"})
            results[i] = r.structured_content["stdout"]

        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(call, i)
        assert results == {i: f"{i}\n" for i in range(10)}
        log = await s.call_tool("read_file", {"path": "calls.log"})
        assert sorted(text_of(log).split()) == sorted(str(i) for i in range(10))


async def test_hostile_arguments_are_tool_errors_and_the_server_keeps_serving():
    async with stdio_session() as s:
        cases = [
            ("bash", {"cmd": 5}, "is not of type 'string'"),
            ("bash", {}, "'cmd' is a required property"),
            ("bash", {"cmd": "true", "timeout": -1}, "timeout"),
            ("bash", {"cmd": "true", "extra": 1}, "Additional properties"),
            ("write_file", {"path": "a\x00b", "content": "x"}, "invalid sandbox path"),
            ("write_file", {"path": "big", "content": "x" * (2 << 20)}, "larger than"),
            ("read_file", {"path": ["list"]}, "is not of type 'string'"),
            ("no_such_tool", {}, "unknown tool"),
        ]
        for name, args, expected in cases:
            r = await s.call_tool(name, args)
            assert r.is_error, (name, args)
            assert text_of(r).startswith("error: ") and expected in text_of(r), text_of(r)
        # binary output and terminal control sequences come back cleaned, as the agent sees them
        r = await s.call_tool("bash", {"cmd": r"printf 'a\000b\033[31mred\033[0m\377\n'; head -c 300000 /dev/urandom"})
        out = r.structured_content["stdout"]
        assert out.startswith("abred\ufffd\n") and "\x00" not in out and "\x1b[31m" not in out
        assert r.structured_content["truncated"] is True and "bytes truncated" in out
        assert (await s.call_tool("bash", {"cmd": "echo alive"})).structured_content["stdout"] == "alive\n"


async def test_the_sandbox_starts_on_the_first_call_and_goes_when_the_client_disconnects():
    async with stdio_session() as s:
        await s.list_tools()
        host = (await s.call_tool("bash", {"cmd": "hostname"})).structured_content["stdout"]
        container = container_of(host)
        assert container is not None and container["State"] == "running"
    assert gone_within(container["Id"], 20), "the session's sandbox outlived the session"


async def test_idle_timeout_removes_the_sandbox_and_the_next_call_gets_a_fresh_one():
    async with stdio_session("--idle-timeout", "1") as s:
        await s.call_tool("write_file", {"path": "keep.txt", "content": "x"})
        first = container_of((await s.call_tool("bash", {"cmd": "hostname"})).structured_content["stdout"])
        assert gone_within(first["Id"], 20), "the idle sandbox was not removed"
        r = await s.call_tool("bash", {"cmd": "hostname; ls"})
        assert text_of(r).startswith("note: the previous sandbox was removed after 1s")
        second = container_of(r.structured_content["stdout"].split()[0])
        assert second is not None and second["Id"] != first["Id"]
        assert "keep.txt" not in r.structured_content["stdout"]


async def test_a_client_of_the_stateless_2026_revision_keeps_its_sandbox_over_stdio():
    from mcp import Client, StdioServerParameters

    from mcphelpers import REPO, SERVER, server_env

    params = StdioServerParameters(command=SERVER[0], args=SERVER[1:], env=server_env(), cwd=str(REPO))
    async with Client(params) as client:  # mode "auto": discovers and speaks 2026-07-28 here
        assert client.protocol_version == "2026-07-28"
        first = await client.call_tool("bash", {"cmd": "cd /tmp && echo x > f && hostname"})
        again = await client.call_tool("bash", {"cmd": "pwd; ls; hostname"})
        assert again.structured_content["stdout"].split() == ["/tmp", "f", first.structured_content["stdout"].strip()]
        container = container_of(first.structured_content["stdout"])
    assert gone_within(container["Id"], 20)


async def test_a_sandbox_that_cannot_start_is_a_tool_error_and_the_server_stays_up():
    async with stdio_session("--image", "pygent-no-such-image:never") as s:
        for _ in range(2):  # the failure is not cached into a crash: each call says what is wrong
            r = await s.call_tool("bash", {"cmd": "true"})
            assert r.is_error and text_of(r).startswith("error: bash failed: ") and "pygent-no-such-image" in text_of(r)
        assert {t.name for t in (await s.list_tools()).tools} >= {"bash"}
