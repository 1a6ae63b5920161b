"""Every exception pygent raises, in one tree.

Callers catch ``PygentError`` for "anything from pygent", or a narrower class.
Where a stdlib type means the same thing, the class inherits it too, so code
that already catches ``TimeoutError`` or ``ValueError`` keeps working.

    PygentError
    ├── ConfigError (ValueError)             bad settings, option values, policy fields
    │   └── NoAllowlist                      allow_hosts/deny_hosts on a sandbox whose network is not an allowlist
    ├── SandboxError                         anything about running in a container
    │   ├── EngineUnavailable (ConnectionError)  no Docker engine answers
    │   │   ├── EngineRefused                an engine is there but refused us (TLS, SSH, permission)
    │   │   └── ClusterUnavailable           the Ray backend: no cluster at RAY_ADDRESS, or another Ray version
    │   ├── PlacementError                   the Ray backend: no node can hold the sandbox asked for
    │   ├── ImageNotFound (LookupError)      image neither present nor bundled
    │   ├── ImageBuildError                  a bundled image failed to build
    │   ├── RuntimeUnavailable               e.g. runsc asked for, engine lacks it
    │   ├── SandboxClosed                    used after close()
    │   ├── SandboxGone                      the sandbox died under us (removed, killed, OOM, engine restart)
    │   ├── CommandTimeout (TimeoutError)    raised only by APIs that raise on timeout
    │   ├── PathOutsideSandbox (ValueError)  a file path that escapes the sandbox
    │   └── FileTooLarge (ValueError)        a file over the size limit of a read
    ├── APIError                             the model provider answered with an error
    │   ├── APIConnectionError (ConnectionError)  unreachable / timed out, after retries
    │   ├── MalformedResponse                2xx that is not a chat completion (HTML, no choices)
    │   └── APIStatusError                   an HTTP error status (the subclasses below)
    │       ├── BadRequestError              400 (and other 4xx): the request was refused
    │       ├── AuthenticationError          401 / 403: check OPENAI_API_KEY / OPENAI_BASE_URL
    │       ├── NotFoundError (LookupError)  404: wrong OPENAI_BASE_URL or model name
    │       ├── RateLimitError               429, after honouring Retry-After
    │       ├── ServerError                  5xx, after retries
    │       └── ModelOutputError             the provider could not parse the model's own output
    ├── ModelError                           no model configured, or a model raised
    ├── ToolError                            bad tool registration / call
    └── TaskError                            delegated tasks (depth, unknown id)
        └── DelegationDepthExceeded
"""

from __future__ import annotations


class PygentError(Exception):
    """Root of every error pygent raises."""


class ConfigError(PygentError, ValueError):
    """A setting, option or policy value is invalid."""


class NoAllowlist(ConfigError):
    """allow_hosts / deny_hosts on a sandbox without an allowlist (no network, full network, a
    backend without one). The message says how to open a sandbox whose allowlist can change."""


class SandboxError(PygentError):
    """Something went wrong creating, using or removing a sandbox."""


class EngineUnavailable(SandboxError, ConnectionError):
    """No Docker engine answered. Never falls back to running on the host."""

    def __init__(self, detail: str = "") -> None:
        msg = (
            "no Docker engine answers"
            + (f" ({detail})" if detail else "")
            + ". Start one (`make engine` installs and starts dockerd on Debian/Ubuntu,"
            " or `sudo systemctl start docker`), or set DOCKER_HOST."
        )
        super().__init__(msg)


class EngineRefused(EngineUnavailable):
    """An engine is there but we cannot speak to it: TLS, SSH or a socket's permissions.

    The message names the fix (a CA, a client certificate, a known host key, the docker group).
    """

    def __init__(self, message: str) -> None:
        ConnectionError.__init__(self, message)


class ClusterUnavailable(EngineUnavailable):
    """The Ray backend cannot use its cluster: nothing answers at RAY_ADDRESS, or the
    cluster runs another Ray version than this process. The message names which."""

    def __init__(self, detail: str = "") -> None:
        SandboxError.__init__(self, detail)


