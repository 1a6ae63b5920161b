"""Section 1: latency of one trivial command, from the host floor to the agent's bash tool.

All methods run round-robin (one call of each per round) so background noise
hits them alike; a few warm-up rounds are not counted.
"""

from __future__ import annotations

import subprocess

from ..context import Ctx
from ..core import Row, Section, Target, percentile, round_robin
from ..scripted import ScriptedModel, tool_call

VS = {"÷ docker exec CLI": "docker_exec_cli", "÷ exec_run": "exec_run"}


def run(ctx: Ctx, section: Section) -> None:
    from pygent import tools
    from pygent.agent import Agent
    from pygent.sandbox import open_sandbox
    from pygent.sandbox.engine import get_client

    n = ctx.n(200, 20)
    warm = ctx.n(10, 2)
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
    from support.images import sh_only_image

    sh_only = sh_only_image()
    sb_py = open_sandbox("python", pool=False)
    sb_min = open_sandbox("minimal", pool=False)
    agent = Agent(model=ScriptedModel(), image="python")
    # An agent whose shell carries a realistic state (issue 14): every call loads and saves it.
    stateful = Agent(model=ScriptedModel(), image="python")
    stateful.runtime.bash(
        "export PATH=$HOME/.local/bin:$PATH VIRTUAL_ENV=/workspace/.venv; set -o pipefail; shopt -s globstar; "
        "for i in $(seq 20); do declare -x V$i=value$i; done; "
        "for f in build test lint fmt run; do eval \"$f() { echo $f \\\"\\$@\\\"; }\"; done; "
        "alias ll='ls -l' la='ls -A' gs='git status'"
    )
    agent_min = Agent(model=ScriptedModel(), image="minimal")
    agent_sh = Agent(model=ScriptedModel(), image=sh_only)
    try:
        container = get_client().containers.get(sb_py.id)
        call = tool_call("bash", {"cmd": "echo hi"})
        methods = [
            ("host", "host: bash -c 'echo hi' (subprocess)",
             lambda: subprocess.run(["bash", "-c", "echo hi"], stdout=subprocess.PIPE).stdout),
            ("docker_exec_cli", "docker exec CONTAINER echo hi (CLI)",
             lambda: subprocess.run(["docker", "exec", sb_py.id, "echo", "hi"], stdout=subprocess.PIPE).stdout),
            ("exec_run", "docker-py container.exec_run(['echo','hi'])",
             lambda: container.exec_run(["echo", "hi"]).output),
            ("sandbox_server", "sb.exec('echo hi') — python image, server",
             lambda: sb_py.exec("echo hi").stdout),
            ("sandbox_minimal", "sb.exec('echo hi') — minimal image (server from the tooling volume)",
             lambda: sb_min.exec("echo hi").stdout),
            ("runtime_bash", "agent.runtime.bash('echo hi')",
             lambda: agent.runtime.bash("echo hi")),
            ("agent_tool", "agent path: tools.execute_tool(bash call)",
             lambda: tools.execute_tool(call, agent.runtime)),
            ("agent_tool_state", "agent path, shell state of 20 exports, 5 functions, 3 aliases, options",
             lambda: tools.execute_tool(call, stateful.runtime)),
            ("agent_tool_minimal", "agent path, minimal image (static busybox + bash, no python)",
             lambda: tools.execute_tool(call, agent_min.runtime)),
            ("agent_tool_sh", "agent path, sh-only image (busybox sh: no bash, no python, no libc)",
             lambda: tools.execute_tool(call, agent_sh.runtime)),
        ]
        # Warm-up (also starts the agent's sandbox) and a correctness check of every path.
        samples = round_robin(methods, n, warm, after_warm=lambda: _settle_pool(ctx))
        for key, name, _ in methods:
            row = section.add(Row(key, name, samples[key], vs=dict(VS)))
            if key in ("agent_tool", "agent_tool_state"):
                row.targets = [Target("p50", "<=", 5), Target("p95", "<=", 15)]
                row.vs["÷ host bash -c"] = "host"
            if key in ("agent_tool_minimal", "agent_tool_sh"):
                row.extra["p50 ÷ python image"] = percentile(samples[key], 50) / percentile(samples["agent_tool"], 50)
                row.targets = [Target("p50 ÷ python image", "<=", 1.2, unit="x")]
        section.row("host").vs = {}
        section.notes.append(
            "Baselines run `echo` directly in the container; pygent runs every command through bash "
            "(as the agent's tool does), which adds bash start-up (~1 ms) inside the container."
        )
        section.notes.append("CLI/exec_run baselines use the same (python-image, hardened) container as sb.exec.")
        section.notes.append(
            "Both agent rows keep shell state (variables, functions, aliases, options) across calls: each "
            "command's bash loads the saved state (BASH_ENV) and dumps its own at exit, read by the server."
        )
    finally:
        stateful.close()
        agent.close()
        agent_min.close()
        agent_sh.close()
        sb_py.close()
        sb_min.close()


def _settle_pool(ctx: Ctx) -> None:
    """The agent's first command filled the warm pool in the background: let that finish first."""
    from pygent.sandbox import default_policy
    from pygent.sandbox.images import resolve_image
    from pygent.sandbox.pool import get_pool

    from ..context import wait_pool_full

    pool = get_pool(resolve_image("python"), default_policy())
    if pool is not None:
        wait_pool_full(pool)
