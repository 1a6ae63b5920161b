"""Section 8: one `bash` round trip over MCP (stdio, the SDK's own client) vs exec_run and the agent path.

Why these baselines: docker-py `exec_run` on the MCP session's own container is
what a hand-rolled MCP server would do per call; `tools.execute_tool` is our
agent calling the same tool in-process. The difference between the MCP row and
the agent row is what JSON-RPC framing over a pipe, the SDK's dispatch and the
worker-thread hop add. Round-robin, one call of each per round.
"""

from __future__ import annotations

import os
import sys
import time

from ..context import Ctx
from ..core import Row, Section, Target, round_robin
from ..scripted import ScriptedModel, tool_call

VS = {"÷ exec_run": "exec_run", "÷ agent path": "agent_tool"}


def run(ctx: Ctx, section: Section) -> None:
    from anyio.from_thread import start_blocking_portal
    from mcp import ClientSession, StdioServerParameters, stdio_client

    from pygent import tools
    from pygent.agent import Agent
    from pygent.sandbox import lifecycle
    from pygent.sandbox.engine import get_client

    n = ctx.n(200, 20)
    warm = ctx.n(10, 2)
    agent = Agent(model=ScriptedModel(), image="python")
    params = StdioServerParameters(command=sys.executable, args=["-m", "pygent.cli", "mcp"])
    # The SDK client is async: an event loop in a thread (anyio's portal) runs it; the
    # hop to that thread and back is part of the MCP row (~0.1 ms).
    with start_blocking_portal() as portal:
        streams = portal.wrap_async_context_manager(stdio_client(params))
        read, write = streams.__enter__()
        try:
            session_cm = portal.wrap_async_context_manager(ClientSession(read, write))
            session = session_cm.__enter__()
            try:
                portal.call(session.initialize)

                def mcp_bash() -> str:
                    result = portal.call(session.call_tool, "bash", {"cmd": "echo hi"})
                    return result.structured_content["stdout"]

                host = portal.call(session.call_tool, "bash", {"cmd": "hostname"}).structured_content["stdout"].strip()
                api = get_client().api
                found = api.containers(filters={"name": f"pygent-{host.removeprefix('sandbox-')}-"})
                if not found:
                    raise RuntimeError(f"the MCP session's sandbox {host} is not on the engine")
                ctx.popen_pid(int(found[0]["Labels"][lifecycle.LABEL_OWNER_PID]))
                container = get_client().containers.get(found[0]["Id"])
                server_pid = int(found[0]["Labels"][lifecycle.LABEL_OWNER_PID])
                call = tool_call("bash", {"cmd": "echo hi"})
                agent_cpu: list[float] = []

                def agent_bash() -> str:
                    t = time.thread_time()  # this thread only: the agent path runs here, whole
                    out = tools.execute_tool(call, agent.runtime)
                    agent_cpu.append((time.thread_time() - t) * 1000)
                    return out

                methods = [
                    ("exec_run", "docker-py exec_run(['bash','-c','echo hi']) on the MCP session's container",
                     lambda: container.exec_run(["bash", "-c", "echo hi"], user="1000").output),
                    ("agent_tool", "agent path: tools.execute_tool(bash call), in-process", agent_bash),
                    ("mcp_stdio", "MCP: ClientSession.call_tool('bash') over stdio (SDK client)", mcp_bash),
                ]
                server_cpu = _cpu_ms(server_pid)
                samples = round_robin(methods, n, warm)
                server_cpu = (_cpu_ms(server_pid) - server_cpu) / (n + warm)
                framing = [m - a for m, a in zip(samples["mcp_stdio"], samples["agent_tool"])]  # same round
                for key, name, _ in methods:
                    section.add(Row(key, name, samples[key], vs={k: v for k, v in VS.items() if v != key}))
                row = section.add(Row("mcp_framing", "MCP cost over the agent path (same round, mcp − agent)", framing))
                row.targets = [Target("p50", "<=", 3)]
                # CPU, unlike wall time, hardly depends on what else the machine runs.
                section.add(Row("agent_cpu", "  ↳ CPU of the agent path per call (its thread)", agent_cpu[-n:]))
                section.add(Row("mcp_server_cpu", "  ↳ CPU of the MCP server process per call (mean)", [server_cpu]))
                section.notes.append(
                    "exec_run and MCP use the same container (the MCP session's sandbox); the agent path uses its "
                    "own sandbox with the same image and policy."
                )
            finally:
                session_cm.__exit__(None, None, None)
        finally:
            streams.__exit__(None, None, None)
    agent.close()


def _cpu_ms(pid: int) -> float:
    """User+system CPU a process has used so far, in ms (Linux /proc)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")
