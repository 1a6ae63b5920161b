"""pygent's version, from the installed package's metadata (one source: pyproject.toml).

Why a function and not a constant read at import: importlib.metadata costs
~30 ms of imports, and `import pygent` / `pygent-runner exec` must stay fast.
The sandbox stack (pydantic, docker-py) imports it anyway, so callers there pay
only the lookup.
"""

from __future__ import annotations

import functools

DIST = "pygent-runner"
#: Reported when pygent runs from a source tree that was never installed.
UNKNOWN = "0+unknown"


@functools.lru_cache(maxsize=None)
def package_version() -> str:
    """The installed distribution's version, or ``0+unknown`` when it is not installed.

    Raises nothing: an uninstalled tree still runs (its image tags then carry
    the unknown version).
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DIST)
    except PackageNotFoundError:
        return UNKNOWN


def metadata_file() -> str | None:
    """Path of the installed distribution's METADATA file, or None.

    Why: it is rewritten by every install or upgrade, so a cache that records
    its mtime and size (cli/exec_cache.py) is dropped when the package changes,
    without importing importlib.metadata on the fast path to compare versions.
    """
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution(DIST)
    except PackageNotFoundError:
        return None
    for entry in dist.files or []:
        if entry.name == "METADATA" and entry.parent.name.endswith(".dist-info"):
            return str(entry.locate())
    return None
