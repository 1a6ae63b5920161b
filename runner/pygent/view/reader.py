"""Reading run logs (agent/runlog.py) for `pygent-runner view`: summaries, steps, tasks.

Why summaries read only a file's head and tail: the list of 1,000 runs must come in
under a second, and a finished run's last lines (run_end) carry its totals; only a
run without them (running, or killed) is read whole. A torn last line (a crash
mid-write) is skipped.
"""

from __future__ import annotations

import json
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

__all__ = ["RunSummary", "Step", "TaskNode", "list_runs", "summary", "read_events", "steps_of", "tasks_of", "run_path"]

_RUN_ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]*$")
_HEAD = 4096
_TAIL = 16384


@dataclass
class RunSummary:
    id: str
    status: str  #: running, crashed, or how it ended (stop, max_steps, error, ...)
    task: str
    model: str
    steps: int
    duration: float | None
    tokens: int
    started: float
    error: str | None = None


@dataclass
class Step:
    """One step: the model call, its message, the tool calls, in the order they happened."""

    n: int
    start: float = 0.0  #: seconds since the log began
    end: float = 0.0
    model: dict[str, Any] | None = None
    assistant: dict[str, Any] | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    other: list[dict[str, Any]] = field(default_factory=list)  #: sandbox events and kinds we do not know
    done: bool = False


@dataclass
class TaskNode:
    task_id: str
    info: dict[str, Any]
    children: list["TaskNode"] = field(default_factory=list)


def run_path(log_dir: Path, run_id: str) -> Path | None:
    """The log file of `run_id` in `log_dir`, or None (an id that is not a log name never is a path)."""
    if not _RUN_ID.match(run_id):
        return None
    path = log_dir / f"{run_id}.jsonl"
    return path if path.is_file() else None


def _lines(data: bytes) -> Iterator[dict[str, Any]]:
    for line in data.split(b"\n"):
        if line:
            try:
                yield json.loads(line)
            except ValueError:
                continue  # the torn end of a killed run, or a head/tail cut


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every complete event of a log, in order."""
    return list(_lines(path.read_bytes()))


def _alive(meta: dict[str, Any]) -> bool:
    pid = meta.get("pid")
    if not isinstance(pid, int) or meta.get("host") != socket.gethostname():
        return False
    from ..sandbox.lifecycle import pid_alive

    return pid_alive(pid)


def summary(path: Path) -> RunSummary:
    """What the runs list shows of one log, from its head and tail (the whole file only when it has no end)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(_HEAD)
        if size > _HEAD + _TAIL:
            f.seek(size - _TAIL)
            tail = f.read()
        else:
            tail = head + f.read()
    first = list(_lines(head.rsplit(b"\n", 1)[0] if size > _HEAD else head))
    meta = first[0] if first and first[0].get("kind") == "log" else {}
    task = next((e.get("task", "") for e in first if e.get("kind") == "run_start"), "")
    end = next((e for e in reversed(list(_lines(tail))) if e.get("kind") == "run_end"), None)
    ended = any(e.get("kind") == "log_end" for e in _lines(tail[-200:]))
    if end is not None and (ended or not _alive(meta)):
        return RunSummary(path.stem, end.get("reason", "?"), task, meta.get("model") or "", int(end.get("steps") or 0),
                          end.get("duration"), int(end.get("tokens") or 0), float(meta.get("started") or 0), end.get("error"))
    events = read_events(path)  # running or killed: count what is there
    steps = sum(1 for e in events if e.get("kind") == "step")
    tokens = sum(((e.get("data") or {}).get("usage") or {}).get("total_tokens") or 0 for e in events if e.get("kind") == "model")
    status = "running" if not ended and _alive(meta) else ("crashed" if not ended else "ended")
    last_t = events[-1].get("t") if events else None
    return RunSummary(path.stem, status, task, meta.get("model") or "", steps, last_t, tokens, float(meta.get("started") or 0))


def list_runs(log_dir: Path) -> list[RunSummary]:
    """Every run of `log_dir`, newest first."""
    out = []
    for path in sorted(log_dir.glob("*.jsonl"), reverse=True):
        try:
            out.append(summary(path))
        except OSError:
            continue  # removed meanwhile (retention)
    return out


def task_events(events: list[dict[str, Any]], task_path: list[str]) -> list[dict[str, Any]]:
    """The events of the delegated task at `task_path` (ids from the top), unwrapped from task_step."""
    for task_id in task_path:
        events = [e["data"]["event"] for e in events
                  if e.get("kind") == "task_step" and (e.get("data") or {}).get("task_id") == task_id]
    return events


def steps_of(events: list[dict[str, Any]]) -> list[Step]:
    """One agent's events (top level or a task's) grouped into steps."""
    steps: list[Step] = []
    current: Step | None = None
    for e in events:
        kind = e.get("kind")
        t = float(e.get("t") or 0.0)
        if kind == "model":
            current = Step(len(steps) + 1, start=t - float(e.get("duration") or 0.0), end=t, model=e)
            steps.append(current)
        elif current is None:
            if kind in ("sandbox",):
                continue
            continue
        elif kind == "assistant":
            current.assistant, current.end = e, t
        elif kind == "tool":
            current.tools.append(e)
            current.end = t
        elif kind == "step":
            current.done, current.end = True, t
        elif kind in ("output", "task_step", "task", "run_start", "run_end", "log_end"):
            continue
        else:
            current.other.append(e)
    return steps


def tasks_of(events: list[dict[str, Any]]) -> list[TaskNode]:
    """The delegated task tree of one agent's events: each task's last status, its own tasks under it."""
    nodes: dict[str, TaskNode] = {}
    for e in events:
        if e.get("kind") == "task":
            info = e.get("data") or {}
            tid = str(info.get("task_id", ""))
            node = nodes.setdefault(tid, TaskNode(tid, info))
            node.info = info
    for tid, node in nodes.items():
        node.children = tasks_of(task_events(events, [tid]))
    return list(nodes.values())
