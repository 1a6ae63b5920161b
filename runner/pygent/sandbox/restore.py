"""Sandboxes started from a snapshot: `open_sandbox(snapshot=...)` and `Sandbox.fork(n)`.

Why a fresh sandbox (from the warm pool when there is one) and not the old one
rewound: a fresh sandbox's trees are empty tmpfs, so the restore creates every
entry itself and nothing a command left behind (a symlink planted where a
directory will be, a process writing meanwhile) can redirect it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from .base import Sandbox
    from .policy import SandboxPolicy
    from .snapshot import Snapshot

#: Forks started at once (each is a container start and a restore: engine and stream bound).
FORK_PARALLEL = 4


def open_restored(snapshot: "Snapshot", image: str | None = None, policy: "SandboxPolicy | None" = None,
                  pool: bool = True) -> "Sandbox":
    """A new sandbox with the snapshot's trees and shell state, of its image and policy.

    Raises: ConfigError (another image asked for), SnapshotUnsupported (the backend cannot
    restore), SnapshotError, and what open_sandbox raises. Nothing is left running on failure.
    """
    from .registry import get_backend

    engine = get_backend()
    tag = engine.resolve_image(snapshot.image)
    if image is not None and engine.resolve_image(image) != tag:
        raise ConfigError(f"the snapshot was taken in image {snapshot.image}, not {image}: leave image out to restore it")
    return _fill(_blank(engine, tag, policy or snapshot.policy(), pool), snapshot)


def _blank(engine: Any, tag: str, policy: "SandboxPolicy", pool: bool) -> "Sandbox":
    """A fresh sandbox to restore into: from the warm pool of (tag, policy) when there is one."""
    from .pool import get_pool

    chosen = get_pool(tag, policy) if pool else None
    return chosen.acquire() if chosen is not None else engine.create(tag, policy)


def _fill(sandbox: "Sandbox", snapshot: "Snapshot") -> "Sandbox":
    """Restore into a fresh sandbox; on failure it is closed and the error raised."""
    try:
        sandbox._restore(snapshot)
    except BaseException:
        sandbox.close(wait=False)
        raise
    return sandbox


def open_many(snapshot: "Snapshot", n: int, pool: bool = True) -> "list[Sandbox]":
    """n restored sandboxes, started side by side; all or none (the started ones are closed on failure)."""
    if n == 1:
        return [open_restored(snapshot, pool=pool)]
    with ThreadPoolExecutor(min(n, FORK_PARALLEL), thread_name_prefix="pygent-fork") as ex:
        return _all_or_none([ex.submit(open_restored, snapshot, None, None, pool) for _ in range(n)])


def fork_of(source: "Sandbox", n: int, pool: bool = True) -> "list[Sandbox]":
    """Sandbox.fork(n): the n new sandboxes start while the source's snapshot is taken
    (a container start overlaps the transfer), then each is filled. All or none."""
    from .registry import get_backend

    snapshot_policy = getattr(source, "policy", None)
    image = getattr(source, "image", None)
    if snapshot_policy is None or not image:  # no policy to start blanks with: restore one by one
        return open_many(source.snapshot(), n, pool)
    policy = snapshot_policy.model_copy(update={"workspace": None})
    engine = get_backend()

    with ThreadPoolExecutor(min(n, FORK_PARALLEL), thread_name_prefix="pygent-fork") as ex:
        blanks = [ex.submit(_blank, engine, image, policy, pool) for _ in range(n)]
        try:
            snapshot = source.snapshot()
        except BaseException:
            for sb in _all_or_none(blanks, raise_error=False):
                sb.close(wait=False)
            raise
        with ThreadPoolExecutor(min(n, FORK_PARALLEL), thread_name_prefix="pygent-fill") as fills:
            return _all_or_none([fills.submit(lambda b: _fill(b.result(), snapshot), b) for b in blanks])


def _all_or_none(futures: list, raise_error: bool = True) -> "list[Sandbox]":
    """The futures' sandboxes; if any failed, the others are closed and its error raised
    (raise_error=False: the ones that worked, for the caller to close)."""
    made, error = [], None
    for f in futures:
        try:
            made.append(f.result())
        except BaseException as exc:
            error = error or exc
    if error is not None and raise_error:
        for sb in made:
            sb.close(wait=False)
        raise error
    return made
