"""The one Docker client the process shares, and the mapping of engine failures.

Why shared: docker-py clients hold a connection pool; one per sandbox would cost
sockets and memory per sandbox. Why a mapping: callers see ``EngineUnavailable``
with a fix, never a requests/urllib3 traceback. There is no fallback to the host.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from ..errors import EngineUnavailable

if TYPE_CHECKING:  # docker is imported lazily: `pygent-runner exec` start-up time matters
    import docker

_lock = threading.Lock()
_client: "docker.DockerClient | None" = None

#: Seconds an API call may take before we call the engine unresponsive.
API_TIMEOUT = 60


def get_client() -> "docker.DockerClient":
    """Return the shared client, checking once that an engine answers."""
    global _client
    if _client is not None:
        return _client
    with _lock:
        if _client is None:
            import docker
            from docker.errors import DockerException

            try:
                client = docker.from_env(timeout=API_TIMEOUT, max_pool_size=64)
                client.api.ping()
            except DockerException as exc:
                raise EngineUnavailable(_short(exc)) from None
            except Exception as exc:  # requests/urllib3 errors while pinging
                raise EngineUnavailable(_short(exc)) from None
            _client = client
    return _client


def reset_client() -> None:
    """Forget the shared client (after the engine restarted, or in tests)."""
    global _client
    with _lock:
        if _client is not None:
            try:
                _client.close()
            except Exception:
                pass
        _client = None


def is_engine_error(exc: BaseException) -> bool:
    """True when exc means the engine is unreachable (not an API-level refusal)."""
    import requests

    return isinstance(exc, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError))


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def release_idle_connections() -> None:
    """Close the HTTP connections the client keeps idle for reuse (after a burst of work).

    They are not leaks (the pool is bounded and reuses them), but a long-lived
    host process may want its descriptors back; the next call opens new ones.
    """
    if _client is not None:
        try:
            _client.api.close()
        except Exception:
            pass
