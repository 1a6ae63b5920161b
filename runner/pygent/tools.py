"""pygent.tools: the tool registry, where pygent users expect it."""

from .agent.context import ToolContext  # noqa: F401
from .agent.registry import ToolRegistry  # noqa: F401
from .agent.tools import (  # noqa: F401
    TOOL_SCHEMAS,
    TOOLS,
    builtin_registry,
    clear_tools,
    execute_tool,
    register_tool,
    remove_tool,
    reset_tools,
    tool,
)
