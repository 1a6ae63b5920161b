"""Host side of the file API: the server's answers as stdlib errors, host trees as file requests.

Why a module of its own: every backend whose sandbox runs the command server
turns the same answers into the same exceptions (one place maps errno to
FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError...),
and `upload` walks a host tree the same way whatever carries the bytes.
"""

from __future__ import annotations

import os
import stat
from errno import EROFS
from pathlib import Path
from typing import Iterator

from ..errors import FileTooLarge, SandboxError

#: Bytes read from a host file per request frame.
HOST_CHUNK = 1 << 16


def raise_for(answer: dict, path: str, doing: str, limit: int = 0) -> dict:
    """The server's answer to a file request, or the exception it stands for.

    `OSError(errno, ...)` picks the stdlib subclass itself (ENOENT -> FileNotFoundError,
    EACCES -> PermissionError, EISDIR -> IsADirectoryError, ENOTDIR -> NotADirectoryError).

    Raises: FileTooLarge, OSError (a subclass, by errno), SandboxError (an answer without errno).
    """
    if "too_large" in answer:
        raise FileTooLarge(path, int(answer["too_large"]), limit)
    if "errno" not in answer:
        return answer
    errno = int(answer["errno"] or 0)
    reason = str(answer.get("error") or "failed")
    if not errno:
        raise SandboxError(f"{doing} {path} in the sandbox failed: {reason}")
    if errno == EROFS:  # not the user's to write, like EACCES: the type callers catch for it
        raise PermissionError(errno, f"{reason} ({doing} it as the sandbox user)", path)
    raise OSError(errno, f"{reason} ({doing} it as the sandbox user)", path)


def chunks_of(host_file: Path) -> Iterator[bytes]:
    """A host file's bytes, HOST_CHUNK at a time (a big upload never sits whole in memory)."""
    with open(host_file, "rb") as f:
        while chunk := f.read(HOST_CHUNK):
            yield chunk


def host_tree(root: Path, dest: str) -> Iterator[tuple[str, Path, os.stat_result]]:
    """(sandbox path, host path, lstat) for `root` and, if it is a directory, everything
    under it, parents before children. Symlinks are not followed (they are copied as links)."""
    st = root.lstat()
    yield dest, root, st
    if not stat.S_ISDIR(st.st_mode):
        return
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        base = dest if rel == "." else f"{dest}/{Path(rel).as_posix()}"
        for name in sorted(dirnames) + sorted(filenames):
            host = Path(dirpath) / name
            yield f"{base}/{name}", host, host.lstat()
        dirnames.sort()
