"""The default system prompt: tells the model where it is and what it can do."""

from __future__ import annotations

import json


def describe_network(network: "bool | tuple[str, ...]") -> str:
    """The sandbox's real network, in the words the model reads (issue 25): none, an allowlist, or full."""
    if network is True:
        return "with full network access"
    if not network:
        return "with no network access (only loopback: servers you start answer on 127.0.0.1)"
    return ("with network access only to these hosts, over HTTP(S) through a proxy the environment variables "
            f"already point at: {', '.join(network)} (any other host is refused)")


def build_system_msg(persona: str, tool_schemas: list[dict], image: str,
                     network: "bool | tuple[str, ...]" = False) -> str:
    names = ", ".join(t["function"]["name"] for t in tool_schemas)
    return (
        f"You are {persona}\n"
        f"You work in a sandboxed Linux container (image: {image}) as a non-root user, "
        f"{describe_network(network)}, in /workspace (your files persist between commands; `cd` persists too). "
        "Commands have a time limit and long output is cut in the middle.\n"
        f"Your tools: {names}.\n"
        "Use `bash` to run commands, `write_file`/`read_file` for files. "
        "Delegate independent sub-tasks with `delegate_task` (each runs in its own container) and "
        "`wait_tasks` for them. When you are done, call `stop`; to ask the user something, call `ask_user`.\n"
        "Tool schemas:\n" + json.dumps(tool_schemas, separators=(",", ":"))
    )


DEFAULT_PERSONA = "Pygent, a careful coding assistant."
