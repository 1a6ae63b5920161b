"""`pygent-runner run --expose PORT[:HOSTPORT]` (issue 25): the agent's server is reachable from the host while it runs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]

#: A scripted model: starts a server in the sandbox, then (on the host, as the user would)
#: fetches it through the exposed port, and stops with what it got.
MODEL = '''
import json, os, time, urllib.request
from pygent import openai_compat

def call(name, **args):
    return openai_compat.ToolCall(id="c" + name, type="function",
                                  function=openai_compat.ToolCallFunction(name=name, arguments=json.dumps(args)))

class Serve:
    def chat(self, messages, model, tools):
        step = sum(1 for m in messages if m["role"] == "assistant")
        if step == 0:
            return openai_compat.Message(role="assistant", content=None, tool_calls=[call("bash",
                cmd="echo built-by-agent > /tmp/index.html; python3 -m http.server 8000 --bind 127.0.0.1 -d /tmp",
                background=True)])
        got = "nothing"
        for _ in range(100):
            try:
                got = urllib.request.urlopen("http://127.0.0.1:%s/index.html" % os.environ["HOSTPORT"], timeout=5).read().decode()
                break
            except OSError:
                time.sleep(0.2)
        return openai_compat.Message(role="assistant", content="fetched: " + got.strip(), tool_calls=[call("stop")])
'''


def test_run_expose_prints_the_url_and_the_host_reaches_the_agents_server(tmp_path):
    (tmp_path / "serve_model.py").write_text(MODEL)
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PYGENT_"))}
    out = subprocess.run([sys.executable, "-m", "pygent.cli", "run", "--custom-model", f"{tmp_path / 'serve_model.py'}:Serve",
                          "--json", "--expose", f"8000:{port}", "serve it"],
                         capture_output=True, text=True, env={**env, "HOSTPORT": str(port)}, timeout=100, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert f"port 8000 is answering at http://127.0.0.1:{port}" in out.stderr
    transcript = json.loads(out.stdout)
    assert any("fetched: built-by-agent" in (m.get("content") or "") for m in transcript["history"])


def test_run_expose_with_a_bad_port_is_one_line():
    out = subprocess.run([sys.executable, "-m", "pygent.cli", "run", "--expose", "99999", "x"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 2
    assert "--expose: '99999' is not PORT[:HOSTPORT]" in out.stderr and "Traceback" not in out.stderr
