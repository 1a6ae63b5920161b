"""Crash-safe run logs (issue 26): what `run` records, a SIGKILLed run, secrets, retention.

Through the user's entry points: the `pygent-runner run` command (a subprocess, real
sandboxes) and Agent(log_dir=...).
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from support import cli
from support.fake_openai import FakeOpenAI

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
DEMO = f"{ROOT / 'examples' / 'demo_model.py'}:DemoModel"


def _env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PYGENT_"))}
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    env.update(extra)
    return env


def read_log(path):
    """Every complete line of a run log, parsed (a torn last line is what a crash may leave)."""
    data = Path(path).read_bytes()
    lines = data.split(b"\n")
    complete, last = lines[:-1], lines[-1]
    events = [json.loads(line) for line in complete]
    return events, last


def test_run_records_the_whole_transcript_tasks_sandboxes_and_costs(tmp_path):
    proc = cli.popen("run", "--custom-model", DEMO, "--json", "demo", env=_env(tmp_path))
    out, err = proc.communicate(timeout=100)
    assert proc.returncode == 0, err
    transcript = json.loads(out)
    log = Path(transcript["log"])
    assert log.parent == tmp_path / "state" / "pygent-runner" / "runs"  # the default place
    events, torn = read_log(log)
    assert torn == b""
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "log" and kinds[1] == "run_start" and kinds[-2:] == ["run_end", "log_end"]
    assert events[1]["task"] == "demo"
    assert events[-2]["reason"] == "stop" and events[-2]["steps"] == transcript["steps"]
    # Every tool result of the transcript's history is in the log, in order.
    tools = [e for e in events if e["kind"] == "tool"]
    assert [e["content"] for e in tools] == [m["content"] for m in transcript["history"] if m["role"] == "tool"]
    assert sum(1 for e in events if e["kind"] == "model") == len(transcript["model_calls"])
    assert sum(1 for e in events if e["kind"] == "step") == transcript["steps"]
    # What each command cost: in the log and the transcript alike.
    bash = [e for e in tools if e["tool"] == "bash"]
    assert bash and all(e["data"]["cost"]["cpu_user"] >= 0 and e["data"]["cost"]["max_rss"] > 0 for e in bash)
    assert [t["cost"] for t in transcript["tool_calls"]] == [e.get("data", {}).get("cost") for e in tools]
    assert any(e["kind"] == "sandbox" and e["content"] == "created" for e in events)
    # Each delegated task's own steps, linked by its task id.
    ids = {t["task_id"] for t in transcript["tasks"]}
    sub = [e for e in events if e["kind"] == "task_step"]
    assert {e["data"]["task_id"] for e in sub} == ids
    for task_id in ids:
        own = [e["data"]["event"] for e in sub if e["data"]["task_id"] == task_id]
        assert any(e["kind"] == "tool" and "primes below" in e["content"] for e in own)
        assert any(e["kind"] == "sandbox" and e["content"] == "created" for e in own)


KILLABLE = textwrap.dedent('''
    import json
    from pygent import openai_compat

    def call(name, i, **args):
        return openai_compat.ToolCall(id=f"c{i}", type="function",
                                      function=openai_compat.ToolCallFunction(name=name, arguments=json.dumps(args)))

    class Model:
        def chat(self, messages, model, tools):
            step = sum(1 for m in messages if m["role"] == "assistant")
            cmd = "echo first-step-done" if step == 0 else "echo waiting; sleep 60"
            return openai_compat.Message(role="assistant", content=f"step {step}", tool_calls=[call("bash", step, cmd=cmd)])
''')


def test_a_sigkilled_run_leaves_a_readable_log(tmp_path):
    model = tmp_path / "killable.py"
    model.write_text(KILLABLE)
    logs = tmp_path / "logs"
    proc = cli.popen("run", "--custom-model", f"{model}:Model", "--json", "wait", "--log-dir", str(logs), env=_env(tmp_path))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        files = list(logs.glob("*.jsonl"))
        if files and b'"step 1"' in files[0].read_bytes():
            break
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail(f"the run never reached its second step: {proc.communicate()}")
    time.sleep(0.3)  # into the command
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    events, torn = read_log(files[0])
    assert torn == b""  # every event was written whole
    kinds = [e["kind"] for e in events]
    assert "run_end" not in kinds and "log_end" not in kinds
    tools = [e for e in events if e["kind"] == "tool"]
    assert tools[0]["content"] == "exit code: 0\nstdout:\nfirst-step-done"
    assert [e["data"]["n"] for e in events if e["kind"] == "step"] == [1]
    steps = [e for e in events if e["kind"] != "output"]
    assert steps[-1]["kind"] == "assistant" and steps[-1]["content"] == "step 1"
    # What the killed command printed so far is there too (live output, as --json and the live view get it).
    assert "waiting" in "".join(e["content"] for e in events if e["kind"] == "output")
    # Its sandbox went with it: the engine sees the attach stream close, the server exits, auto-remove
    # follows. Seconds on a busy machine (CI once took over 10), so up to 30 s here.
    assert cli.wait_gone(proc.pid, timeout=30) == []


SECRET_KEY = "sk-test-0123456789abcdefSECRET"
MCP_TOKEN = "mcp-token-0123456789abcdef"
BEARER = "bearer-value-9876543210zyx"


def test_secrets_never_reach_the_log(tmp_path):
    leaky = (f"my key is {SECRET_KEY}; curl -H 'Authorization: Bearer {BEARER}' "
             f'{{"authorization": "Basic {BEARER}"}} token {MCP_TOKEN}')
    with FakeOpenAI() as server:
        server.queue(
            FakeOpenAI.reply(leaky, tool_calls=[FakeOpenAI.tool_call("bash", {"cmd": f"echo {leaky!r}"})]),
            FakeOpenAI.reply("done", tool_calls=[FakeOpenAI.tool_call("stop", {})]),
        )
        out = subprocess.run([*cli.CLI, "run", "--json", "say hi"], capture_output=True, text=True, timeout=100, cwd=ROOT,
                             env=_env(tmp_path, OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY=SECRET_KEY,
                                      PYGENT_MCP_TOKEN=MCP_TOKEN))
    assert out.returncode == 0, out.stderr
    text = Path(json.loads(out.stdout)["log"]).read_text()
    assert '"kind": "tool"' in text and "curl -H" in text  # the events are there...
    for secret in (SECRET_KEY, MCP_TOKEN, BEARER):
        assert secret not in text  # ...their secrets are not
    assert "[redacted]" in text


@pytest.mark.parametrize("runs", [2, 3, 4])
def test_retention_keeps_the_newest_pygent_log_keep(tmp_path, monkeypatch, runs):
    from pygent.agent.runlog import RunLog
    monkeypatch.setenv("PYGENT_LOG_KEEP", "3")
    made = []
    for _ in range(runs):
        log = RunLog(tmp_path)
        log.close()
        made.append(log.path.name)
        time.sleep(0.002)  # names sort by start time (to the microsecond)
    left = sorted(p.name for p in tmp_path.glob("*.jsonl"))
    assert len(left) == min(runs, 3)
    if runs == 4:
        assert left == sorted(made)[1:]  # the oldest went
