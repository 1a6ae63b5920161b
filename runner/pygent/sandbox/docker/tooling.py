"""The read-only tooling volume every sandbox mounts at /opt/pygent.

Why a volume: the command server needs an interpreter, and a user's image may
have none (FROM scratch, node, a distroless base). The bundled `tooling` image
(images/tooling) carries pygent's own: python with its loader and libraries,
the server, a static bash. Its /opt/pygent is copied once per version into a
named volume (`pygent-tooling-<hash>`), and each sandbox mounts that volume
read-only: no derived image per user image, nothing written per sandbox.

A second, empty volume `pygent-tooling-<hash>-ready` marks a completed copy,
so a process that finds it pays one engine call (~1 ms) instead of a check
container; a copy interrupted half way is never mistaken for a complete one.
"""

from __future__ import annotations

import threading
from typing import Callable

from ...errors import SandboxError
from .. import lifecycle
from .client import EngineAPIError, EngineClient, NotFound

LABEL_TOOLING = "io.pygent.tooling"
VOLUME_PREFIX = "pygent-tooling-"
_lock = threading.Lock()


def volume_name(tag: str) -> str:
    """pygent/tooling:<hash> -> pygent-tooling-<hash>."""
    return VOLUME_PREFIX + tag.rsplit(":", 1)[-1]


def ensure_volume(client: EngineClient, tooling_tag: Callable[[], str], known: set[str],
                  host_config: dict | None = None) -> str:
    """The populated tooling volume for the current tooling image; made when missing.

    tooling_tag: resolves (building if needed) the current pygent/tooling tag.
    known: names this backend has already seen ready (no engine call then).
    host_config: engine-specific HostConfig fields for the copier (e.g. Podman's rlimits).
    Raises: EngineUnavailable, ImageBuildError, SandboxError.
    """
    tag = tooling_tag()
    name = volume_name(tag)
    if name in known:
        return name
    with _lock:
        if name not in known:
            if not _ready(client, name):
                from ..images import process_lock

                with process_lock(f"tooling:{name}"):
                    if not _ready(client, name):
                        _populate(client, tag, name, host_config or {})
            known.add(name)
    return name


def _ready(client: EngineClient, name: str) -> bool:
    """Both volumes exist and the data volume is ours (an engine re-creates a deleted
    named volume empty and unlabelled when a remembered create body mounts it)."""
    data = _inspect(client, name)
    return data is not None and LABEL_TOOLING in (data.get("Labels") or {}) and _inspect(client, name + "-ready") is not None


def _inspect(client: EngineClient, volume: str) -> dict | None:
    try:
        return client.call("GET", f"/volumes/{volume}")
    except NotFound:
        return None


def _exists(client: EngineClient, volume: str) -> bool:
    return _inspect(client, volume) is not None


def _populate(client: EngineClient, tag: str, name: str, host_config: dict) -> None:
    """Copy the tooling image's /opt/pygent into a fresh volume NAME, then mark it ready."""
    labels = {LABEL_TOOLING: tag.rsplit(":", 1)[-1], lifecycle.LABEL_MANAGED: "1"}
    if _exists(client, name):  # a copy that never completed (or an empty volume the engine made)
        try:
            client.call("DELETE", f"/volumes/{name}", params={"force": 1}, what="remove stale tooling volume")
        except EngineAPIError as exc:
            raise SandboxError(f"tooling volume {name} is incomplete and in use ({exc.message}); "
                               "close the sandboxes using it or run `pygent-runner gc`") from None
    client.call("POST", "/volumes/create", {"Name": name, "Labels": labels}, what="create tooling volume")
    # An empty named volume mounted where the image has files gets a copy of them (the
    # engine's copy-up, Docker and Podman alike); the container only proves it worked.
    body = {
        "Image": tag, "Entrypoint": ["/opt/pygent/bin/bash", "-c", "test -x /opt/pygent/bin/python3 && test -s /opt/pygent/server.pyc"],
        "Cmd": None, "Labels": dict(lifecycle.owner_labels()), "NetworkDisabled": True,
        "HostConfig": {"Mounts": [{"Target": "/opt/pygent", "Source": name, "Type": "volume"}],
                       "LogConfig": {"Type": "none", "Config": {}}, "NetworkMode": "none", **host_config},
    }
    cid = client.call("POST", "/containers/create", body, what="create tooling copier")["Id"]
    try:
        client.call("POST", f"/containers/{cid}/start", what="start tooling copier")
        code = client.call("POST", f"/containers/{cid}/wait", timeout=120).get("StatusCode")
    finally:
        try:
            client.call("DELETE", f"/containers/{cid}", params={"force": 1})
        except Exception:
            pass
    if code != 0:
        raise SandboxError(f"could not fill the tooling volume {name} (check exited {code}); "
                           "rebuild it with `pygent-runner images build tooling --force`")
    client.call("POST", "/volumes/create", {"Name": name + "-ready", "Labels": labels}, what="mark tooling volume")


def list_volumes(client: EngineClient) -> list[dict]:
    """Every tooling volume (and ready marker) on the engine."""
    answer = client.call("GET", "/volumes", params={"filters": {"label": [LABEL_TOOLING]}}) or {}
    return list(answer.get("Volumes") or [])


def prune(client: EngineClient, current_tag: str | None) -> list[str]:
    """Remove tooling volumes of other versions that no container uses; return their names.

    The data volume goes first and its ready marker only after it: a volume still
    in use keeps its marker, so it is never mistaken for an incomplete copy.
    """
    keep = volume_name(current_tag) if current_tag else None
    names = {v["Name"] for v in list_volumes(client)}
    removed = []
    for name in sorted(n for n in names if not n.endswith("-ready")):
        if keep and name == keep:
            continue
        try:
            client.call("DELETE", f"/volumes/{name}")
            removed.append(name)
        except EngineAPIError:
            continue  # in use
    for marker in sorted(n for n in names if n.endswith("-ready")):
        data = marker[: -len("-ready")]
        if (keep and data == keep) or (data in names and data not in removed):
            continue
        try:
            client.call("DELETE", f"/volumes/{marker}")
            removed.append(marker)
        except EngineAPIError:
            continue
    return removed
