"""The two abstractions every engine implements: a `Backend` makes `Sandbox`es.

Modelled on inspect_ai's SandboxEnvironment (an ABC whose methods say what they
raise, providers in a registry) and SWE-ReX's split of deployment from runtime:
a Backend is the deployment side (create, list, gc, images, health checks); a
Sandbox (base.py) is the runtime side (exec, files, close). Nothing above
`pygent.sandbox` imports an engine module: the pool, gc, tasks, doctor and the
CLI go through `get_backend()` (registry.py).

What a Kubernetes pod backend would implement (one new module):
- create(): a Pod with the tooling as an init container copying into an
  emptyDir (or an image volume), the server as the main container's command,
  securityContext (runAsUser, readOnlyRootFilesystem, capabilities drop ALL,
  allowPrivilegeEscalation false), resources limits (memory, cpu), and the
  channel over the attach websocket (a `channel.Transport`).
- Policy it could not enforce per pod: `pids` (a kubelet-wide setting),
  `NetworkDisabled` (needs a NetworkPolicy per namespace), `runtime` only as a
  RuntimeClass that the cluster must define, and tmpfs sizes (emptyDir
  sizeLimit is enforced by eviction, not ENOSPC).
"""

from __future__ import annotations

import abc
import dataclasses
from typing import TYPE_CHECKING, Any

from .base import Sandbox

if TYPE_CHECKING:
    from .policy import SandboxPolicy

__all__ = ["Backend", "Check", "Sandbox", "SandboxInfo"]


@dataclasses.dataclass
class SandboxInfo:
    """One of our sandboxes as the engine lists it (for gc and `doctor`)."""

    id: str
    labels: dict[str, str]
    state: str
    image: str = ""


@dataclasses.dataclass
class Check:
    """One line of `pygent-runner doctor`: ok or not, what was found, what to do."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


class Backend(abc.ABC):
    """An engine that runs sandboxes. One object per engine endpoint; holds its state."""

    #: The registry name (`PYGENT_BACKEND`).
    name: str = ""

    @abc.abstractmethod
    def create(self, image: str, policy: "SandboxPolicy", *, pooled: bool = False) -> Sandbox:
        """Start one hardened sandbox of `image` (resolved already) under `policy`.

        Raises: EngineUnavailable, ImageNotFound, RuntimeUnavailable, ConfigError, SandboxError.
        """

    @abc.abstractmethod
    def resolve_image(self, ref: str, *, build_missing: bool = True) -> str:
        """The image to run for `ref`: bundled names are built when missing, others must exist.

        Raises: EngineUnavailable, ImageNotFound, ImageBuildError.
        """

    @abc.abstractmethod
    def list_ours(self) -> list[SandboxInfo]:
        """Every sandbox on the engine carrying pygent's labels (any owner). Raises: EngineUnavailable."""

    def usage(self, sandbox_ids: list[str]) -> dict[str, dict[str, float]]:
        """What each running sandbox uses now: {"cpu_percent" (of one core), "memory" (bytes)}.

        For `pygent-runner ps`. A sandbox the engine cannot report is left out; the default
        (a backend without the engine's stats) reports none. Never raises.
        """
        return {}

    @abc.abstractmethod
    def remove(self, sandbox_id: str) -> None:
        """Remove one sandbox by id; already gone is success. Raises: EngineUnavailable, SandboxError."""

    @abc.abstractmethod
    def checks(self) -> list[Check]:
        """Health checks for `doctor`: the engine answers, runtimes, images, tooling. Never raises."""

    def start_from_recipe(self, recipe: dict) -> Sandbox:
        """Start a sandbox identical to the one `recipe` came from (`Sandbox.recipe()`), without
        the policy machinery: the exec fast path. Raises: as create(); ConfigError when the
        backend cannot replay recipes."""
        from ..errors import ConfigError

        raise ConfigError(f"the {self.name} backend cannot start sandboxes from a recipe")

    def interactive_shell(self, image: str, policy: "SandboxPolicy", command: list[str] | None = None,
                          workdir: str | None = None, env: dict[str, str] | None = None) -> int:
        """A person's terminal (a real TTY) in a fresh sandbox, removed when it ends; its exit
        status (`pygent-runner shell`). Raises: as create(); ConfigError when the backend has none."""
        from ..errors import ConfigError

        raise ConfigError(f"the {self.name} backend has no interactive shell")

    @property
    def address(self) -> str:
        """Where the engine is reached (for messages)."""
        return self.name

    def version(self) -> dict[str, Any]:
        """The engine's version record (Version, ApiVersion, Os, Arch, KernelVersion). Raises: EngineUnavailable."""
        return {}

    def info(self) -> dict[str, Any]:
        """The engine's facts (runtimes, cgroup version, limits supported, warnings). Raises: EngineUnavailable."""
        return {}

    def runtimes(self) -> dict[str, Any]:
        """OCI runtimes the engine registers (name -> registration). Raises: EngineUnavailable."""
        return {}

    def follow_deaths(self, on: bool) -> None:
        """Start (on=True) or stop following the engine's news of our sandboxes dying, so
        `Sandbox.healthy()` knows without asking (the warm pool turns it on while warm).
        Default: nothing to follow; healthy() relies on the sandbox's own state. Never raises."""

    def reclaim_shared(self, everything: bool = False) -> list[tuple[str, str, float]]:
        """Remove helpers shared by processes (e.g. the egress proxy) that no sandbox uses:
        [(id, reason, age)]. They have no single owner, so gc's owner rules do not apply.
        Raises: EngineUnavailable."""
        return []

    def close(self) -> None:
        """Release what the backend holds (watchers, connections). Sandboxes are not touched."""
