"""Section 11: run logs and the viewer (issue 26).

- An agent step with and without its run log, side by side (the same scripted model and a
  tool that runs no command, so the step is all agent path): the log's cost per step.
- The viewer's runs list over 1,000 logs, and opening a 10,000-step run (its first page):
  the reader and the page rendering the HTTP routes run, without the socket.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from ..context import Ctx
from ..core import Row, Section, Target


def _agent(log_dir: str | None):
    from pygent import openai_compat
    from pygent.agent import Agent
    from pygent.agent.registry import ToolRegistry

    registry = ToolRegistry()
    registry.register("note", "keep a note", {"type": "object", "properties": {"text": {"type": "string"}}},
                      lambda rt, text="": "noted")
    call = openai_compat.ToolCall(id="c1", type="function", function=openai_compat.ToolCallFunction(name="note", arguments='{"text": "hi"}'))
    reply = openai_compat.Message(role="assistant", content="a short thought", tool_calls=[call])

    class Model:
        def chat(self, messages, model, tools):
            return reply

    return Agent(model=Model(), tools=registry, log_dir=log_dir)


def _steps(agent, n: int) -> list[float]:
    out = []
    for _ in range(n):
        if len(agent.history) > 40:
            del agent.history[1:]  # keep the history short: the model call is not what is measured
        t0 = time.perf_counter()
        agent.step("go")
        out.append((time.perf_counter() - t0) * 1000)
    return out


def _fill(log_dir: Path, runs: int, steps: int) -> None:
    from pygent.agent.events import StepEvent
    from pygent.agent.runlog import RunLog

    for _ in range(runs):
        log = RunLog(log_dir, model="bench-model", image="python", keep=0)
        log.run_started("benchmark task")
        for n in range(1, steps + 1):
            log(StepEvent("model", duration=0.01, data={"usage": {"total_tokens": 10}}))
            log(StepEvent("assistant", content=f"step {n}"))
            log(StepEvent("tool", content="exit code: 0\nstdout:\nok", tool="bash", arguments='{"cmd": "true"}', duration=0.005,
                          data={"cost": {"commands": 1, "cpu_user": 0.001, "cpu_sys": 0.0, "max_rss": 4_000_000}}))
            log(StepEvent("step", data={"n": n}))
        log.run_ended("stop", steps)
        log.close()


def run(ctx: Ctx, section: Section) -> None:
    from pygent.view import pages, reader

    n = ctx.n(2000, 200)
    with tempfile.TemporaryDirectory() as tmp:
        off, on = _agent(None), _agent(tmp)
        _steps(off, 50), _steps(on, 50)  # warm up
        a, b = [], []
        for _ in range(5):  # interleaved: both see the same machine load
            a += _steps(off, n // 5)
            b += _steps(on, n // 5)
        off.close(), on.close()
    plain = section.add(Row("step_nolog", "Agent.step (scripted model, one tool), no run log", a))
    logged = section.add(Row("step_log", "Agent.step, the same, with its run log", b, vs={"÷ no log": "step_nolog"}))
    logged.extra["overhead p50 ms"] = logged.p50 - plain.p50
    logged.targets = [Target("overhead p50 ms", "<=", 0.2)]
    ctx.log("agent path done")

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        _fill(d, 1000, 3)
        times = []
        for _ in range(ctx.n(5, 2)):
            t0 = time.perf_counter()
            found = reader.list_runs(d)
            pages.runs_page(found[:200], "", "", 1, 200, len(found))
            times.append((time.perf_counter() - t0) * 1000)
        row = section.add(Row("list_1000", f"view: runs list of {len(found)} logs (read + render page 1)", times))
        row.targets = [Target("p50", "<=", 1000)]
    ctx.log("list done")

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        _fill(d, 1, 10_000)
        path = next(d.glob("*.jsonl"))
        times = []
        for _ in range(ctx.n(5, 2)):
            t0 = time.perf_counter()
            summary = reader.summary(path)
            events = reader.read_events(path)
            steps = reader.steps_of(events)
            pages.run_page(summary, steps, reader.tasks_of(events), [], 1, None)
            times.append((time.perf_counter() - t0) * 1000)
        row = section.add(Row("open_10k", f"view: open a {len(steps)}-step run ({path.stat().st_size // 1_000_000} MB log, page 1 of {len(steps) // pages.PAGE_STEPS})", times))
        row.targets = [Target("p50", "<=", 2000)]
