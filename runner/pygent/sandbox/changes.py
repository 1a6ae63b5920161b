"""What changed in a sandbox since a snapshot: files added, modified, deleted, and diffs.

Why a listing and not a second snapshot: the server lists the trees without
their contents (path, kind, mode, size, mtime), and only files whose size,
mode or mtime differ from the snapshot are read back to compare bytes, so
`changes()` on a 10,000-file tree with 100 changed files reads 100 files.
Bounded: diffs only for text files of at most DIFF_FILE_MAX bytes each side,
each diff cut at max_diff bytes, all of them together at max_total.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Callable

from .snapshot import Entry, Snapshot

#: Largest file (either side) a text diff is made of.
DIFF_FILE_MAX = 1 << 20
#: Bytes of one file's diff, and of all diffs together, kept by default.
DIFF_MAX = 64 << 10
DIFF_TOTAL_MAX = 512 << 10


@dataclasses.dataclass
class Changes:
    """Files and symlinks added, modified and deleted (directories are not listed), sorted;
    `diffs` maps a modified or added text file to its unified diff (bounded)."""

    added: list[str] = dataclasses.field(default_factory=list)
    modified: list[str] = dataclasses.field(default_factory=list)
    deleted: list[str] = dataclasses.field(default_factory=list)
    diffs: dict[str, str] = dataclasses.field(default_factory=dict)
    #: Paths whose diff was left out or cut (binary, too large, over the total).
    diffs_omitted: list[str] = dataclasses.field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.modified or self.deleted)

    def as_dict(self) -> dict:
        """For the JSON transcript (without the diffs' text: `diffs` lists their paths)."""
        return {"added": self.added, "modified": self.modified, "deleted": self.deleted}

    def render(self) -> str:
        """What `pygent-runner run --diff` prints: one line per path, then the diffs."""
        lines = [f"A {p}" for p in self.added] + [f"M {p}" for p in self.modified] + [f"D {p}" for p in self.deleted]
        if not lines:
            return "no changes in the workspace\n"
        text = "\n".join(sorted(lines, key=lambda s: s[2:])) + "\n"
        for path in sorted(self.diffs):
            text += "\n" + self.diffs[path]
        if self.diffs_omitted:
            text += f"\n[{len(self.diffs_omitted)} diffs left out: binary, over {DIFF_FILE_MAX} bytes, or over the limit]\n"
        return text


def compare(since: Snapshot, now: list[Entry], fetch: Callable[[list[str]], dict[str, bytes]],
            max_diff: int = DIFF_MAX, max_total: int = DIFF_TOTAL_MAX) -> Changes:
    """Changes between a snapshot and a listing of the same trees (entries without data).
    fetch(paths) reads the current bytes of those files (at most DIFF_FILE_MAX each), in one
    request; a file missing from its answer could not be read and counts as modified."""
    before = {e.path: e for e in since.entries if e.kind != "dir"}
    after = {e.path: e for e in now if e.kind != "dir"}
    out = Changes()
    candidates = []  # (path, old entry or None), to compare bytes or to diff
    for path in sorted(set(before) | set(after)):
        old, new = before.get(path), after.get(path)
        if old is None:
            out.added.append(path)
        elif new is None:
            out.deleted.append(path)
            continue
        elif old.kind != new.kind or old.mode != new.mode:
            out.modified.append(path)
        elif old.kind == "symlink":
            if old.target != new.target:
                out.modified.append(path)
            continue
        elif old.size == new.size and old.mtime_ns == new.mtime_ns:
            continue
        if new.kind == "file":
            candidates.append((path, old if old is not None and old.kind == "file" else None, new))
    current = fetch([p for p, _, new in candidates if new.size <= DIFF_FILE_MAX])
    total = 0
    for path, old, _ in candidates:
        old_data = since.data(old) if old is not None else b""
        new_data = current.get(path)
        if old is not None and path not in out.modified:
            if new_data is not None and new_data == old_data:
                continue  # touched, same bytes
            out.modified.append(path)  # changed bytes, or too large / unreadable to compare here
        diff = _text_diff(path, old_data, new_data, old is None)
        if diff is None or total >= max_total:
            out.diffs_omitted.append(path)
            continue
        if len(diff) > max_diff:
            diff = diff[:max_diff] + f"\n[... diff cut at {max_diff} bytes ...]\n"
            out.diffs_omitted.append(path)
        total += len(diff)
        out.diffs[path] = diff
    out.modified.sort()
    return out


def _text_diff(path: str, old: bytes, new: bytes | None, added: bool) -> str | None:
    if new is None or len(old) > DIFF_FILE_MAX or b"\0" in old or b"\0" in new:
        return None
    try:
        a, b = old.decode(), new.decode()
    except UnicodeDecodeError:
        return None
    rel = path.lstrip("/")
    lines = difflib.unified_diff(a.splitlines(keepends=True), b.splitlines(keepends=True),
                                 "/dev/null" if added else f"a/{rel}", f"b/{rel}")
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)
