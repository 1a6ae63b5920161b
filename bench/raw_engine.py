"""The engine's own rate, as a baseline: containers with our hardening, driven through the
backend's own client (the Docker backend's EngineClient), without any of pygent's machinery.

One run = create, attach, start, the first command (the container's own `echo hi`),
wait, remove: what a one-container-per-run design (epicbox) does, and the least
engine work a delegated task, or a sandbox opened, used once and closed, can cost.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor


def _body(backend, command: list[str]) -> dict:
    from pygent.sandbox import default_policy

    policy = default_policy()
    body = backend.create_body(backend.resolve_image("python"), policy, runtime=backend.chosen_runtime(policy))
    host = dict(body["HostConfig"], AutoRemove=False)  # removed explicitly: the remove is part of what is timed
    return dict(body, Entrypoint=command, Cmd=None, OpenStdin=False, StdinOnce=False, AttachStdin=False, HostConfig=host)


def run_once(client, body: dict) -> tuple[float, bool]:
    """(ms, the command's output was right) for one container's whole life."""
    from pygent.sandbox.docker.config import fresh_identity

    body, name = fresh_identity(body)
    t0 = time.perf_counter()
    cid = client.call("POST", "/containers/create", body, params={"name": name}, what="create")["Id"]
    try:
        sock, out = client.upgrade(f"/containers/{cid}/attach", params={"stdout": 1, "stderr": 1, "stream": 1})
        client.call("POST", f"/containers/{cid}/start", what="start")
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            out += chunk
        sock.close()
        client.call("POST", f"/containers/{cid}/wait", what="wait")
    finally:
        client.call("DELETE", f"/containers/{cid}", params={"force": 1, "v": 1}, what="remove")
    return (time.perf_counter() - t0) * 1e3, out.endswith(b"hi\n")


def raw_round(n: int, workers: int, command: list[str] | None = None) -> dict:
    """n container lives on `workers` threads: {"wall": s, "each": [ms], "ok": count}."""
    from pygent.sandbox.registry import get_backend

    backend = get_backend()
    body = _body(backend, command or ["/bin/sh", "-c", "echo hi"])
    each: list[float] = []
    ok = 0
    lock = threading.Lock()

    def one(_: int) -> None:
        nonlocal ok
        ms, good = run_once(backend.client, body)
        with lock:
            each.append(ms)
            ok += good

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as ex:
        list(ex.map(one, range(n)))
    return {"wall": time.perf_counter() - t0, "each": each, "ok": ok}
