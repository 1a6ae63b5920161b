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
    command; the tool's result still follows). A "tool" event's ``data["cost"]`` is what its
    commands cost (commands, cpu_user, cpu_sys in seconds, max_rss in bytes; absent when it ran
    none). "step" ends each step (``data["n"]``: its number; the run log fsyncs there);
    "sandbox" is the agent's sandbox's life (``content``: created, died or recovered;
    ``data``: id, image or reason); "task_step" is one event of a delegated task
    (``data``: task_id and the event as a dict; a task's own tasks nest); "egress_refused" is one
    host the egress proxy refused during a bash command (``content``: the note the model read,
    ``data``: host, port, reason, count, ...; protocol.Done's egress_refused). New kinds may be
    added: displays should ignore kinds they do not know.
    """

    kind: str  #: "model" | "assistant" | "tool" | "task" | "output" | "step" | "sandbox" | "task_step" | ...
    content: str | None = None
    tool: str | None = None
    arguments: str | None = None
    duration: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The event as a plain dict (empty fields left out): run logs and "task_step" events."""
        out: dict[str, Any] = {"kind": self.kind}
        for name in ("content", "tool", "arguments", "duration", "data"):  # no asdict: it deep-copies data
            value = getattr(self, name)
            if value not in (None, "", {}):
                out[name] = value
        return out
