"""Paused sandboxes go with their owner, even when it is SIGKILLed.

Why a separate process: a running sandbox goes when its owner dies because its
server reads EOF on the attach stream; a paused (frozen) server reads nothing,
so the container would stay paused forever. On the first pause a process
starts one small guard per engine (`python -m pygent.sandbox.docker.pause_guard HOST`,
its own session, so a Ctrl-C of the owner's terminal does not reach it) and
tells it on a pipe which sandboxes are paused ("+ id" / "- id" lines). When the
pipe reaches EOF (the owner exited or was killed), the guard thaws and removes
the ones still paused, then exits. Stdlib and the engine client only.
"""

from __future__ import annotations

import subprocess
import sys
import threading

_guards: dict[str, subprocess.Popen] = {}
_where: dict[str, str] = {}  # sandbox id -> engine host
_lock = threading.Lock()


def watch(host: str, cid: str) -> None:
    """Before pausing `cid`: make sure the guard for `host` runs and knows it. Never raises
    for the guard's own sake (a pause still works; gc is the last net)."""
    with _lock:
        guard = _guards.get(host)
        if guard is None or guard.poll() is not None:
            try:
                guard = subprocess.Popen(
                    [sys.executable, "-m", "pygent.sandbox.docker.pause_guard", host],
                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    start_new_session=True, close_fds=True,
                )
            except OSError:
                return
            _guards[host] = guard
        _where[cid] = host
        _tell(guard, f"+ {cid}\n")


def unwatch(cid: str) -> None:
    """`cid` runs again (or is removed): the guard forgets it."""
    with _lock:
        host = _where.pop(cid, None)
        guard = _guards.get(host) if host else None
        if guard is not None:
            _tell(guard, f"- {cid}\n")


def _tell(guard: subprocess.Popen, line: str) -> None:
    try:
        assert guard.stdin is not None
        guard.stdin.write(line.encode())
        guard.stdin.flush()
    except (OSError, ValueError):
        pass


def main(host: str) -> None:
    """The guard: follow the pipe; at EOF thaw and remove what is still paused."""
    import signal

    from .client import EngineClient

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    paused: set[str] = set()
    for raw in sys.stdin.buffer:
        op, _, cid = raw.decode("ascii", "replace").strip().partition(" ")
        if op == "+":
            paused.add(cid)
        elif op == "-":
            paused.discard(cid)
    client = EngineClient(host)
    for cid in paused:
        for method, path, params in (("POST", f"/containers/{cid}/unpause", None),
                                     ("DELETE", f"/containers/{cid}", {"force": 1, "v": 1})):
            try:
                client.call(method, path, params=params, timeout=30)
            except Exception:
                pass  # gone already, or the engine is down: gc reclaims it by label


if __name__ == "__main__":
    main(sys.argv[1])
