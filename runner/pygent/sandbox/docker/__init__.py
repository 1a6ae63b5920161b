"""The Docker backend (also the base of the Podman one), split by concern.

client.py   the Engine API over its socket (stdlib): the one engine client
config.py   policy -> create body: every hardening in one place
stream.py   Docker's attach-stream multiplexing, as a channel transport
sandbox.py  DockerSandbox: commands over the channel, files over the archive API
tooling.py  the read-only tooling volume (interpreter, server, static bash)
backend.py  DockerBackend: the engine's state, sandbox creation, runtimes, checks
"""

from .backend import DockerBackend
from .sandbox import DockerSandbox, Limits

__all__ = ["DockerBackend", "DockerSandbox", "Limits"]
