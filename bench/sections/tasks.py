"""Section 6: delegated tasks, driven the way a model drives them (delegate_task tool calls).

Each task's sub-agent is the stateless ScriptedModel: one `bash` `echo hi`,
then `stop`. For N tasks we time, from the parent's first delegate_task call:
the wall time until every task has ended (container removed, workspace
snapshotted), tasks/s, each task's delegate -> first command latency
(Task.first_command - Task.created, as the product stamps it, and, because
that stamp is taken before the task's sandbox is acquired, also the time until
the command actually reaches the sandbox), and each delegate_task call itself.

The naive way, in the same run and with the same concurrency (a thread pool of
PYGENT_MAX_TASKS workers): one `docker run --rm --network none pygent/python
bash -c 'echo hi'` per task, on the engine's default runtime (the target's
baseline), and for N=32 also with `--runtime crun`, the runtime our sandboxes
pick, so the table shows what the runtime gives and what the design gives.
"""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from ..context import PY_IMAGE, Ctx, run_cmd, wait_pool_full
from ..core import Observer, Row, Section, Target, percentile, timed
from ..raw_engine import raw_round
from ..scripted import ScriptedModel, tool_call

NAIVE = ["docker", "run", "--rm", "--network", "none", PY_IMAGE, "bash", "-c", "echo hi"]
#: The naive way on the runtime our sandboxes pick (crun, when registered): shows how much
#: of the gap is the runtime and how much is the design.
NAIVE_CRUN = NAIVE[:2] + ["--runtime", "crun"] + NAIVE[2:]


def run(ctx: Ctx, section: Section) -> None:
    from pygent import models
    from pygent.agent import Agent
    from pygent.agent import runtime as runtime_mod
    from pygent.sandbox import default_policy
    from pygent.sandbox.images import resolve_image
    from pygent.sandbox.pool import get_pool
    from pygent.agent.tasks import TaskManager
    from pygent.settings import get_settings

    sizes = (1, 4) if ctx.quick else (1, 8, 32)
    warmup = 1 if ctx.quick else 2
    workers = get_settings().pygent_max_tasks
    pool = get_pool(resolve_image("python"), default_policy())
    previous_model = models.get_custom_model()
    models.set_custom_model(ScriptedModel())
    # Observe (not change) where a task's time goes: the steps are timed in place, in every thread.
    with Observer() as obs, _first_exec_times() as first_exec:
        obs.wrap(runtime_mod, "open_sandbox", "acquire")  # the name runtime.py calls
        obs.wrap(TaskManager, "_snapshot", "snapshot")
        obs.wrap(Agent, "close", "close")
        obs.first_exec = first_exec  # type: ignore[attr-defined]
        try:
            _rounds(ctx, section, Agent, sizes, workers, pool, obs, warmup)
        finally:
            models.set_custom_model(previous_model)
    section.notes.append(
        f"Concurrency: PYGENT_MAX_TASKS={workers} for both ways; the warm pool (base "
        f"{pool.base if pool else 0}, following bursts up to {pool.most if pool else 0}) waited full before each round, "
        "so a round's first tasks start warm (a sustained stream pays every start). Samples: per task (pygent: created → "
        "ended; naive: one docker run). Breakdown columns (p50 ms): "
        "'queue' = created → started, 'acquire' = the task's open_sandbox, 'cmd→end' = command reaches the "
        "sandbox → task ended, of which 'snapshot' (workspace tar) and 'close' (container removal)."
    )


