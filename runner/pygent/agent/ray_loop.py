"""With the Ray backend, a delegated task's loop runs on the node that holds its sandbox.

Why: the sub-agent's commands then go from its loop to its node agent on the same
machine, and its model calls leave from that node, so a parent fanning out many
tasks spends only the bookkeeping. The parent's side is unchanged: the task
manager places the task's sandbox (driver side, so `PYGENT_MAX_TASKS` bounds task
sandboxes over the whole cluster, and the driver stays their owner), copies the
task's files in, then hands the loop to a Ray task pinned to that node. The
workspace snapshot is taken by the manager as always; its tar comes back through
Ray's object store.

What crosses to the node: the agent factory (the parent's tools), the model the
sub-agent was built with (so `set_custom_model` applies there too), the policy, and
the node agent's handle. What comes back: steps, the stop reason, the history, and
whether the sandbox was lost. A node that dies under the loop ends the task `lost`,
naming the node.
"""

from __future__ import annotations

import os
import time
from types import SimpleNamespace
from typing import Any


#: _loop_on_node as a Ray remote function, made on first use.
_remote: Any = None


def run_on_node(agent: Any, task: Any, factory: Any, depth: int, max_steps: int) -> Any:
    """The task's loop on its sandbox's node; the result as run_until_stop's (steps, reason, error).

    Raises: what placing the sandbox raises; the loop's own failure (re-raised from the node).
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    runtime = agent.runtime
    sandbox = runtime.sandbox  # placed now, by the driver
    node = sandbox.node_id
    handle = sandbox._agent
    info = {"id": sandbox.id, "memory_limit": sandbox.memory_limit, "hostname": sandbox.hostname}
    global _remote
    if _remote is None:  # exported to the cluster once per process, not once per task
        _remote = ray.remote(_loop_on_node)
    loop = _remote.options(
        num_cpus=0, max_retries=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
    ref = loop.remote(factory, agent.model, handle, node, info, runtime.policy, runtime.image, task.persona, depth,
                      task.prompt, dict(max_steps=max_steps, step_timeout=task.step_timeout, max_time=task.timeout))
    while not ray.wait([ref], timeout=0.2)[0]:
        if task.status.ended:  # cancelled or timed out meanwhile: stop its model calls too
            ray.cancel(ref, force=True)
            return SimpleNamespace(steps=0, reason="stopped", error=None)
    try:
        out = ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        raise cause if isinstance(cause, BaseException) else exc from None
    except ray.exceptions.RayError as exc:  # the node, its raylet or the worker died
        runtime.lost = f"its Ray node {node[:12]} died under the task's loop ({type(exc).__name__})"
        return SimpleNamespace(steps=0, reason="error", error=runtime.lost)
    agent.history[:] = out["history"]
    if out["lost"]:
        runtime.lost = out["lost"]
    if out["first"]:
        task.first_command = task.first_command or out["first"]
    return SimpleNamespace(steps=out["steps"], reason=out["reason"], error=out["error"])


def _loop_on_node(factory: Any, model: Any, handle: Any, node: str, info: dict, policy: Any, image: str,
                  persona: str | None, depth: int, prompt: str, limits: dict) -> dict[str, Any]:
    """In a Ray worker on the sandbox's node: the sub-agent's loop on the driver's sandbox."""
    os.environ["PYGENT_BACKEND"] = "ray"  # its own delegated tasks go to the cluster too
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
    agent = factory(runtime=runtime, persona=persona, task_depth=depth)
    agent.model = model
    try:
        result = agent.run_until_stop(prompt, **limits)
        return {"steps": result.steps, "reason": result.reason, "error": result.error, "history": agent.history,
                "lost": runtime.lost, "first": first[0] if first else None}
    finally:
        runtime._sandbox = None  # not ours to close
        agent.close()
