"""`pygent-runner run --json`: each model call's latency, token usage and retries are in the transcript."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.fake_openai import FakeOpenAI

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]


def test_transcript_lists_every_model_call_with_its_figures():
    with FakeOpenAI() as server:
        server.queue(
            FakeOpenAI.status(503, headers={"Retry-After": "0"}),
            FakeOpenAI.reply(tool_calls=[FakeOpenAI.tool_call("bash", {"cmd": "echo hi"})],
                             usage={"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}),
            FakeOpenAI.reply("done", tool_calls=[FakeOpenAI.tool_call("stop", {})],
                             usage={"prompt_tokens": 120, "completion_tokens": 5, "total_tokens": 125}),
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PYGENT_"))}
        env.update(OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="k")
        out = subprocess.run([sys.executable, "-m", "pygent.cli", "run", "--json", "say hi"], capture_output=True,
                             text=True, env=env, timeout=100, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    transcript = json.loads(out.stdout)
    calls = transcript["model_calls"]
    assert [c["step"] for c in calls] == [1, 2]
    assert [c["retries"] for c in calls] == [1, 0]
    assert [c["usage"]["total_tokens"] for c in calls] == [110, 125]
    assert all(c["latency_s"] > 0 and c["error"] is None for c in calls)
    assert calls[0]["requests"][0]["status"] == 200 and calls[0]["requests"][0]["attempts"] == 2
    assert transcript["usage"] == {"prompt_tokens": 220, "completion_tokens": 15, "total_tokens": 235}
