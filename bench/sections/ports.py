"""Section 11: a sandbox's port from the host, `Sandbox.expose()` against `docker run -p`.

Same image, same in-container service (tests/support/port_service.py), same
client in this process. Docker's side gives the container a network and goes
through docker-proxy (the engine's loopback publish); ours keeps the sandbox
without a network and carries each connection over its command channel.
Targets (issue 25): a 100 MB download at ≥ 0.5× docker's throughput; 1,000
small keep-alive requests at p50 ≤ 2× docker's; host memory bounded while
streaming (the RSS growth of this process during our download).
"""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path

from ..context import PY_IMAGE, Ctx
from ..core import Row, Section, Target, rss_kb

SERVICE = (Path(__file__).resolve().parents[2] / "tests" / "support" / "port_service.py").read_text()
SIZE = 100_000_000


def _download(host: str, port: int, peak: list[int] | None = None) -> float:
    """MB/s of one SIZE-byte GET (on a fresh connection)."""
    conn = http.client.HTTPConnection(host, port, timeout=60)
    t0 = time.perf_counter()
    conn.request("GET", f"/bytes/{SIZE}")
    answer = conn.getresponse()
    got = 0
    base = rss_kb()
    while True:
        chunk = answer.read(1 << 18)
        if not chunk:
            break
        got += len(chunk)
        if peak is not None and got % (8 << 20) < len(chunk):
            peak.append(rss_kb() - base)
    seconds = time.perf_counter() - t0
    conn.close()
    if got != SIZE:
        raise RuntimeError(f"downloaded {got} of {SIZE} bytes")
    return SIZE / seconds / 1e6


def _small(host: str, port: int, n: int) -> list[float]:
    """ms per GET /small, n of them on one keep-alive connection (after 20 warm-ups)."""
    conn = http.client.HTTPConnection(host, port, timeout=30)
    out = []
    for i in range(n + 20):
        t0 = time.perf_counter()
        conn.request("GET", "/small")
        body = conn.getresponse().read()
        if body != b"ok":
            raise RuntimeError(f"unexpected answer {body!r}")
        if i >= 20:
            out.append((time.perf_counter() - t0) * 1e3)
    conn.close()
    return out


def _wait(host: str, port: int, seconds: float = 30.0) -> None:
    end = time.monotonic() + seconds
    while True:
        try:
            conn = http.client.HTTPConnection(host, port, timeout=5)
            conn.request("GET", "/small")
            if conn.getresponse().read() == b"ok":
                conn.close()
                return
        except OSError:
            pass
        if time.monotonic() > end:
            raise RuntimeError(f"the service on {host}:{port} never answered")
        time.sleep(0.1)


def run(ctx: Ctx, section: Section) -> None:
    from pygent.sandbox import SandboxPolicy, lifecycle, open_sandbox
    from pygent.sandbox.engine import get_client

    rounds = ctx.n(3, 1)
    small_n = 1000 if rounds > 1 else 100
    client = get_client()
    # A network of our own: the engine's default bridge may be unusable (docker0 missing
    # on this machine), and a user-defined bridge is what `docker run -p` users have anyway.
    net = client.networks.create(f"pygent-bench-ports-{time.time_ns()}", labels=lifecycle.owner_labels())
    docker_box = client.containers.run(
        PY_IMAGE, ["python3", "-c", SERVICE, "8080", "0.0.0.0"], detach=True, auto_remove=True, network=net.name,
        labels=lifecycle.owner_labels(), user="1000:1000", read_only=True, cap_drop=["ALL"],
        ports={"8080/tcp": ("127.0.0.1", None)},
    )
    sb = open_sandbox("python", SandboxPolicy(timeout=600), pool=False)
    try:
        docker_box.reload()
        dport = int(docker_box.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"])
        _wait("127.0.0.1", dport)
        sb.write_file("/tmp/service.py", SERVICE)
        sb.exec_background("exec python3 /tmp/service.py 8080")
        ours = sb.forward(8080)
        oport = ours.host_port
        _wait("127.0.0.1", oport)
        mbps: dict[str, list[float]] = {"docker": [], "ours": []}
        peak: list[int] = []
        for _ in range(rounds):  # alternated: the machine is shared
            mbps["docker"].append(_download("127.0.0.1", dport))
            mbps["ours"].append(_download("127.0.0.1", oport, peak))
        small = {"docker": _small("127.0.0.1", dport, small_n), "ours": _small("127.0.0.1", oport, small_n)}
    finally:
        sb.close()
        try:
            docker_box.remove(force=True)
        except Exception:
            pass
        try:
            net.remove()
        except Exception:
            pass

    p50 = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    section.add(Row("download_docker", "100 MB GET via docker run -p (network + docker-proxy)", mbps["docker"], unit="MB/s"))
    down = Row("download_expose", "100 MB GET via Sandbox.expose() (no network; the channel)", mbps["ours"], unit="MB/s",
               targets=[Target("ratio_p50", ">=", 0.5, unit="x")])
    down.extra["ratio_p50"] = round(p50(mbps["ours"]) / p50(mbps["docker"]), 3)
    section.add(down)
    section.add(Row("small_docker", f"{small_n} small GETs on keep-alive via docker run -p", small["docker"]))
    lat = Row("small_expose", f"{small_n} small GETs on keep-alive via Sandbox.expose()", small["ours"],
              vs={"÷ docker": "small_docker"}, targets=[Target("ratio_p50", "<=", 2.0, unit="x")])
    lat.extra["ratio_p50"] = round(p50(small["ours"]) / p50(small["docker"]), 3)
    section.add(lat)
    mem = Row("stream_rss", "  ↳ host RSS growth while streaming 100 MB via expose()", [], unit="MiB",
              targets=[Target("peak_mib", "<=", 64, unit="MiB")])
    mem.extra["peak_mib"] = round(max(peak or [0]) / 1024, 1)
    section.add(mem)
    section.notes.append(json.dumps({"service": "tests/support/port_service.py (ThreadingHTTPServer, 64 KiB writes)",
                                     "client": "http.client in the bench process", "rounds": rounds}))
