"""The engine's own rate, as a baseline: containers with our hardening, driven through the
backend's own client (docker-py), without any of pygent's machinery.

One run = create, attach, start, the first command (the container's own `echo hi`),
wait, remove: what a one-container-per-run design (epicbox) does, and the least
engine work a delegated task or a sandbox opened, used once and closed can cost.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor


def _config(api, command: list[str]) -> dict:
    from pygent.sandbox import default_policy
    from pygent.sandbox.docker import chosen_runtime, container_config
    from pygent.sandbox.engine import get_client
    from pygent.sandbox.images import resolve_image

    policy = default_policy()
    create, host = container_config(resolve_image("python"), policy, None, False, chosen_runtime(policy, get_client()))
    host["auto_remove"] = False  # removed explicitly: the remove is part of what is timed
    create.update(command=command, stdin_open=False)
    return api.create_container_config(host_config=api.create_host_config(**host), **create)


def run_once(api, config: dict) -> tuple[float, bool]:
    """(ms, the command's output was right) for one container's whole life."""
    t0 = time.perf_counter()
    cid = api.create_container_from_config(config, None)["Id"]
    try:
        sock = api.attach_socket(cid, params={"stdout": 1, "stderr": 1, "stream": 1})
        raw = getattr(sock, "_sock", sock)
        api.start(cid)
        out = b""
        while True:
            chunk = raw.recv(65536)
            if not chunk:
                break
            out += chunk
        sock.close()
        api.wait(cid)
    finally:
        api.remove_container(cid, v=True, force=True)
    return (time.perf_counter() - t0) * 1e3, out.endswith(b"hi\n")


def raw_round(n: int, workers: int, command: list[str] | None = None) -> dict:
    """n container lives on `workers` threads: {"wall": s, "each": [ms], "ok": count}."""
    from pygent.sandbox.engine import get_client

    api = get_client().api
    config = _config(api, command or ["bash", "-c", "echo hi"])
    each: list[float] = []
    ok = 0
    lock = threading.Lock()

    def one(_: int) -> None:
        nonlocal ok
        ms, good = run_once(api, config)
        with lock:
            each.append(ms)
            ok += good

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as ex:
        list(ex.map(one, range(n)))
    return {"wall": time.perf_counter() - t0, "each": each, "ok": ok}
