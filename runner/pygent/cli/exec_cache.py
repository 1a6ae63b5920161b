"""What `exec` remembers between runs: the engine create body per configuration.

Why: building the body needs the policy and settings (pydantic) and docker-py,
~150 ms of imports per process. The body is a pure function of the options,
our environment variables, the current directory's pygent.toml, pygent's own
source, its installed version (the METADATA file every install rewrites) and
the bundled image's build context; so the first `exec` with a given
configuration stores it (the sandbox's `recipe()`), and the next ones start
from it through the same backend code (`Backend.start_from_recipe`).

The key covers every option that is not per-command (`PER_COMMAND`): an option
added to `Options` is part of the key without anyone remembering to add it, so
a new option can never replay a body made without it.

Safe to lose: a missing, stale or unreadable entry only means the full path.
Entries live in $XDG_CACHE_HOME/pygent-runner/exec (mode 0700, files 0600)
and are used only when owned by us and writable by nobody else: a body that
loosened the sandbox must not come from anyone else.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..sandbox import Sandbox
    from .exec_options import Options

FORMAT = 2
#: Options that change the command, not the sandbox: everything else keys the entry.
PER_COMMAND = frozenset({"command", "help", "timeout", "env", "workdir", "ports", "bind"})
#: Files whose change may change the body: pygent's settings and sandbox code.
_PACKAGE = Path(__file__).resolve().parents[1]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pygent-runner" / "exec"


def _key(opts: "Options") -> str:
    from ..settings_key import settings_key

    from ..sandbox.endpoint import resolve  # stdlib only: a stat per usual socket at most

    engine_env = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("DOCKER_")))
    engine_env += (("endpoint", resolve().host),)  # a `docker context use` changes no variable
    options = tuple((name, repr(getattr(opts, name, None))) for name in sorted(type(opts).__slots__) if name not in PER_COMMAND)
    # No version lookup here (importlib.metadata is ~30 ms of imports on the fast path):
    # the entry records the installed METADATA file instead (store), which every
    # install or upgrade rewrites; the package's location keeps two installs apart.
    parts = (FORMAT, sys.version_info[:2], str(_PACKAGE), options, settings_key(), engine_env)
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


def usable(opts: "Options") -> bool:
    """Only configurations without host mounts (their directories are checked on every run)."""
    return not opts.mounts


def load(opts: "Options") -> dict[str, Any] | None:
    """The entry for these options, if present, ours, and still current."""
    if not usable(opts):
        return None
    path = cache_dir() / f"{_key(opts)}.json"
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                return None
            entry = json.loads(f.read())
        if entry.get("format") != FORMAT:
            return None
        for name, mtime, size in entry["deps"]:
            dep = os.stat(name)
            if dep.st_mtime_ns != mtime or dep.st_size != size:
                return None
        return entry
    except (OSError, ValueError, KeyError, TypeError):
        return None


def store(opts: "Options", sandbox: "Sandbox", image: str | None) -> None:
    """Remember how this sandbox was created, for the next run (when its backend can replay it)."""
    recipe = sandbox.recipe() if usable(opts) else None
    if recipe is None:
        return
    try:
        deps = [p for p in _PACKAGE.rglob("*.py") if "__pycache__" not in p.parts]
        deps += _image_context(image)
        deps += _package_metadata()
        entry = {
            "format": FORMAT,
            "recipe": recipe,
            "deps": [[str(p), p.stat().st_mtime_ns, p.stat().st_size] for p in deps],
        }
        folder = cache_dir()
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = folder / f"{_key(opts)}.json"
        tmp = folder / f".{path.name}.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(entry, f)
        os.replace(tmp, path)
    except (OSError, TypeError, ValueError):
        pass  # no cache: the next run takes the full path again


def _image_context(image: str | None) -> list[Path]:
    """A bundled image's build context files (editing one changes the tag), else nothing."""
    from ..sandbox import images
    from ..settings import get_settings

    name = image or get_settings().pygent_image
    if name not in images.bundled_names():
        return []
    return images.context_paths(name)


def _package_metadata() -> list[Path]:
    """The installed METADATA file: an upgrade (new version, new tags) drops the entry."""
    from ..version import metadata_file

    found = metadata_file()
    return [Path(found)] if found else []
