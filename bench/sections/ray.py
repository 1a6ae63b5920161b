"""Section 11: the Ray backend beside the local one, in the same run, on a real 3-node Ray cluster.

The cluster is the tests' (tests/ray/cluster.py: three nodes of this machine with
different slots, CPUs and memory, every node's agent on the one shared engine),
started here and stopped here. Rows, each local vs Ray:
- `echo hi` on an open sandbox (round-robin): Ray's cost is one actor call and the
  pickling of ExecResult;
- open → exec → close, one sandbox at a time;
- 64 delegated tasks (the tasks section's round, PYGENT_MAX_TASKS workers): on one
  2-core machine this shows the overhead, not the scaling. The Ray round is run twice:
  the first starts this driver's loop hosts (one Ray actor process per node, started at
  the first delegated task), the second finds them running, as every later round does.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from ..context import Ctx
from ..core import Observer, Row, Section, Target, percentile, round_robin, timed


def run(ctx: Ctx, section: Section) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "ray"))
    from cluster import TestCluster

    cluster = TestCluster()
    t0 = time.monotonic()
    address = cluster.start()
    saved = {k: os.environ.get(k) for k in ("RAY_ADDRESS", "PYGENT_BACKEND")}
    os.environ["RAY_ADDRESS"] = address
    ctx.log(f"3-node Ray cluster up in {time.monotonic() - t0:.1f}s at {address}")
    try:
        _rows(ctx, section)
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        from pygent.sandbox import pool

        pool.drain_all()
        cluster.stop()


def _rows(ctx: Ctx, section: Section) -> None:
    from pygent.sandbox import default_policy
    from pygent.sandbox.registry import get_backend

    local, ray_backend = get_backend("docker"), get_backend("ray")
    policy = default_policy()
    tag = local.resolve_image("python")
    sb_local, sb_ray = local.create(tag, policy), ray_backend.create("python", policy)
    try:
        n = ctx.n(300, 30)
        samples = round_robin([
            ("local_echo", "local: sb.exec('echo hi')", lambda: sb_local.exec("echo hi").stdout),
            ("ray_echo", "ray: sb.exec('echo hi') through the node agent", lambda: sb_ray.exec("echo hi").stdout),
        ], n, ctx.n(20, 3))
    finally:
        sb_local.close()
        sb_ray.close()
    section.add(Row("local_echo", "local: sb.exec('echo hi')", samples["local_echo"]))
    overhead = percentile(samples["ray_echo"], 50) - percentile(samples["local_echo"], 50)
    section.add(Row("ray_echo", "ray: sb.exec('echo hi') through the node agent", samples["ray_echo"],
                    vs={"÷ local": "local_echo"}, extra={"overhead p50 ms": overhead},
                    targets=[Target("overhead p50 ms", "<=", 1.5)]))
    ctx.log(f"echo hi: ray overhead p50 {overhead:.2f} ms")

    rounds = ctx.n(20, 4)
    cycle = {"local_cycle": [], "ray_cycle": []}
    for _ in range(rounds):
        for key, make in (("local_cycle", lambda: local.create(tag, policy)), ("ray_cycle", lambda: ray_backend.create("python", policy))):
            def one(make=make):
                with make() as sb:
                    return sb.exec("echo hi").stdout
            ms, out = timed(one)
            assert out == b"hi\n", out
            cycle[key].append(ms)
    section.add(Row("local_cycle", "local: open → exec → close", cycle["local_cycle"]))
    section.add(Row("ray_cycle", "ray: open → exec → close (placement group, node agent)", cycle["ray_cycle"],
                    vs={"÷ local": "local_cycle"}))

    from pygent import models
    from pygent.agent import Agent

    from ..scripted import ScriptedModel
    from .tasks import _pygent_round

    n = ctx.n(64, 8)
    walls = {}
    previous = models.get_custom_model()
    models.set_custom_model(ScriptedModel())
    try:
        _task_rows(ctx, section, Agent, _pygent_round, n, walls)
    finally:
        models.set_custom_model(previous)
        os.environ.pop("PYGENT_BACKEND", None)
    section.notes.append("Nodes: 8/4/2 slots, 8/4/2 logical CPUs, 6/3/1 GiB (tests/ray/cluster.py), all on this machine "
                         "and its one engine; Ray's dashboard, usage stats and metrics are off.")


def _task_rows(ctx: Ctx, section: Section, Agent, _pygent_round, n: int, walls: dict) -> None:
    for key, backend in (("local_tasks", None), ("ray_tasks", "ray"), ("ray_tasks_again", "ray")):
        if backend:
            os.environ["PYGENT_BACKEND"] = backend
        else:
            os.environ.pop("PYGENT_BACKEND", None)
        obs = Observer()
        obs.first_exec = {}  # type: ignore[attr-defined]
        r = _pygent_round(ctx, Agent, n, None, obs)
        walls[key] = r["wall"]
        label = f"{'ray' if backend else 'local'}: {n} delegated tasks, delegate_task → task ended"
        if key == "ray_tasks":
            label += " (starts the loop hosts)"
        elif key == "ray_tasks_again":
            label = f"ray: {n} more delegated tasks, loop hosts running"
        row = section.add(Row(key, label, r["total"], note=r["problem"],
                              extra={"wall s": r["wall"], "tasks/s": n / r["wall"], "finished": f"{r['ok']}/{n}"}))
        if backend:
            row.extra["wall ÷ local"] = r["wall"] / walls["local_tasks"]
            if key == "ray_tasks":  # the target is judged on the first round, loop host start included
                row.targets = [Target("wall ÷ local", "<=", 1.25, unit="x")]
        ctx.log(f"{key}: {n / r['wall']:.1f} tasks/s")
