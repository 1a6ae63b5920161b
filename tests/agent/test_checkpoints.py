"""Agents branched and rewound: checkpoint, restore, fork; delegate_task from a copy; run --diff (issue 24)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pygent import Agent, openai_compat, set_custom_model

ROOT = Path(__file__).resolve().parents[2]


def _say_bash(cmd: str, id: str = "t") -> openai_compat.Message:  # noqa: A002
    fn = openai_compat.ToolCallFunction(name="bash", arguments=json.dumps({"cmd": cmd}))
    return openai_compat.Message(role="assistant", content=None, tool_calls=[openai_compat.ToolCall(id=id, type="function", function=fn)])


class BashOfPrompt:
    """Runs the last user message as a bash command (stateless: safe to share between agents)."""

    def chat(self, messages, model, tools):
        last = messages[-1]
        if last["role"] == "tool":
            stop = openai_compat.ToolCallFunction(name="stop", arguments="{}")
            return openai_compat.Message(role="assistant", content=last["content"],
                                         tool_calls=[openai_compat.ToolCall(id="s", type="function", function=stop)])
        return _say_bash(last["content"])


def _out(agent: Agent) -> str:
    return agent.history[-1]["content"]


def test_checkpoint_restore_and_fork_carry_conversation_files_and_shell_state():
    ag = Agent(model=BashOfPrompt())
    try:
        ag.step("echo one > /workspace/f; export V=1; mkdir -p d; cd d")
        cp = ag.checkpoint()
        assert cp.steps == 1 and cp.snapshot is not None and len(cp.history) == len(ag.history)
        ag.step("echo two > /workspace/f; export V=2; cd /")
        ag.restore(cp)
        assert ag.steps == 1 and len(ag.history) == len(cp.history)
        ag.step("cat /workspace/f; echo V=$V; pwd")
        assert "one\nV=1\n/workspace/d" in _out(ag)
        forks = ag.fork(cp, 2)
        try:
            forks[0].step("echo zero >> /workspace/f")
            forks[1].step("cat /workspace/f; echo V=$V")
            assert "one\nV=1" in _out(forks[1]) and "zero" not in _out(forks[1])
            assert forks[0].runtime.sandbox.id != forks[1].runtime.sandbox.id != ag.runtime.sandbox.id
            assert forks[0].steps == 2 and forks[0].model is ag.model
        finally:
            for f in forks:
                f.close()
    finally:
        ag.close()


def test_delegate_task_with_fork_starts_from_the_parents_workspace_and_shell():
    from pygent.agent.tools import DEFAULT_TOOLS

    schema = next(s for s in DEFAULT_TOOLS.schemas() if s["function"]["name"] == "delegate_task")["function"]
    assert schema["parameters"]["properties"]["fork"]["type"] == "boolean" and "fork: true" in schema["description"]
    parent = Agent(model=BashOfPrompt())
    try:
        parent.step("echo from-parent > /workspace/p; export PV=parent-var; cd /tmp")
        set_custom_model(BashOfPrompt())
        forked = parent.tasks.start("cat /workspace/p; echo $PV; pwd; echo mine > /workspace/p", fork=True)
        plain = parent.tasks.start("ls /workspace/p 2>&1; echo PV=$PV")
        parent.tasks.wait(timeout=90)
        assert "from-parent\nparent-var\n/tmp" in forked.answer, forked.answer
        assert "No such file" in plain.answer and plain.answer.rstrip().endswith("PV="), plain.answer
        parent.step("cat /workspace/p")
        assert "from-parent" in _out(parent) and "mine" not in _out(parent)
    finally:
        set_custom_model(None)
        parent.close()


MODEL = """
import json
from pygent import openai_compat

class RunPrompt:
    def chat(self, messages, model, tools):
        fn = openai_compat.ToolCallFunction(name="bash", arguments=json.dumps({"cmd": messages[-1]["content"]}))
        return openai_compat.Message(role="assistant", content=None,
                                     tool_calls=[openai_compat.ToolCall(id="1", type="function", function=fn)])
"""


def test_run_diff_prints_and_the_transcript_lists_what_changed(tmp_path):
    (tmp_path / "run_prompt.py").write_text(MODEL)
    model = f"{tmp_path / 'run_prompt.py'}:RunPrompt"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PYGENT_"))}
    argv = [sys.executable, "-m", "pygent.cli", "run", "--custom-model", model, "--max-steps", "1", "--diff"]
    task = "echo hello > /workspace/new.txt; mkdir -p /workspace/sub; echo x > /workspace/sub/y"
    out = subprocess.run([*argv, task], capture_output=True, text=True, env=env, timeout=100, cwd=ROOT)
    assert "A /workspace/new.txt" in out.stdout and "+hello" in out.stdout, out.stdout + out.stderr
    out = subprocess.run([*argv, "--json", task], capture_output=True, text=True, env=env, timeout=100, cwd=ROOT)
    record = json.loads(out.stdout)
    assert record["changes"] == {"added": ["/workspace/new.txt", "/workspace/sub/y"], "modified": [], "deleted": []}
