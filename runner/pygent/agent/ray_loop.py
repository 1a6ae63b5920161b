"""With the Ray backend, a delegated task's loop runs on the node that holds its sandbox.

Why: the sub-agent's commands then go from its loop to its node agent on the same
machine, and its model calls leave from that node, so a parent fanning out many
tasks spends only the bookkeeping. The parent's side is unchanged: the task
manager places the task's sandbox (driver side, so `PYGENT_MAX_TASKS` bounds task
sandboxes over the whole cluster, and the driver stays their owner), copies the
task's files in, then hands the loop to its node's loop host. The workspace
snapshot is taken by the manager as always; its tar comes back through Ray's
object store.

The loop host is one threaded Ray actor per (driver, node), made for every node
with slots on the first delegated task. Why not a Ray task per loop: each task
that found no idle worker started one (a Python process importing Ray and pygent,
~1 s of CPU), and 64 tasks on three nodes started 11 of them, most of the round's
CPU. A host started once runs each loop on a thread of its own.

What crosses to the node: the agent factory (the parent's tools), the model the
sub-agent was built with (so `set_custom_model` applies there too), the policy, and
the node agent's handle. What comes back: steps, the stop reason, the history, and
whether the sandbox was lost. A node that dies under the loop ends the task `lost`,
naming the node. A cancelled or timed-out task's loop is told so (LoopHost.cancel):
it makes no further model call or command, as a local one whose runtime was closed.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from types import SimpleNamespace
from typing import Any


#: (Ray job, node id) -> this process's loop host there (LoopHost), and the lock that makes
#: them. The job is part of the key: after ray.shutdown and a new ray.init, old handles are void.
_hosts: dict[tuple[str, str], Any] = {}
_hosts_lock = threading.Lock()


def _host(node: str) -> Any:
    """This process's loop host on `node`; on first use one is made on every node with slots
    (they start side by side, before their first loop needs them)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from ..sandbox.ray.node import SLOT

    job = ray.get_runtime_context().get_job_id()
    with _hosts_lock:
        if (job, node) not in _hosts:
            wanted = {node} | {n["NodeID"] for n in ray.nodes() if n.get("Alive") and (n.get("Resources") or {}).get(SLOT)}
            actor = ray.remote(LoopHost)
            for nid in wanted - {n for j, n in _hosts if j == job}:
                _hosts[(job, nid)] = actor.options(
                    num_cpus=0, max_concurrency=HOST_THREADS, max_restarts=0,
                    scheduling_strategy=NodeAffinitySchedulingStrategy(nid, soft=False)).remote()
        return _hosts[(job, node)]


def _forget_host(node: str, host: Any) -> None:
    """The host died (its node or worker did): the next loop there gets a new one."""
    with _hosts_lock:
        for key in [k for k, h in _hosts.items() if k[1] == node and h is host]:
            del _hosts[key]


#: Loops one host runs at once: PYGENT_MAX_TASKS' own upper bound.
HOST_THREADS = 256


def run_on_node(agent: Any, task: Any, factory: Any, depth: int, max_steps: int) -> Any:
    """The task's loop on its sandbox's node; the result as run_until_stop's (steps, reason, error).

    Raises: what placing the sandbox raises; the loop's own failure (re-raised from the node).
    """
    import ray

    runtime = agent.runtime
    sandbox = runtime.sandbox  # placed now, by the driver
    node = sandbox.node_id
    info = {"id": sandbox.id, "memory_limit": sandbox.memory_limit, "hostname": sandbox.hostname}
    host = _host(node)
    key = uuid.uuid4().hex
    ref = host.run.remote(key, factory, agent.model, sandbox._agent, node, info, runtime.policy, runtime.image,
                          task.persona, depth, task.prompt,
                          dict(max_steps=max_steps, step_timeout=task.step_timeout, max_time=task.timeout))
    while True:
        if not ray.is_initialized():  # this process left the cluster: any Ray call would join it again
            return SimpleNamespace(steps=0, reason="error", error="this process left the Ray cluster (ray.shutdown())")
        if ray.wait([ref], timeout=0.2)[0]:
            break
        if task.status.ended:  # cancelled or timed out meanwhile: its loop stops calling the model
            host.cancel.remote(key)
            return SimpleNamespace(steps=0, reason="stopped", error=None)
    try:
        out = ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        raise cause if isinstance(cause, BaseException) else exc from None
    except ray.exceptions.RayError as exc:  # the node, its raylet or the host died
        _forget_host(node, host)
        runtime.lost = f"its Ray node {node[:12]} died under the task's loop ({type(exc).__name__})"
        return SimpleNamespace(steps=0, reason="error", error=runtime.lost)
    agent.history[:] = out["history"]
    if out["lost"]:
        runtime.lost = out["lost"]
    if out["first"]:
        task.first_command = task.first_command or out["first"]
    return SimpleNamespace(steps=out["steps"], reason=out["reason"], error=out["error"])


