"""Measurements that need a clean process (RSS): `python -m bench.child KIND ARGS...`.

Each prints one JSON line on stdout. The parent (bench.context.Ctx.child)
collects the session label so the leak check covers these processes too.

Kinds:
  output IMAGE BYTES REPEATS   our sandbox exec of `head -c BYTES /dev/zero`
  exec_run BYTES REPEATS       docker-py exec_run(demux=True) of the same, on a sandbox container
  host BYTES REPEATS           host subprocess.run(capture_output=True) of the same
  memory IMAGE COUNT           open COUNT sandboxes (pool=False), RSS / fds / threads per sandbox
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from typing import Any, Callable

from .core import proc_status as status


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the peak is this measurement's."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def session() -> str:
    from pygent.sandbox import lifecycle

    return lifecycle.SESSION_ID


def _cmd(nbytes: int) -> str:
    return f"head -c {nbytes} /dev/zero"


def _measure(run: Callable[[], Any], summarize: Callable[[Any], dict], repeats: int) -> dict:
    """Time `run` `repeats` times in an RSS window; what `summarize` takes from the last result.

    Results are dropped before the next run and before RSS is read again, so the
    figures show what the way of running keeps, not what this loop holds.
    """
    gc.collect()
    before = status("VmRSS")
    peak_ok = reset_peak()
    times, summary = [], {}
    for _ in range(repeats):
        t = time.perf_counter()
        result = run()
        times.append((time.perf_counter() - t) * 1e3)
        summary = summarize(result)
        del result
    return {
        "times_ms": times, "rss_before_kb": before, "rss_after_kb": status("VmRSS"),
        "peak_kb": status("VmHWM") if peak_ok else None, **summary,
    }


def output(image: str, nbytes: int, repeats: int) -> dict:
    from pygent.sandbox import open_sandbox
    from pygent.sandbox.result import cut_marker

    sb = open_sandbox(image, pool=False)
    try:
        sb.exec("true")
        sb.exec(_cmd(1 << 20))  # warm every buffer once

        def summarize(r: Any) -> dict:
            cut = r.stdout_truncated
            return {
                "exit_code": r.exit_code, "kept_bytes": len(r.stdout), "truncated_bytes": cut, "timed_out": r.timed_out,
                "complete": len(r.stdout) - (len(cut_marker(cut)) if cut else 0) + cut == nbytes,
            }

        return {**_measure(lambda: sb.exec(_cmd(nbytes)), summarize, repeats), "max_output": sb.policy.max_output}
    finally:
        sb.close()


def exec_run(nbytes: int, repeats: int) -> dict:
    from pygent.sandbox import open_sandbox
    from pygent.sandbox.engine import get_client

    sb = open_sandbox("python", pool=False)
    try:
        container = get_client().containers.get(sb.id)
        container.exec_run(["head", "-c", str(1 << 20), "/dev/zero"], demux=True)
        return _measure(
            lambda: container.exec_run(["head", "-c", str(nbytes), "/dev/zero"], demux=True),
            lambda res: _kept(len(res.output[0] or b""), nbytes), repeats,
        )
    finally:
        sb.close()


def host(nbytes: int, repeats: int) -> dict:
    subprocess.run(["head", "-c", str(1 << 20), "/dev/zero"], capture_output=True)
    return _measure(
        lambda: subprocess.run(["bash", "-c", _cmd(nbytes)], capture_output=True),
        lambda res: _kept(len(res.stdout), nbytes), repeats,
    )


def _kept(got: int, nbytes: int) -> dict:
    return {"kept_bytes": got, "complete": got == nbytes}


def memory(image: str, count: int) -> dict:
    from pygent.sandbox import open_sandbox

    # Warm-up: the docker client, imports, the gc sweep thread, lifecycle hooks.
    with open_sandbox(image, pool=False) as sb:
        sb.exec("true")
    time.sleep(0.2)
    gc.collect()
    before = status("VmRSS")
    fds0 = len(os.listdir("/proc/self/fd"))
    threads0 = status("Threads")
    boxes, open_ms = [], []
    try:
        for _ in range(count):
            t = time.perf_counter()
            boxes.append(open_sandbox(image, pool=False))
            open_ms.append((time.perf_counter() - t) * 1e3)
        for sb in boxes:  # every sandbox used once, as an agent would
            sb.exec("true")
        gc.collect()
        after = status("VmRSS")
        fds1 = len(os.listdir("/proc/self/fd"))
        threads1 = status("Threads")
    finally:
        t = time.perf_counter()
        for sb in boxes:
            sb.close()
        close_s = time.perf_counter() - t
    gc.collect()
    return {
        "count": count, "open_ms": open_ms, "rss_before_kb": before, "rss_after_kb": after,
        "rss_after_close_kb": status("VmRSS"), "fds_before": fds0, "fds_after": fds1,
        "threads_before": threads0, "threads_after": threads1, "close_all_s": close_s,
    }


def main(argv: list[str]) -> int:
    kind, args = argv[0], argv[1:]
    if kind == "output":
        report = output(args[0], int(args[1]), int(args[2]))
    elif kind == "exec_run":
        report = exec_run(int(args[0]), int(args[1]))
    elif kind == "host":
        report = host(int(args[0]), int(args[1]))
    elif kind == "memory":
        report = memory(args[0], int(args[1]))
    else:
        raise SystemExit(f"unknown kind {kind!r}")
    report["session"] = session() if kind != "host" else None
    report["pid"] = os.getpid()
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
