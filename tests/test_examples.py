"""examples/: each seed snippet as a script, run as a user would (a separate process).

Each must print its result, exit 0, and leave no container behind once it exits
(containers carry the owner's pid as a label).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.fake_openai import FakeOpenAI
from support.seed import SEED

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SEED_EXAMPLES = ["echo_model.py", "http_model.py", "bash_model.py", "global_custom_model.py", "delegate_model.py"]

EXPECTED = {
    "echo_model.py": ["{'role': 'assistant', 'content': 'Echo: test'}"],
    "http_model.py": ["{'role': 'assistant', 'content': 'You are the example user.'}"],
    "bash_model.py": ["{'role': 'tool', 'tool_call_id': '1', 'content': 'exit code: 0\\nstdout:\\nhi from tool'}"],
    "global_custom_model.py": ["{'role': 'assistant', 'content': 'Echo: hello'}"],
    # No API key: the parent runs and stops; the sub-task fails gracefully.
    "delegate_model.py": ["stop after 2 step(s)", "'status': 'failed'", "no model configured"],
}


def seed_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", SEED.read_text(), re.S | re.M)


def test_every_seed_snippet_has_its_example_verbatim():
    blocks = seed_blocks()
    assert len(blocks) == len(SEED_EXAMPLES)
    for name, block in zip(SEED_EXAMPLES, blocks):
        text = (EXAMPLES / name).read_text()
        assert block in text, name
        assert text.index(block) == 0 or name == "global_custom_model.py", f"{name}: additions must come after the snippet"
    echo_class = blocks[0][: blocks[0].index("ag = Agent")]
    assert (EXAMPLES / "global_custom_model.py").read_text().startswith(echo_class + blocks[3])


def owned_containers(api, pid: int) -> list[dict]:
    return api.containers(all=True, filters={"label": f"io.pygent.owner-pid={pid}"})


@pytest.mark.parametrize("name", SEED_EXAMPLES)
def test_example_runs_and_leaves_no_container(name, docker_client, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PYGENT_"))}
    server = None
    if name == "http_model.py":
        server = FakeOpenAI()
        server.queue(FakeOpenAI.reply("You are the example user."))
        env.update(OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="example-key")
    try:
        proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / name)], cwd=tmp_path, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            out, err = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"{name} hung:\n{out}\n{err}")
    finally:
        if server is not None:
            server.close()
    assert proc.returncode == 0, f"{name} failed:\n{out}\n{err}"
    for expected in EXPECTED[name]:
        assert expected in out, f"{name} printed:\n{out}\n{err}"
    assert "Traceback" not in err, err
    if server is not None:
        [request] = server.requests
        assert request.headers["authorization"] == "Bearer example-key"
        assert request.body["messages"][-1] == {"role": "user", "content": "who am I?"}

    api = docker_client.api
    deadline = time.monotonic() + 5
    while (left := owned_containers(api, proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"{name} left containers: {[c['Id'][:12] for c in left]}"
