"""The sandbox layer: disposable, hardened containers to run untrusted commands.

    from pygent.sandbox import open_sandbox, SandboxPolicy
    with open_sandbox("python", SandboxPolicy(timeout=10)) as sb:
        print(sb.exec("echo hi").text)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import Sandbox
    from .policy import Mount, SandboxPolicy
    from .result import ExecResult
    from .snapshot import Snapshot

__all__ = ["ExecResult", "Mount", "Sandbox", "SandboxPolicy", "Snapshot", "open_forks", "open_sandbox", "default_policy"]

# Imported on first use (PEP 562): `pygent-runner exec` reaches pygent.sandbox.channel
# and must not pay for pydantic (the policy) on its fast path.
_LAZY = {"Sandbox": ".base", "Mount": ".policy", "SandboxPolicy": ".policy", "ExecResult": ".result", "Snapshot": ".snapshot"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_sandbox(image: str | None = None, policy: SandboxPolicy | None = None, *, pool: bool = True,
                 snapshot: "Snapshot | None" = None) -> Sandbox:
    """Start (or take a warm) sandbox. Close it, or use it as a context manager.

    image: a bundled name ('python', 'minimal') or any Linux image on the engine
    (the command server comes from pygent's tooling volume, so the image needs
    no python and no bash); default PYGENT_IMAGE. The engine is the backend
    chosen by PYGENT_BACKEND (docker, podman).

    snapshot: start it with a snapshot's workspace trees and shell state, in the
    snapshot's image and policy (Sandbox.snapshot(), Snapshot.load()).

    Raises: EngineUnavailable, ImageNotFound, RuntimeUnavailable, ConfigError;
    with a snapshot also SnapshotUnsupported, SnapshotError.
    """
    if snapshot is not None:
        from .restore import open_restored

        return open_restored(snapshot, image, policy, pool)
    from ..settings import get_settings
    from .pool import get_pool
    from .registry import get_backend

    policy = policy or default_policy()
    engine = get_backend()
    tag = engine.resolve_image(image or get_settings().pygent_image)
    chosen = get_pool(tag, policy) if pool else None
    if chosen is None:
        return engine.create(tag, policy)
    from . import lifecycle

    sandbox = chosen.acquire()
    what = lifecycle.PURPOSE.get()
    if what != "sandbox":
        lifecycle.claim(sandbox.id, what)  # its labels say "pool": note what it serves now (ps)
    return sandbox


def open_forks(source: "Snapshot | Sandbox", n: int, *, pool: bool = True) -> "list[Sandbox]":
    """n sandboxes restored from one snapshot (or from a sandbox: its snapshot is taken
    while they start), side by side: all of them or none (`Sandbox.fork(n)`, `Agent.fork(cp, n)`).
    Raises what Sandbox.snapshot() and open_sandbox(snapshot=) raise."""
    from .restore import fork_of, open_many
    from .snapshot import Snapshot

    if isinstance(source, Snapshot):
        return open_many(source, n, pool=pool)
    return fork_of(source, n, pool=pool)


def default_policy(**overrides: object) -> SandboxPolicy:
    """The strict policy, with the limits users set in settings (timeouts, output cap, runtime, allowlist).

    Raises pydantic.ValidationError (a ValueError) for a bad override or PYGENT_ALLOW_HOSTS entry.
    """
    from ..settings import get_settings
    from .policy import SandboxPolicy

    s = get_settings()
    values: dict[str, object] = {"timeout": s.pygent_command_timeout, "max_output": s.pygent_max_output}
    if s.pygent_runtime:
        values["runtime"] = s.pygent_runtime
    if s.pygent_allow_hosts:
        values["network"] = s.pygent_allow_hosts  # the allowlist form; an explicit network= overrides it
    values.update({k: v for k, v in overrides.items() if v is not None})
    return SandboxPolicy(**values)
