"""The MCP tool `expose_port` (issue 25): a server started with `bash` is reachable from the host at the URL it returns."""

from __future__ import annotations

import urllib.request

import anyio
import pytest

from mcphelpers import stdio_session, text_of

pytestmark = [pytest.mark.anyio, pytest.mark.docker]


async def test_expose_port_returns_a_loopback_url_that_reaches_the_sandbox_server():
    async with stdio_session() as s:
        tools = {t.name for t in (await s.list_tools()).tools}
        assert "expose_port" in tools
        r = await s.call_tool("bash", {"cmd": "echo from-mcp > /tmp/i.html; "
                                              "nohup python3 -m http.server 8000 --bind 127.0.0.1 -d /tmp >/dev/null 2>&1 &"})
        assert not r.is_error, text_of(r)
        r = await s.call_tool("expose_port", {"port": 8000})
        assert not r.is_error, text_of(r)
        url = r.structured_content["url"]
        assert url.startswith("http://127.0.0.1:") and r.structured_content["answering"] is True
        assert text_of(r) == f"{url} (answering)"
        body = await anyio.to_thread.run_sync(lambda: urllib.request.urlopen(f"{url}/i.html", timeout=10).read())
        assert body == b"from-mcp\n"
        bad = await s.call_tool("expose_port", {"port": 0})
        assert bad.is_error and "port" in text_of(bad)
