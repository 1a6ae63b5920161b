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
    """What happened in a step, for displays (CLI) and transcripts."""

    kind: str  #: "assistant" | "tool" | "task"
    content: str | None = None
    tool: str | None = None
    arguments: str | None = None
    duration: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)
