"""Backends by name, chosen by settings: `@backend("docker")`, `get_backend()`.

Why a registry (as inspect_ai's `@sandboxenv`): a new engine is one module that
registers itself; nothing else changes. The choice: `PYGENT_BACKEND` when set,
else "podman" when the engine the resolver finds (docker/endpoint.py) says it is
Podman (its /version, asked once per endpoint: a path proves nothing), else "docker".
One backend object per (name, endpoint), created on first use.
"""

from __future__ import annotations

import importlib
import os
import threading
from typing import TYPE_CHECKING, Callable, TypeVar

from ..errors import ConfigError

if TYPE_CHECKING:
    from .interface import Backend

B = TypeVar("B", bound="type[Backend]")

#: name -> module that registers it on import (so `get_backend` imports only what it needs).
_MODULES = {"docker": "pygent.sandbox.docker.backend", "podman": "pygent.sandbox.podman",
            "ray": "pygent.sandbox.ray.backend"}
_classes: dict[str, "type[Backend]"] = {}
_instances: dict[tuple[str, str], "Backend"] = {}
_lock = threading.Lock()
#: endpoint host -> "docker" | "podman", from the engine's own /version.
_flavors: dict[str, str] = {}


def backend(name: str) -> Callable[[B], B]:
    """Class decorator: register a Backend subclass under `name`."""

    def register(cls: B) -> B:
        cls.name = name
        _classes[name] = cls
        return cls

    return register


def names() -> list[str]:
    return sorted(set(_MODULES) | set(_classes))


def chosen_name(explicit: str | None = None) -> str:
    """The backend name for this process: explicit, PYGENT_BACKEND, a Podman DOCKER_HOST, else docker."""
    if explicit:
        return explicit
    env = os.environ.get("PYGENT_BACKEND")
    if env:
        return env.strip().lower()
    try:
        from ..settings import get_settings

        configured = getattr(get_settings(), "pygent_backend", None)
    except Exception:
        configured = None
    if configured:
        return str(configured).lower()
    return engine_flavor()


def engine_flavor() -> str:
    """ "podman" when the resolved engine answers /version as Podman, else "docker" (also when none answers).

    The docker backend's module asks (it holds the client); asked once per endpoint.
    """
    from . import endpoint

    ep = endpoint.resolve()
    hit = _flavors.get(ep.host)
    if hit is None:
        if "docker" not in _classes:
            importlib.import_module(_MODULES["docker"])
        hit = _classes["docker"].engine_name(ep)  # type: ignore[attr-defined]
        if hit is None:
            return "docker"  # no answer: the backend's first call says why, with the fix
        _flavors[ep.host] = hit
    return hit


def get_backend(name: str | None = None) -> "Backend":
    """The shared backend object for `name` (see chosen_name). Raises ConfigError for an unknown name."""
    from . import endpoint

    name = chosen_name(name)
    key = (name, endpoint.resolve(flavor=name).host)
    hit = _instances.get(key)
    if hit is not None:
        return hit
    with _lock:
        if key not in _instances:
            if name not in _classes and name in _MODULES:
                importlib.import_module(_MODULES[name])
            cls = _classes.get(name)
            if cls is None:
                raise ConfigError(f"unknown sandbox backend {name!r} (known: {', '.join(names())}); set PYGENT_BACKEND")
            _instances[key] = cls()
        return _instances[key]


def reset() -> None:
    """Forget backend objects and resolved endpoints (after DOCKER_HOST changed, or in tests)."""
    from . import endpoint

    endpoint.reset()
    _flavors.clear()
    with _lock:
        for b in _instances.values():
            try:
                b.close()
            except Exception:
                pass
        _instances.clear()
