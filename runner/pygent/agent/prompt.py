"""The default system prompt: tells the model where it is and what it can do."""

from __future__ import annotations

import json


def build_system_msg(persona: str, tool_schemas: list[dict], image: str) -> str:
    names = ", ".join(t["function"]["name"] for t in tool_schemas)
    return (
        f"You are {persona}\n"
        f"You work in a sandboxed Linux container (image: {image}) as a non-root user, "
        "with no network access, in /workspace (your files persist between commands; `cd` persists too). "
        "Commands have a time limit and long output is cut in the middle.\n"
        f"Your tools: {names}.\n"
        "Use `bash` to run commands, `write_file`/`read_file` for files. "
        "Delegate independent sub-tasks with `delegate_task` (each runs in its own container) and "
        "`wait_tasks` for them. When you are done, call `stop`; to ask the user something, call `ask_user`.\n"
        "Tool schemas:\n" + json.dumps(tool_schemas, separators=(",", ":"))
    )


DEFAULT_PERSONA = "Pygent, a careful coding assistant."
