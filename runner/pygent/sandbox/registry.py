"""Backends by name, chosen by settings: `@backend("docker")`, `get_backend()`.

Why a registry (as inspect_ai's `@sandboxenv`): a new engine is one module that
registers itself; nothing else changes. The choice: `PYGENT_BACKEND` when set,
else "podman" when DOCKER_HOST points at a Podman socket, else "docker".
One backend object per (name, DOCKER_HOST), created on first use.
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
    if "podman" in (os.environ.get("DOCKER_HOST") or ""):
        return "podman"
    return "docker"


def get_backend(name: str | None = None) -> "Backend":
    """The shared backend object for `name` (see chosen_name). Raises ConfigError for an unknown name."""
    name = chosen_name(name)
    key = (name, os.environ.get("DOCKER_HOST") or "")
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
    """Forget backend objects (after DOCKER_HOST changed, or in tests)."""
    with _lock:
        for b in _instances.values():
            try:
                b.close()
            except Exception:
                pass
        _instances.clear()
