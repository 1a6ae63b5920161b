"""A parent agent that sends N delegate_task calls in one message and waits for them (issue 27).

Run as a child process (`python -m support.task_flood KIND,KIND,...`) so that a test can
watch the engine's containers by this process's owner-pid label. Each task's prompt names
what its sub-agent does; the sub-agent model is stateless and reads it from the messages:

  finish   runs `echo hi`, then stops             -> finished
  fail     runs `echo hi`, then its model raises  -> failed
  timeout  runs `sleep 30` with a 1 s task limit  -> timeout
  cancel   runs `sleep 30`; the parent cancels it -> cancelled
  lost     kills its sandbox's command server     -> lost

Prints the tasks' statuses as JSON on its last line.
"""

from __future__ import annotations

import json
import sys
import threading
import time

from pygent import Agent, set_custom_model
from support.scripted import call, say

COMMANDS = {"finish": "echo hi", "fail": "echo hi", "timeout": "sleep 30", "cancel": "sleep 30", "lost": "kill -9 $PPID"}


class SubAgent:
    def chat(self, messages, model, tools):
        kind = next(m["content"] for m in messages if m["role"] == "user").split()[0]
        if messages[-1]["role"] == "tool":
            if kind == "fail":
                raise RuntimeError("the model broke (on purpose)")
            return say(call("stop", id="s"), content="done")
        return say(call("bash", {"cmd": COMMANDS[kind]}, id="b"))


def main(kinds: list[str]) -> None:
    set_custom_model(SubAgent())
    calls = [
        call("delegate_task", {"prompt": f"{kind} {i}", **({"timeout": 1} if kind == "timeout" else {})}, id=f"d{i}")
        for i, kind in enumerate(kinds)
    ]
    parent = Agent(model=_Once(say(*calls), say(content="waiting")))
    try:
        parent.step("fan out")
        canceller = threading.Thread(target=_cancel_when_running, args=(parent,), daemon=True)
        canceller.start()
        statuses = parent.tasks.wait(timeout=240)
    finally:
        parent.close()
    print(json.dumps([{"prompt": t.prompt, "status": s["status"], "elapsed": s["elapsed"], "reason": s["reason"][:80]} for t, s in zip(parent.tasks.tasks.values(), statuses)]))


def _cancel_when_running(parent: Agent) -> None:
    """Cancel each `cancel` task once its command is running."""
    while True:
        pending = [t for t in parent.tasks.tasks.values() if t.prompt.startswith("cancel") and not t.status.ended]
        if not pending:
            return
        for task in pending:
            if task.first_command and time.time() - task.first_command > 0.2:
                parent.tasks.cancel(task.id)
        time.sleep(0.05)


class _Once:
    def __init__(self, *replies):
        self.replies = list(replies)

    def chat(self, messages, model, tools):
        return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]


if __name__ == "__main__":
    main(sys.argv[1].split(","))