def _rounds(ctx: Ctx, section: Section, Agent, sizes, workers: int, pool, obs: Observer, warmup: int) -> None:
    run_cmd(NAIVE)  # warm caches for the naive way too
    _pygent_round(ctx, Agent, warmup, pool, obs)  # warm-up: executor, imports, jsonschema validators
    for n in sizes:
        r = _pygent_round(ctx, Agent, n, pool, obs)
        if pool is not None:
            wait_pool_full(pool)
        naive = _naive_round(n, workers)
        if pool is not None:
            wait_pool_full(pool)
        raw = raw_round(n, workers)
        speedup = naive["wall"] / r["wall"] if r["wall"] else None
        whole = section.add(Row(
            f"tasks_{n}", f"N={n}: pygent tasks, delegate_task → task ended", r["total"],
            vs={"÷ naive": f"naive_{n}"},
            extra={
                "wall s": r["wall"], "tasks/s": n / r["wall"], "× naive tasks/s": speedup,
                "× raw rate": raw["wall"] / r["wall"] if r["wall"] else None,
                "finished": f"{r['ok']}/{n}",
                "queue": _p50(r["queue"]),
                "acquire": _p50(r["acquire"]),
                "cmd→end": _p50(r["tail"]),
                "snapshot": _p50(r["snapshot"]),
                "close": _p50(r["close"]),
            },
            note=r["problem"],
        ))
        if n == 32:
            whole.targets = [
                Target("tasks/s", ">=", 15, unit="/s"), Target("× naive tasks/s", ">=", 2, unit="x"),
                Target("× raw rate", ">=", 0.9, unit="x"),
            ]
        section.add(Row(f"tasks_{n}_first", "  ↳ delegate_task → Task.first_command", r["first"]))
        section.add(Row(
            f"tasks_{n}_in_sandbox", "  ↳ delegate_task → command reaches its sandbox", r["in_sandbox"],
            note="" if len(r["in_sandbox"]) == n else f"{len(r['in_sandbox'])}/{n} matched",
        ))
        section.add(Row(
            f"delegate_call_{n}", f"  ↳ N={n}: the parent's delegate_task tool call", r["calls"],
            targets=[Target("p95", "<=", 10)],
        ))
        section.add(Row(
            f"naive_{n}", f"N={n}: naive docker run per task ({workers} workers)", naive["each"],
            extra={"wall s": naive["wall"], "tasks/s": n / naive["wall"], "finished": f"{naive['ok']}/{n}"},
        ))
        section.add(Row(
            f"raw_{n}", f"N={n}: the engine's raw rate: create → start → echo hi → remove, our hardening, the backend's client ({workers} workers)",
            raw["each"], extra={"wall s": raw["wall"], "tasks/s": n / raw["wall"], "finished": f"{raw['ok']}/{n}"},
        ))
        ctx.log(f"N={n}: {n / r['wall']:.1f} tasks/s vs naive {n / naive['wall']:.1f} tasks/s, raw engine {n / raw['wall']:.1f}/s")
        if n == 32 and pool is not None:
            _base_pool_row(ctx, section, Agent, pool, obs, raw)
        if n == 32 and _engine_has("crun"):
            naive_crun = _naive_round(n, workers, NAIVE_CRUN)
            section.add(Row(
                f"naive_crun_{n}", f"N={n}: naive docker run --runtime crun per task", naive_crun["each"],
                extra={"wall s": naive_crun["wall"], "tasks/s": n / naive_crun["wall"], "finished": f"{naive_crun['ok']}/{n}",
                       "× naive tasks/s": naive["wall"] / naive_crun["wall"]},
            ))
            ctx.log(f"N={n}: naive on crun {n / naive_crun['wall']:.1f} tasks/s")


def _base_pool_row(ctx: Ctx, section: Section, Agent, pool, obs: Observer, raw: dict) -> None:
    """N=32 again with the pool held at its base size: nearly every task starts its own
    sandbox, as in a sustained stream of tasks, where no burst was served ahead."""
    most = pool.most
    pool.most = pool.base
    try:
        deadline = time.monotonic() + 20
        while pool.ready > pool.base and time.monotonic() < deadline:
            time.sleep(0.05)  # the refill thread trims the members past the base
        time.sleep(0.5)  # and their removals end
        r = _pygent_round(ctx, Agent, 32, pool, obs)
    finally:
        pool.most = most
    section.add(Row(
        "tasks_32_base_pool", f"N=32: pygent tasks, the pool held at its base ({pool.base}): every start paid",
        r["total"],
        extra={"wall s": r["wall"], "tasks/s": 32 / r["wall"], "× raw rate": raw["wall"] / r["wall"] if r["wall"] else None,
               "finished": f"{r['ok']}/32", "queue": _p50(r["queue"]), "acquire": _p50(r["acquire"])},
        note=r["problem"],
    ))
    ctx.log(f"N=32, pool at base: {32 / r['wall']:.1f} tasks/s, {raw['wall'] / r['wall']:.2f}x raw")


