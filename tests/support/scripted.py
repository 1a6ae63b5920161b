"""Scripted models and message builders shared by the agent tests."""

from __future__ import annotations

import copy
import json

from pygent import openai_compat


def call(name: str, args: dict | str | None = None, id: str = "c1") -> openai_compat.ToolCall:  # noqa: A002
    raw = args if isinstance(args, str) else json.dumps(args or {})
    return openai_compat.ToolCall(id=id, type="function", function=openai_compat.ToolCallFunction(name=name, arguments=raw))


def say(*calls: openai_compat.ToolCall, content: str | None = None) -> openai_compat.Message:
    return openai_compat.Message(role="assistant", content=content, tool_calls=list(calls) or None)


class Script:
    """Answers with the given replies in order (the last one repeats); records what it was sent."""

    def __init__(self, *replies: openai_compat.Message) -> None:
        self.replies = list(replies)
        self.seen: list[list[dict]] = []

    def chat(self, messages, model, tools):
        self.seen.append(copy.deepcopy(messages))
        return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
