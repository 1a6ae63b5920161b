"""`pygent-runner run`: the agent from the terminal, live view and --json transcript."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from support.fake_openai import FakeOpenAI

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
DEMO = f"{ROOT / 'examples' / 'demo_model.py'}:DemoModel"
_STATE = tempfile.mkdtemp(prefix="pygent-test-state-")


def _cli(*args: str, env: dict | None = None, timeout: float = 100) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PYGENT_"))}
    base["XDG_STATE_HOME"] = _STATE  # `run` always writes a run log: never into the user's home
    return subprocess.run([sys.executable, "-m", "pygent.cli", *args], capture_output=True, text=True,
                          env={**base, **(env or {})}, timeout=timeout, cwd=ROOT)


def test_run_json_transcript_of_the_demo_includes_tasks_and_stops():
    out = _cli("run", "--custom-model", DEMO, "--json", "demo")
    assert out.returncode == 0, out.stderr
    transcript = json.loads(out.stdout)
    assert transcript["reason"] == "stop"
    assert [t["status"] for t in transcript["tasks"]] == ["finished", "finished"]
    tool_results = [m["content"] for m in transcript["history"] if m["role"] == "tool"]
    assert any("primes below 30" in r for r in tool_results)
    assert any("/workspace/notes" in r for r in tool_results)  # cd persisted between calls
    assert any("computed in container" in r for r in tool_results)  # collected from a task


def test_run_live_view_shows_steps_tools_and_tasks():
    out = _cli("run", "--custom-model", DEMO, "demo", env={"COLUMNS": "120"})
    assert out.returncode == 0, out.stderr
    for expected in ("write_file", "bash", "delegate_task", "wait_tasks", "collect_file", "finished", "done: stop"):
        assert expected in out.stdout, expected


def test_run_without_any_model_explains_how_to_configure_one():
    out = _cli("run", "hello")
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    lines = [l for l in out.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "OPENAI_API_KEY" in lines[0] and "--custom-model" in lines[0]


def test_run_against_an_openai_compatible_server():
    with FakeOpenAI() as server:
        server.queue(
            FakeOpenAI.reply(tool_calls=[FakeOpenAI.tool_call("bash", {"cmd": "echo from-the-sandbox; hostname"})]),
            FakeOpenAI.reply("all done", tool_calls=[FakeOpenAI.tool_call("stop", {})]),
        )
        out = _cli("run", "--json", "--model", "test-model", "say hi",
                   env={"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "k"})
        assert out.returncode == 0, out.stderr
        transcript = json.loads(out.stdout)
        assert transcript["reason"] == "stop"
        assert server.requests[0].body["model"] == "test-model"
        assert server.requests[0].headers.get("authorization") == "Bearer k"
        # the second request carries the tool result from the sandbox
        tool_msg = [m for m in server.requests[1].body["messages"] if m["role"] == "tool"][0]
        assert "from-the-sandbox" in tool_msg["content"]
        import socket

        assert socket.gethostname() not in tool_msg["content"]


def test_run_stops_at_max_steps_with_its_own_exit_code():
    with FakeOpenAI() as server:
        server.handler = lambda body: FakeOpenAI.reply("thinking, never stopping")
        out = _cli("run", "--json", "--max-steps", "2", "loop", env={"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "k"})
    assert out.returncode == 3, out.stderr
    assert json.loads(out.stdout)["reason"] == "max_steps"
