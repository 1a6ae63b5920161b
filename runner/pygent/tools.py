"""pygent.tools: the tool registry, where pygent users expect it."""

from .agent.tools import (  # noqa: F401
    TOOL_SCHEMAS,
    TOOLS,
    clear_tools,
    execute_tool,
    register_tool,
    remove_tool,
    reset_tools,
    tool,
)
