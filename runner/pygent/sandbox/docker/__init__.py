"""The Docker backend (also the base of the Podman one), split by concern.

client.py   the Engine API over its socket (stdlib): the one engine client
config.py   policy -> create body: every hardening in one place
stream.py   Docker's attach-stream multiplexing, as a channel transport
sandbox.py  DockerSandbox: commands over the channel, files over the archive API
tooling.py  the read-only tooling volume (interpreter, server, static bash)
backend.py  DockerBackend: the engine's state, sandbox creation, runtimes, checks
"""

from typing import TYPE_CHECKING, Any

__all__ = ["DockerBackend", "DockerSandbox", "Limits"]

if TYPE_CHECKING:
    from .backend import DockerBackend
    from .sandbox import DockerSandbox, Limits


def __getattr__(name: str) -> Any:
    """Attributes on first use (PEP 562): `pygent-runner exec`'s fast path imports only
    the modules a start from a recipe needs, not egress, deaths or tooling."""
    if name == "DockerBackend":
        from .backend import DockerBackend as value
    elif name in ("DockerSandbox", "Limits"):
        from . import sandbox

        value = getattr(sandbox, name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value
