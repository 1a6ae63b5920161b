"""What an agent reports while it works (StepEvent), for displays (CLI) and transcripts.

Why a module of its own: the loop, the task manager and tools (through their
ToolContext) all emit events; defining the type below all three keeps the
agent package free of import cycles (loop imports tasks, so tasks cannot
import loop). `pygent.agent.loop.StepEvent` is the same class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class StepEvent:
    """What happened in a step, for displays (CLI) and transcripts.

    Kinds: "model" (one model call: ``duration`` is its latency; ``data`` has
    latency_s, attempts, retries, usage (token counts, None when the provider
    reported none), error (None on success) and ``requests``, one
    ``call_stats.CallRecord`` per HTTP chat completion the model made; a model
    that makes no HTTP call has none), then "assistant", one "tool" per call,
    "task" for delegated tasks, and "output" while a bash command runs (``content``: a chunk of
    its output as it arrives, ``data["stream"]``: "stdout" or "stderr"; at most 1 MiB a
    command; the tool's result still follows). New kinds may be added: displays should
    ignore kinds they do not know.
    """

    kind: str  #: "model" | "assistant" | "tool" | "task" | "output"
    content: str | None = None
    tool: str | None = None
    arguments: str | None = None
    duration: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)