@contextlib.contextmanager
def _first_exec_times():
    """time.time() of the first DockerSandbox.exec per sandbox id: when a command really starts.

    (Task.first_command is stamped by Runtime.exec before the task's sandbox is acquired.)
    """
    from pygent.sandbox.docker import DockerSandbox

    first: dict[str, float] = {}
    real = vars(DockerSandbox).get("exec")
    if real is None:
        yield first
        return

    def exec_(self, *a, **kw):
        first.setdefault(self.id, time.time())
        return real(self, *a, **kw)

    DockerSandbox.exec = exec_
    try:
        yield first
    finally:
        DockerSandbox.exec = real


def _p50(values: list[float]) -> float | None:
    return percentile(values, 50) if values else None


def _pygent_round(ctx: Ctx, Agent, n: int, pool, obs: Observer) -> dict:
    from pygent import tools
    from pygent.agent.tasks import TaskStatus

    from ..scripted import ScriptedModel

    if pool is not None:
        wait_pool_full(pool)
    parent = Agent(model=ScriptedModel(), image="python")
    obs.clear()
    try:
        calls, ids = [], []
        t0 = time.time()
        for i in range(n):
            ms, out = timed(lambda: tools.execute_tool(tool_call("delegate_task", {"prompt": f"task {i}: say hi"}), parent.runtime))
            calls.append(ms)
            if not out.startswith("started "):
                raise RuntimeError(f"delegate_task failed: {out[:300]}")
            ids.append(out.split()[1])
        parent.tasks.wait(ids, timeout=300)
        tasks = [parent.tasks.get(i) for i in ids]
        ended = [t.ended for t in tasks if t.ended]
        wall = (max(ended) if ended else time.time()) - t0
        ok = sum(1 for t in tasks if t.status == TaskStatus.FINISHED and t.reason == "stop" and t.first_command)
        problem = ""
        if ok != n:
            bad = next(t for t in tasks if not (t.status == TaskStatus.FINISHED and t.reason == "stop"))
            problem = f"[red]{n - ok} task(s) did not finish: {bad.status.value} {bad.reason[:120]}[/red]"
        return {
            "wall": wall, "calls": calls, "ok": ok, "problem": problem,
            "first": [(t.first_command - t.created) * 1e3 for t in tasks if t.first_command],
            "total": [(t.ended - t.created) * 1e3 for t in tasks if t.ended],
            "queue": [(t.started - t.created) * 1e3 for t in tasks if t.started],
            "tail": [(t.ended - obs.first_exec[t.container]) * 1e3 for t in tasks if t.ended and t.container in obs.first_exec],
            "in_sandbox": [(obs.first_exec[t.container] - t.created) * 1e3 for t in tasks if t.container in obs.first_exec],
            "acquire": obs.get("acquire"),
            "snapshot": obs.get("snapshot"),
            "close": obs.get("close"),
        }
    finally:
        parent.close()


def _engine_has(runtime: str) -> bool:
    from pygent.sandbox.engine import get_client

    return runtime in (get_client().info().get("Runtimes") or {})


def _naive_round(n: int, workers: int, argv: list[str] = NAIVE) -> dict:
    each: list[float] = []
    ok = 0
    lock = threading.Lock()

    def one(_: int) -> None:
        nonlocal ok
        ms, res = timed(lambda: run_cmd(argv))
        with lock:
            each.append(ms)
            ok += res.returncode == 0 and res.stdout.strip() == b"hi"

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as ex:
        list(ex.map(one, range(n)))
    return {"wall": time.perf_counter() - t0, "each": each, "ok": ok}
