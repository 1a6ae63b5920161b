"""Which of our images a change left behind, and removing them (`pygent-runner images prune`).

Why: every edit of a bundled context, and every upgrade of pygent, builds a new
``pygent/NAME:<hash>``; the old builds and the Debian bases nothing builds on
any more stay on the engine (about 200 MB each for python) until removed.

Outdated means, for each bundled NAME: a ``pygent/NAME`` tag that is a content
hash (12 hex digits) other than the current one, or ``latest`` when it no longer
points at the current build. A base ``pygent/debian-base:<hash>`` is unused when
no bundled image's build-base.sh hashes to it and no current build names it as
its base (label io.pygent.base-image). Tags a user made (``pygent/python:mine``)
and images of other repositories are never touched. Nothing is forced: an image
a container still uses stays, and is reported as such. The tooling volumes of
other tooling builds go too (docker/tooling.py's prune: unused ones only).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, TypedDict

from . import images
from .engine import get_client

if TYPE_CHECKING:
    import docker

_HASH = re.compile(r"^[0-9a-f]{12}$")


class Stale(TypedDict):
    """One outdated tag: what it is, and the image it points at."""

    name: str  # bundled image name, or "base"
    tag: str
    id: str
    size: int  # the image's full size in bytes (layers shared with others included)


class PruneResult(TypedDict):
    removed: list[Stale]
    kept: list[tuple[Stale, str]]  # (tag, why it stays)
    freed: int  # bytes no remaining image uses any more
    volumes: list[str]  # tooling volumes of other tooling builds, removed


def _repo_images(client: "docker.DockerClient", repo: str) -> list[dict[str, Any]]:
    with images._engine_errors():
        return list(client.api.images(name=repo) or [])


def _current_base_tags() -> set[str]:
    out: set[str] = set()
    for name in images.bundled_names():
        if (images.images_dir() / name / "build-base.sh").is_file():
            out.add(images.base_tag(name))
    return out


def outdated() -> list[Stale]:
    """Our outdated build tags and unused bases on the engine (nothing is removed).

    Raises:
        EngineUnavailable: no engine answers.
    """
    client = get_client()
    stale: list[Stale] = []
    bases_in_use = _current_base_tags()
    for name in images.bundled_names():
        repo = f"{images.REPO}/{name}"
        current = images.image_tag(name)
        for record in _repo_images(client, repo):
            tags = [t for t in record.get("RepoTags") or [] if t.startswith(repo + ":")]
            is_current = current in tags
            if is_current:
                base = (record.get("Labels") or {}).get(images.LABEL_BASE)
                if base:
                    bases_in_use.add(base)
            for tag in tags:
                suffix = tag.rsplit(":", 1)[1]
                ours = _HASH.match(suffix) or suffix == "latest"
                if not ours or tag == current or (suffix == "latest" and is_current):
                    continue
                stale.append(Stale(name=name, tag=tag, id=record["Id"], size=int(record.get("Size") or 0)))
    for record in _repo_images(client, images.BASE_REPO):
        for tag in record.get("RepoTags") or []:
            suffix = tag.rsplit(":", 1)[1]
            if tag.startswith(images.BASE_REPO + ":") and _HASH.match(suffix) and tag not in bases_in_use:
                stale.append(Stale(name="base", tag=tag, id=record["Id"], size=int(record.get("Size") or 0)))
    return stale


def _unique_sizes(client: "docker.DockerClient") -> dict[str, int]:
    """Image id -> bytes of its layers that no other image shares (the engine's disk-usage view)."""
    try:
        with images._engine_errors():
            usage = client.api.df()
    except Exception:  # an engine without /system/df: the freed figure is then 0, nothing else changes
        return {}
    out: dict[str, int] = {}
    for record in usage.get("Images") or []:
        size, shared = int(record.get("Size") or 0), int(record.get("SharedSize") or 0)
        out[record["Id"]] = max(size - max(shared, 0), 0)
    return out


def prune() -> PruneResult:
    """Remove our outdated tags and unused bases; keep the current builds and anything in use.

    Bases go last, so a base whose only users were outdated builds is freed in
    the same run. The freed figure counts each removed image's layers that no
    other image shared at the start (layers shared only among removed images are
    not counted, so it errs low).

    Raises:
        EngineUnavailable: no engine answers.
    """
    from docker.errors import APIError, NotFound

    client = get_client()
    stale = sorted(outdated(), key=lambda s: s["name"] == "base")
    unique = _unique_sizes(client)
    result = PruneResult(removed=[], kept=[], freed=0, volumes=_prune_tooling_volumes())
    for item in stale:
        try:
            with images._engine_errors():
                answer = client.api.remove_image(item["tag"], force=False, noprune=False)
        except NotFound:
            continue  # gone meanwhile (another prune, another developer)
        except APIError as exc:
            why = "in use by a container" if exc.status_code == 409 else str(exc.explanation or exc)[:200]
            result["kept"].append((item, why))
            continue
        result["removed"].append(item)
        deleted = {entry.get("Deleted") for entry in answer or [] if isinstance(entry, dict)}
        if item["id"] in deleted:
            result["freed"] += unique.get(item["id"], 0)
    images.clear_cache()
    return result


def _prune_tooling_volumes() -> list[str]:
    """Tooling volumes (and ready markers) of other tooling builds that no container uses.

    Only when this install bundles the tooling context: without one there is no
    current build to keep. Raises: EngineUnavailable.
    """
    if images.TOOLING not in images.bundled_names():
        return []
    from .docker import tooling
    from .docker.client import EngineClient

    with images._engine_errors():
        return tooling.prune(EngineClient(), images.image_tag(images.TOOLING))
