"""The parsed options of `pygent-runner exec` (parsed by hand in exec.py).

Why a module of its own: exec_cache.py derives its key from these options and
exec.py uses the cache, so the type lives below both (no import cycle).
"""

from __future__ import annotations


class UsageError(ValueError):
    """A bad option or value: reported in one line (exec: exit 125; mcp: exit 2)."""


class Options:
    """What the command line asked for; None means the settings' default. Plain slots: no pydantic on the fast path."""

    __slots__ = ("image", "timeout", "memory", "cpus", "pids", "network", "runtime", "workdir", "env", "mounts", "allow_hosts", "ports", "bind", "help", "command")

    def __init__(self) -> None:
        self.image: str | None = None
        self.timeout: float | None = None  # None: the policy's (settings) default; inf: no limit
        self.memory: str | None = None
        self.cpus: float | None = None
        self.pids: int | None = None
        self.network: bool | None = None
        self.runtime: str | None = None
        self.workdir: str | None = None
        self.env: dict[str, str] = {}
        self.mounts: list[str] = []
        self.allow_hosts: list[str] = []
        self.ports: list[tuple[int, int]] = []  # -p PORT[:HOSTPORT] (issue 25); host port 0: any free one
        self.bind: str | None = None  # --bind ADDR for the ports; None: loopback
        self.help = False
        self.command: list[str] = []

    def set_other(self, name: str, dest: str, value: str | None) -> None:
        """An option of a command that reuses exec's parser (`mcp`); value None for a flag.

        Raises:
            UsageError: always here; subclasses handle their own options.
        """
        raise UsageError(f"no such option: {name}")
