"""Tools per agent: an Agent's own ToolRegistry, the ToolContext tools get, and the task manager's agent factory."""

from __future__ import annotations

import time

import pytest

from pygent import Agent, Runtime, TaskManager, ToolContext, ToolRegistry, register_tool, set_custom_model
from pygent.agent import StepEvent, builtin_registry, execute_tool
from pygent.errors import TaskError
from support.scripted import Script, call, say

NO_ARGS = {"type": "object", "properties": {}}
NAME = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}


class Recording(Script):
    """A Script that also records the tool names it was offered."""

    def __init__(self, *replies):
        super().__init__(*replies)
        self.offered: list[list[str]] = []

    def chat(self, messages, model, tools):
        self.offered.append([t["function"]["name"] for t in tools])
        return super().chat(messages, model, tools)


def tool_results(agent: Agent) -> dict[str, str]:
    return {m["tool_call_id"]: m["content"] for m in agent.history if m["role"] == "tool"}


def test_an_agent_with_its_own_registry_offers_and_runs_only_its_tools(agents):
    mine = builtin_registry()

    def greet(rt, name: str) -> str:  # pygent's signature: the Runtime comes first
        assert isinstance(rt, Runtime)
        return f"hello {name}"

    mine.register("greet", "Greet someone.", NAME, greet)
    own = Recording(say(call("greet", {"name": "ada"}, id="g")), say(call("stop")))
    default = Recording(say(call("greet", {"name": "bob"}, id="g")), say(call("stop")))
    a, b = Agent(model=own, tools=mine), Agent(model=default)
    agents += [a, b]
    assert "greet" in a.system_msg and "greet" not in b.system_msg
    assert a.run_until_stop("go").reason == b.run_until_stop("go").reason == "stop"
    assert tool_results(a)["g"] == "hello ada"
    assert tool_results(b)["g"].startswith("error: unknown tool 'greet'; available tools: bash")
    assert "greet" in own.offered[0] and "greet" not in default.offered[0]
    assert "bash" in own.offered[0]  # the built-ins came along

    # The module-level API changes the default registry, not an agent's own one.
    register_tool("only_default", "x", NO_ARGS, lambda rt: "d")
    assert "only_default" in b.tools and "only_default" not in a.tools
    assert execute_tool(call("greet", {"name": "eve"}), a.runtime, registry=mine) == "hello eve"
    assert not a.runtime.started  # no tool here touched the sandbox


def test_a_context_tool_runs_commands_emits_events_and_sees_the_loop_deadline(agents):
    reg = ToolRegistry(builtin_registry())
    seen: dict = {}

    @reg.tool("probe", "Probe the context.", NO_ARGS, context=True)
    def probe(ctx):
        seen.update(type=type(ctx), tasks=ctx.tasks, depth=ctx.task_depth, left=ctx.deadline - time.monotonic())
        ctx.emit(StepEvent("probe", content="from the tool"))
        ctx.write_file("p.txt", "written through the context")
        return ctx.bash("cat p.txt")

    events: list[StepEvent] = []
    ag = Agent(model=Script(say(call("probe", id="p")), say(call("stop"))), tools=reg, on_event=events.append)
    agents.append(ag)
    assert ag.run_until_stop("go", step_timeout=60).reason == "stop"
    assert tool_results(ag)["p"] == "exit code: 0\nstdout:\nwritten through the context"
    assert seen["type"] is ToolContext and seen["tasks"] is ag.tasks and seen["depth"] == 0
    assert 0 < seen["left"] <= 60  # the step's limit reached the tool
    assert [e.content for e in events if e.kind == "probe"] == ["from the tool"]


def test_delegated_tasks_get_the_parent_agents_tools(agents):
    reg = builtin_registry()
    reg.register("secret", "The secret.", NO_ARGS, lambda rt: "s3cr3t")

    class SecretThenStop:  # stateless: sub-agents share the default model
        def chat(self, messages, model, tools):
            if messages[-1]["role"] == "tool":
                return say(call("stop", id="s"), content=messages[-1]["content"])
            return say(call("secret", id="t"))

    set_custom_model(SecretThenStop())
    with_tools, without = Agent(model=Script(say()), tools=reg), Agent(model=Script(say()))
    agents += [with_tools, without]
    t1, t2 = with_tools.tasks.start("tell the secret"), without.tasks.start("tell the secret")
    [s1] = with_tools.tasks.wait([t1.id], timeout=60)
    [s2] = without.tasks.wait([t2.id], timeout=60)
    assert (s1["status"], s1["answer"]) == ("finished", "s3cr3t")
    assert s2["status"] == "finished" and s2["answer"].startswith("error: unknown tool 'secret'")


def test_the_task_manager_builds_sub_agents_with_the_factory_it_is_given():
    made: list[tuple] = []

    def factory(*, runtime, persona, task_depth):
        made.append((persona, task_depth, isinstance(runtime, Runtime)))
        return Agent(model=Script(say(call("stop"), content="built by the factory")), runtime=runtime,
                     persona=persona, task_depth=task_depth)

    manager = TaskManager(agent_factory=factory)
    try:
        task = manager.start("hi", persona="a tester")
        [status] = manager.wait([task.id], timeout=60)
    finally:
        manager.close()
    assert (status["status"], status["answer"]) == ("finished", "built by the factory")
    assert made == [("a tester", 1, True)]
    with pytest.raises(TaskError, match="no agent factory"):
        TaskManager().start("x")
