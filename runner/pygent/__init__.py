"""pygent: an LLM agent whose every command runs in a disposable Docker sandbox.

    from pygent import Agent, openai_compat

The public surface is pygent's: Agent, openai_compat, models.set_custom_model,
tools.register_tool / tool. Attributes load on first use (PEP 562), so
`pygent-runner exec`, which needs none of the agent, starts fast; so does
``__version__``, read from the installed package's metadata on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "Agent": ("pygent.agent", "Agent"),
    "RunResult": ("pygent.agent", "RunResult"),
    "Runtime": ("pygent.agent", "Runtime"),
    "TaskManager": ("pygent.agent", "TaskManager"),
    "ToolContext": ("pygent.agent", "ToolContext"),
    "ToolRegistry": ("pygent.agent", "ToolRegistry"),
    "register_tool": ("pygent.agent.tools", "register_tool"),
    "remove_tool": ("pygent.agent.tools", "remove_tool"),
    "reset_tools": ("pygent.agent.tools", "reset_tools"),
    "tool": ("pygent.agent.tools", "tool"),
    "set_custom_model": ("pygent.models", "set_custom_model"),
}
_SUBMODULES = ("errors", "models", "openai_compat", "settings", "sandbox", "agent", "tools")

__all__ = sorted([*_LAZY, "errors", "models", "openai_compat"])


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from .version import package_version

        value: Any = package_version()
    elif name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"pygent.{name}")
    else:
        raise AttributeError(f"module 'pygent' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | {"__version__"})


if TYPE_CHECKING:
    from . import errors, models, openai_compat
    from .agent import Agent, RunResult, Runtime, TaskManager, ToolContext, ToolRegistry
    from .agent.tools import register_tool, remove_tool, reset_tools, tool
    from .models import set_custom_model
