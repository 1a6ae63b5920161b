"""A stateless scripted model: what a trivial delegated task's sub-agent 'thinks'.

If the last message is a tool result, call `stop`; otherwise call `bash` with
`echo hi`. Stateless, so one instance can serve any number of agents at once.
"""

from __future__ import annotations

import itertools
import json

from pygent.openai_compat import Message, ToolCall, ToolCallFunction

_ids = itertools.count(1)


def tool_call(name: str, arguments: dict) -> ToolCall:
    return ToolCall(id=f"call_{next(_ids)}", function=ToolCallFunction(name=name, arguments=json.dumps(arguments)))


class ScriptedModel:
    """chat(): bash `echo hi` first, `stop` once a tool result is the last message."""

    def __init__(self, cmd: str = "echo hi") -> None:
        self.cmd = cmd

    def chat(self, messages: list[dict], model: str, tools: list[dict]) -> Message:
        last = messages[-1] if messages else {}
        if last.get("role") == "tool":
            return Message(role="assistant", content=None, tool_calls=[tool_call("stop", {})])
        return Message(role="assistant", content=None, tool_calls=[tool_call("bash", {"cmd": self.cmd})])
