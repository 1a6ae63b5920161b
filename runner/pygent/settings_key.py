"""What settings are read from, as a hashable key (no pydantic: `exec`'s fast path uses it).

Settings come from our environment variables, the current directory and the
toml file's contents: a key over those tells when settings read earlier still hold.
"""

from __future__ import annotations

import os


def settings_key() -> tuple:
    """Our variables, the current directory, the toml file's mtime."""
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k.upper().startswith(("PYGENT_", "OPENAI_"))))
    toml = os.environ.get("PYGENT_CONFIG") or "pygent.toml"
    try:
        mtime = os.stat(toml).st_mtime_ns
    except OSError:
        mtime = None
    return env, os.getcwd(), mtime
