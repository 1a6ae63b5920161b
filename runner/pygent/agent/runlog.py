"""The crash-safe run log: one JSONL file per run, appended as the agent's events happen.

Why JSONL appended with one ``os.write`` per event: a line reaches the kernel the
moment it is written, so a process killed by SIGKILL (or an OOM kill) leaves every
complete event readable; a reader skips at most one torn last line. ``fsync`` at
step boundaries (the "step" event) protects against a machine crash too; it runs
on a background thread, because an fsync costs milliseconds on a disk and the
agent's path must stay cheap (bench: runlog).

The log is fed by the same events (agent/events.py) the live view and ``--json``
use: every kind is written as it comes, so kinds other modules add (sandbox
pauses, egress refusals) appear without a change here. Lines look like
``{"t": <s since start>, "kind": ..., ...StepEvent fields}``; the first is
``{"kind": "log", "v": 1, "id", "started", "pid", "host", "model", "image"}``.

Secrets never reach the file: the values of the settings' secret fields (names
ending in key/token/secret/password) and of such environment variables, and
``Authorization`` header values, are replaced by ``[redacted]`` in every line.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .events import StepEvent

__all__ = ["RunLog", "default_log_dir", "secret_values", "redact", "prune", "LOG_VERSION"]

LOG_VERSION = 1
REDACTED = "[redacted]"
#: Setting / variable names whose values are secrets.
_SECRET_NAME = re.compile(r"(?:^|_)(?:api_?key|key|token|secret|password|passwd)$", re.I)
#: An Authorization header's value, in header form or as a JSON/dict member.
_AUTH = re.compile(r"""(?i)(authorization(?:\\*["'])?\s*[:=]\s*(?:\\*["'])?)(?:(?:bearer|basic|token)\s+)?[^\s"'\\,}]+""")
#: Values shorter than this are not treated as secrets (they would redact ordinary words).
_MIN_SECRET = 8


def default_log_dir() -> Path:
    """Where `run` and `chat` keep logs: PYGENT_LOG_DIR, else $XDG_STATE_HOME/pygent-runner/runs
    (~/.local/state when XDG_STATE_HOME is unset)."""
    from ..settings import get_settings

    configured = get_settings().pygent_log_dir
    if configured is not None:
        return Path(configured).expanduser()
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "pygent-runner" / "runs"


def secret_values() -> list[str]:
    """The secrets a log must never contain: the settings' secret fields, secret-named env vars."""
    from ..settings import get_settings

    found: set[str] = set()
    settings = get_settings()
    for name in type(settings).model_fields:
        value = getattr(settings, name, None)
        if _SECRET_NAME.search(name) and isinstance(value, str) and len(value) >= _MIN_SECRET:
            found.add(value)
    for name, value in os.environ.items():
        if _SECRET_NAME.search(name) and len(value) >= _MIN_SECRET:
            found.add(value)
    return sorted(found, key=len, reverse=True)  # longest first: a secret containing another goes whole


def redact(line: str, secrets: list[str]) -> str:
    """`line` with every secret value and Authorization header value replaced by [redacted]."""
    for secret in secrets:
        if secret in line:
            line = line.replace(secret, REDACTED)
        # The same value as JSON escapes it (a quote, a backslash): redact that form too.
        escaped = json.dumps(secret)[1:-1]
        if escaped != secret and escaped in line:
            line = line.replace(escaped, REDACTED)
    if "uthorization" in line or "UTHORIZATION" in line:
        line = _AUTH.sub(lambda m: m.group(1) + REDACTED, line)
    return line


def prune(log_dir: Path, keep: int) -> int:
    """Remove the oldest run logs of `log_dir` beyond the newest `keep` (0: keep all); how many went."""
    if keep <= 0:
        return 0
    logs = sorted(log_dir.glob("*.jsonl"))  # names start with the UTC start time: sorted = oldest first
    removed = 0
    for old in logs[: max(0, len(logs) - keep)]:
        try:
            old.unlink()
            removed += 1
        except OSError:
            pass
    return removed


class RunLog:
    """One run's log file; call it with each StepEvent (it is an ``on_event`` sink).

    Raises ConfigError when the directory cannot be created or written.
    """

    def __init__(self, log_dir: str | Path, *, model: str | None = None, image: str | None = None,
                 keep: int | None = None, **meta: Any) -> None:
        from ..settings import get_settings

        self.dir = Path(log_dir).expanduser()
        self.id = uuid.uuid4().hex[:12]
        started = time.time()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(started)) + f"{int(started % 1 * 1e6):06d}"
        self.path = self.dir / f"{stamp}-{self.id}.jsonl"
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise ConfigError(f"cannot write run logs in {self.dir}: {exc.strerror}; set PYGENT_LOG_DIR to a writable directory") from None
        prune(self.dir, get_settings().pygent_log_keep if keep is None else keep)
        self._secrets = secret_values()
        self._t0 = time.monotonic()
        self._lock = threading.Lock()
        self._sync = threading.Event()
        self._syncer: threading.Thread | None = None
        self._tokens = 0  # the run's totals, written with run_end so a reader of many logs need not scan them
        self._started_run = time.monotonic()
        self._write({"kind": "log", "v": LOG_VERSION, "id": self.id, "started": round(started, 3), "pid": os.getpid(),
                     "host": socket.gethostname(), "model": model, "image": image, **meta})

    # -- writing ----------------------------------------------------------------
    def __call__(self, event: StepEvent) -> None:
        self.write(event.to_dict())
        if event.kind == "step":
            self._fsync_soon()
        elif event.kind == "model":
            self._tokens += ((event.data.get("usage") or {}).get("total_tokens") or 0)

    def write(self, record: dict[str, Any]) -> None:
        """Append one record (a dict with "kind") as one line, now."""
        self._write(record)

    def _write(self, record: dict[str, Any]) -> None:
        line = json.dumps({"t": round(time.monotonic() - self._t0, 6), **record}, default=str, ensure_ascii=False)
        data = (redact(line, self._secrets) + "\n").encode("utf-8", "replace")
        with self._lock:
            if self._fd is None:
                return
            view = memoryview(data)
            while view:  # one write for any line a pipe-free file gets; loop only on a short write
                view = view[os.write(self._fd, view):]

    def _fsync_soon(self) -> None:
        if self._syncer is None:
            with self._lock:
                if self._fd is None:
                    return
                fd = os.dup(self._fd)  # its own descriptor: fsync never holds the writers' lock
            self._syncer = threading.Thread(target=self._sync_loop, args=(fd,), name="pygent-runlog-fsync", daemon=True)
            self._syncer.start()
        self._sync.set()

    def _sync_loop(self, fd: int) -> None:
        try:
            while True:
                self._sync.wait()
                self._sync.clear()
                try:
                    os.fsync(fd)
                except OSError:
                    pass
                if self._fd is None:
                    return
        finally:
            os.close(fd)

    # -- runs -----------------------------------------------------------------
    def run_started(self, task: str, **limits: Any) -> None:
        self._started_run = time.monotonic()
        self.write({"kind": "run_start", "task": task, **{k: v for k, v in limits.items() if v is not None}})

    def run_ended(self, reason: str, steps: int, error: str | None = None) -> None:
        self.write({"kind": "run_end", "reason": reason, "steps": steps, "error": error, "tokens": self._tokens,
                    "duration": round(time.monotonic() - self._started_run, 3)})
        self._fsync_now()

    def _fsync_now(self) -> None:
        with self._lock:
            if self._fd is not None:
                try:
                    os.fsync(self._fd)
                except OSError:
                    pass

    def close(self) -> None:
        """Write the closing line, fsync, close. Idempotent."""
        if self._fd is None:
            return
        self.write({"kind": "log_end"})
        self._fsync_now()
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        self._sync.set()  # lets the fsync thread see the closed log and end