class LoopHost:
    """Made by _host (a Ray actor pinned to one node, owned by the driver, threaded): runs
    task loops, each on its own thread, and stops one when its driver says so."""

    def __init__(self) -> None:
        os.environ["PYGENT_BACKEND"] = "ray"  # its loops' own delegated tasks go to the cluster too
        # What every loop imports, imported while the host starts (side by side with the
        # driver placing the first sandboxes) rather than inside the first loops.
        from ..sandbox.ray import sandbox as _sandbox  # noqa: F401
        from . import runtime as _runtime  # noqa: F401
        self._runtimes: dict[str, Any] = {}  #: key -> the running loop's runtime, or None once cancelled
        self._lock = threading.Lock()

    def run(self, key: str, *args: Any) -> dict[str, Any]:
        """_loop_on_node(*args), cancellable by `key`."""
        try:
            return _loop_on_node(*args, on_runtime=lambda rt: self._started(key, rt))
        finally:
            with self._lock:
                self._runtimes.pop(key, None)

    def _started(self, key: str, runtime: Any) -> None:
        with self._lock:
            cancelled = key in self._runtimes and self._runtimes[key] is None
            self._runtimes[key] = runtime
        if cancelled:
            runtime.cleanup(keep_sandbox=True)

    def cancel(self, key: str) -> None:
        """The task ended on the driver (cancelled, timed out): the loop's runtime closes, so
        it makes no further command and the loop no further model call. Its sandbox is the
        driver's, which removes it. A cancel that comes before the loop started is kept."""
        with self._lock:
            runtime = self._runtimes.get(key)
            self._runtimes[key] = None if runtime is None else runtime
        if runtime is not None:
            runtime.cleanup(keep_sandbox=True)


def _loop_on_node(factory: Any, model: Any, handle: Any, node: str, info: dict, policy: Any, image: str,
                  persona: str | None, depth: int, prompt: str, limits: dict, *, on_runtime: Any) -> dict[str, Any]:
    """In the loop host on the sandbox's node: the sub-agent's loop on the driver's sandbox.
    on_runtime(runtime) is called once its runtime exists (LoopHost.cancel closes it)."""
    from ..sandbox import lifecycle
    from ..sandbox.ray.sandbox import RaySandbox
    from ..sandbox.registry import get_backend
    from .runtime import Runtime

    backend = get_backend("ray")
    backend.adopt(node, handle)  # the driver's agent, and its direct channel from this worker
    sandbox = RaySandbox(backend, node, info, None, policy)
    lifecycle.untrack(sandbox)  # the driver owns and removes it
    runtime = Runtime(image=image, policy=policy, task_depth=depth)
    runtime.recover = False
    first: list[float] = []
    runtime.on_first_command = lambda: first.append(time.time())
    runtime._sandbox = sandbox
    agent = None
    try:
        on_runtime(runtime)
        agent = factory(runtime=runtime, persona=persona, task_depth=depth)
        agent.model = model
        result = agent.run_until_stop(prompt, **limits)
        return {"steps": result.steps, "reason": result.reason, "error": result.error, "history": agent.history,
                "lost": runtime.lost, "first": first[0] if first else None}
    finally:
        runtime.cleanup(keep_sandbox=True)  # the sandbox is the driver's to close
        if agent is not None:
            agent.close()
