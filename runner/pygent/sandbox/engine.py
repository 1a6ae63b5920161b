"""The one Docker client the process shares, and the mapping of engine failures.

Why shared: docker-py clients hold a connection pool; one per sandbox would cost
sockets and memory per sandbox. Why a mapping: callers see ``EngineUnavailable``
with a fix, never a requests/urllib3 traceback. There is no fallback to the host.
Where: the endpoint docker/endpoint.py resolves, the same one the stdlib client
uses (unix, tcp, tcp+TLS with its material, ssh through the user's ssh client).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, NoReturn

from ..errors import EngineUnavailable

if TYPE_CHECKING:  # docker is imported lazily: `pygent-runner exec` start-up time matters
    import docker

    from .endpoint import Endpoint

_lock = threading.Lock()
_client: "docker.DockerClient | None" = None
_relay: "Relay | None" = None  # docker-py's way to an ssh:// engine

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

            from .endpoint import resolve

            ep = resolve()
            try:
                client = docker.DockerClient(**_client_args(ep))
                if ep.tls is not None:
                    # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE (set on many machines) replace
                    # the engine's CA per request; trust only the endpoint's material, then negotiate.
                    client.api.trust_env = False
                    client.api._version = str(client.api.version(api_version=False)["ApiVersion"])
                client.api.ping()
            except Exception as exc:  # DockerException, requests/urllib3 errors while pinging
                _explain(ep, exc)
            _client = client
    return _client


def _client_args(ep: "Endpoint") -> dict:
    """docker-py's arguments for ep: TLS material as a TLSConfig; ssh through a relay (relay.py) over our transport."""
    global _relay
    args: dict = {"base_url": ep.host, "timeout": API_TIMEOUT, "max_pool_size": 64}
    if ep.scheme == "ssh":
        from .relay import Relay

        if _relay is None or _relay.ep != ep:
            _close_relay()
            _relay = Relay(ep)
        args["base_url"] = _relay.host
    if ep.tls is not None:
        from docker.tls import TLSConfig

        cert = (ep.tls.cert, ep.tls.key) if ep.tls.cert and ep.tls.key else None
        args["tls"] = TLSConfig(client_cert=cert, ca_cert=ep.tls.ca, verify=ep.tls.verify)
        args["version"] = "1.24"  # the oldest API docker-py speaks; replaced by the engine's own below
    return args


def _close_relay() -> None:
    global _relay
    if _relay is not None:
        _relay.close()
        _relay = None


def _explain(ep: "Endpoint", exc: BaseException) -> "NoReturn":
    """Raise the transport's error for ep (it names the fix for TLS and ssh), else docker-py's, shortened."""
    from .transports import probe

    probe(ep)
    raise EngineUnavailable(f"{ep.host} ({ep.source}): {_short(exc)}") from None


def engine_host() -> str:
    """The engine this process speaks to, as a DOCKER_HOST value (a cache key for per-engine facts)."""
    from .endpoint import resolve

    return resolve().host


def cli_env() -> dict[str, str]:
    """os.environ plus the DOCKER_* variables that point the docker CLI at the resolved engine."""
    import os

    from .endpoint import resolve

    return {**os.environ, **resolve().cli_env()}


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
        _close_relay()


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
