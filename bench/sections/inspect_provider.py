"""Section 8: an inspect_ai exec round trip through pygent's provider, next to the agent path.

What it shows: the adapter's cost (inspect's async API over pygent's sandbox:
a thread hop and the argv quoting) against pygent's own paths on the same
kind of sandbox, and against inspect's Docker provider when `docker compose`
is there (it starts a compose project per sample and runs `docker compose exec`).
All methods run round-robin, one call of each per round.
"""

from __future__ import annotations

import asyncio
import subprocess

from ..context import Ctx
from ..core import Row, Section, round_robin
from ..scripted import ScriptedModel, tool_call

VS = {"÷ agent path": "agent_tool"}


def _compose_available() -> str | None:
    """None when `docker compose` works, else why not."""
    try:
        r = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"docker compose did not answer ({exc})"
    if r.returncode != 0:
        return "docker compose is not installed on this machine (`docker compose version` fails)"
    return None


def run(ctx: Ctx, section: Section) -> None:
    try:
        from pygent.inspect_sandbox import PygentSandboxEnvironment
    except ImportError:
        section.notes.append("inspect_ai is not installed: pip install 'pygent-runner[inspect]'")
        return
    from pygent import tools
    from pygent.agent import Agent

    n = ctx.n(200, 20)
    warm = ctx.n(10, 2)
    loop = asyncio.new_event_loop()
    env = loop.run_until_complete(PygentSandboxEnvironment.open({"image": "python"}))
    agent = Agent(model=ScriptedModel(), image="python")
    docker_env = None
    why_no_compose = _compose_available()
    try:
        call = tool_call("bash", {"cmd": "echo hi"})
        methods = [
            ("agent_tool", "agent path: tools.execute_tool(bash call)", lambda: tools.execute_tool(call, agent.runtime)),
            ("sandbox_exec", "sb.exec('echo hi') (the provider's sandbox)", lambda: env.sandbox.exec("echo hi").stdout),
            ("inspect_pygent", "inspect: await env.exec(['echo','hi']) — sandbox='pygent'",
             lambda: loop.run_until_complete(env.exec(["echo", "hi"])).stdout),
            ("docker_exec_cli", "docker exec CONTAINER echo hi (CLI, same container)",
             lambda: subprocess.run(["docker", "exec", env.sandbox.id, "echo", "hi"], stdout=subprocess.PIPE).stdout),
        ]
        if why_no_compose is None:
            docker_env = loop.run_until_complete(_inspect_docker_env())
            methods.append(("inspect_docker", "inspect: await env.exec(['echo','hi']) — sandbox='docker'",
                            lambda: loop.run_until_complete(docker_env.exec(["echo", "hi"])).stdout))
        samples = round_robin(methods, n, warm)
        for key, name, _ in methods:
            section.add(Row(key, name, samples[key], vs={} if key == "agent_tool" else dict(VS)))
        if why_no_compose is not None:
            section.add(Row("inspect_docker", "inspect: await env.exec(['echo','hi']) — sandbox='docker'",
                            na=why_no_compose))
            section.notes.append(f"inspect's Docker provider not measured: {why_no_compose}.")
        section.notes.append("The provider runs exec in a worker thread (inspect's API is async; pygent's is sync).")
    finally:
        agent.close()
        loop.run_until_complete(env.close())
        if docker_env is not None:
            loop.run_until_complete(_close_inspect_docker(docker_env))
        loop.close()


async def _inspect_docker_env():  # pragma: no cover - only where docker compose exists
    from inspect_ai.util._sandbox.docker.docker import DockerSandboxEnvironment

    envs = await DockerSandboxEnvironment.sample_init("bench", None, {})
    return next(iter(envs.values()))


async def _close_inspect_docker(env) -> None:  # pragma: no cover
    from inspect_ai.util._sandbox.docker.docker import DockerSandboxEnvironment

    await DockerSandboxEnvironment.sample_cleanup("bench", None, {"default": env}, False)