class PlacementError(SandboxError):
    """The Ray cluster has no node that can hold the sandbox asked for (slots, CPUs,
    memory, or a pinned node or label). The message says what was asked and what each
    node offers."""


class ImageNotFound(SandboxError, LookupError):
    """The image is not present on the engine and is not one we bundle."""


class ImageBuildError(SandboxError):
    """Building a bundled image failed; the message carries the build log tail."""


class RuntimeUnavailable(SandboxError):
    """The requested OCI runtime (e.g. runsc) is not registered with the engine."""


class SandboxClosed(SandboxError):
    """The sandbox was used after close(); create a new one."""


class SandboxGone(SandboxError):
    """The sandbox is dead: its container was removed or killed, its server exited, the whole
    sandbox ran out of memory, or the engine restarted. Nothing in it survives (a host-directory
    workspace does); open a new sandbox. `reason` says what happened, in a few words.
    """

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


class CommandTimeout(SandboxError, TimeoutError):
    """A command ran past its wall-clock limit (only where an API raises on it)."""


class PathOutsideSandbox(SandboxError, ValueError):
    """A file path would escape the sandbox's filesystem."""


class FileTooLarge(SandboxError, ValueError):
    """A file is larger than the read's limit: nothing of it was returned.

    `size` is the file's size as seen (at least limit + 1), `limit` the limit.
    """

    def __init__(self, path: str, size: int, limit: int) -> None:
        self.path, self.size, self.limit = path, size, limit
        super().__init__(
            f"{path} is {size} bytes, over the {limit} byte read limit: "
            "pass a larger max_bytes, or read it in parts with a command (head -c, split)"
        )


class SnapshotError(SandboxError):
    """A snapshot could not be taken, saved, loaded or restored (issue 24)."""


class SnapshotTooLarge(SnapshotError):
    """The trees to snapshot are over the snapshot's byte limit: nothing was kept."""


class SnapshotInvalid(SnapshotError, ValueError):
    """A snapshot file is truncated, tampered with, foreign or of an unknown format: nothing was restored."""


class SnapshotUnsupported(SnapshotError):
    """This backend (or sandbox) cannot take or restore snapshots, or pause."""


class APIError(PygentError):
    """The model provider returned an error, or could not be reached after retries."""

    def __init__(self, message: str, status_code: int | None = None, body: object = None) -> None:
        self.status_code = status_code
        self.body = body
        self.message = message
        prefix = f"HTTP {status_code}: " if status_code is not None else ""
        super().__init__(prefix + message)


class APIConnectionError(APIError, ConnectionError):
    """The endpoint could not be reached (refused, reset, timed out), retries included."""


class MalformedResponse(APIError):
    """A 2xx answer that is not a chat completion: not JSON, an HTML page, no choices."""


class APIStatusError(APIError):
    """The provider answered with an HTTP error status; ``status_code`` and ``body`` say which."""


class BadRequestError(APIStatusError):
    """The provider refused the request (400 or another 4xx): retrying the same request cannot help."""


class AuthenticationError(APIStatusError):
    """401/403: the key is missing, wrong or not allowed; the message names the variable to check."""


class NotFoundError(APIStatusError, LookupError):
    """404: usually OPENAI_BASE_URL lacks its /v1 suffix, or the model name is unknown there."""


class RateLimitError(APIStatusError):
    """429 that persisted through the retries (each honouring the server's Retry-After, capped)."""


class ServerError(APIStatusError):
    """A 5xx that persisted through the retries."""


class ModelOutputError(APIStatusError):
    """The provider failed to parse what the model generated (e.g. llama.cpp's tool-call parser).

    Never retried: the same request makes the same model produce the same output.
    """


class ModelError(PygentError):
    """No usable model is configured, or the model raised."""


class ToolError(PygentError):
    """A tool was registered or called wrongly."""


class TaskError(PygentError):
    """A delegated task could not be started or found."""


class DelegationDepthExceeded(TaskError):
    """A sub-agent tried to delegate deeper than the configured bound."""
