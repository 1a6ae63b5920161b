"""pygent: an LLM agent whose every command runs in a disposable Docker sandbox.

    from pygent import Agent, openai_compat

The public surface is pygent's: Agent, openai_compat, models.set_custom_model,
tools.register_tool / tool. Everything else lives in sub-packages.
"""

from . import errors, models, openai_compat
from .agent import Agent, RunResult, Runtime, TaskManager
from .agent.tools import register_tool, remove_tool, reset_tools, tool
from .models import set_custom_model

__version__ = "0.1.0"

__all__ = [
    "Agent", "RunResult", "Runtime", "TaskManager", "errors", "models", "openai_compat",
    "register_tool", "remove_tool", "reset_tools", "set_custom_model", "tool",
]
