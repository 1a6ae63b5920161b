"""Section 11: a sandbox's port from the host, `Sandbox.expose()` against `docker run -p`.

Same image, same in-container service (tests/support/port_service.py), same
client in this process. Docker's side gives the container a network and goes
through docker-proxy (the engine's loopback publish); ours keeps the sandbox
without a network. On an engine on this machine the command server hands each
connection's socket to the host (sandbox/handoff.py); elsewhere (gVisor, a
remote engine) the connection is streamed over the command channel, measured
here too, on the same runtime, with the handoff turned off.
Targets (issue 25): a 100 MB download at ≥ 0.5× docker's throughput; 1,000
small keep-alive requests at p50 ≤ 2× docker's; host memory bounded while
streaming (the RSS growth of this process during our download).

Beside them, the attach stream with nothing of ours on it (a container writing
to its stdout, this process reading the stream): what containerd's shim and
dockerd cost on their own, so the ceiling of any forwarder over the channel.
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


#: The attach stream alone, no pygent: echo lines until "go", then SIZE bytes to stdout in 64 KiB writes.
_ATTACH_PROBE = (
    "import os, sys\nwhile True:\n line = sys.stdin.buffer.readline()\n if line in (b'go\\n', b''): break\n"
    " os.write(1, line)\nb = bytes(65536)\nn = %d\nwhile n > 0:\n os.write(1, b[:n])\n n -= 65536\n" % SIZE
)


def _attach_floor(n: int, rounds: int) -> tuple[list[float], list[float]]:
    """The engine's attach stream with nothing of ours on it: (ms per 16-byte round trip, MB/s of
    one SIZE-byte read), from a hardened container (the sandbox's create body, no network) whose
    main process is _ATTACH_PROBE, read by this process with recv_into into one buffer.

    Why: every exposed connection rides this stream (stdout through containerd's shim and
    dockerd), so this is the most any forwarder over the sandbox's channel can reach here."""
    from pygent.sandbox import default_policy
    from pygent.sandbox.docker.config import fresh_identity
    from pygent.sandbox.docker.sandbox import force_remove
    from pygent.sandbox.registry import get_backend

    backend = get_backend()
    policy = default_policy()
    hardened = backend.create_body(backend.resolve_image("python"), policy, runtime=backend.chosen_runtime(policy))
    body, name = fresh_identity(dict(hardened, Entrypoint=["python3", "-c", _ATTACH_PROBE], Cmd=None))
    client = backend.client
    cid = client.call("POST", "/containers/create", body, params={"name": name}, what="create")["Id"]
    rtts: list[float] = []
    rates: list[float] = []
    try:
        sock, _ = client.upgrade(f"/containers/{cid}/attach", params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        client.call("POST", f"/containers/{cid}/start", what="start")
        line = b"0123456789abcde\n"
        buf = memoryview(bytearray(1 << 20))
        for i in range(n + 20):
            t0 = time.perf_counter()
            sock.sendall(line)
            got = 0
            while got < 8 + len(line):  # docker's 8-byte header, then the line
                got += sock.recv_into(buf)
            if i >= 20:
                rtts.append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        sock.sendall(b"go\n")
        got = 0
        while True:
            k = sock.recv_into(buf)
            if not k:
                break
            got += k
        seconds = time.perf_counter() - t0
        sock.close()
        if got < SIZE:
            raise RuntimeError(f"the attach stream carried {got} of {SIZE} bytes")
        rates.append(SIZE / seconds / 1e6)
    finally:
        force_remove(client, cid)
    return rtts, rates


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
    streamed_sb = open_sandbox("python", SandboxPolicy(timeout=600), pool=False)
    try:
        docker_box.reload()
        dport = int(docker_box.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"])
        _wait("127.0.0.1", dport)
        sb.write_file("/tmp/service.py", SERVICE)
        sb.exec_background("exec python3 /tmp/service.py 8080")
        ours = sb.forward(8080)
        oport = ours.host_port
        _wait("127.0.0.1", oport)
        streamed_sb.write_file("/tmp/service.py", SERVICE)
        streamed_sb.exec_background("exec python3 /tmp/service.py 8080")
        from pygent.sandbox.forward import StreamMux

        streamed_sb._mux = StreamMux(streamed_sb._channel)  # no handoff: every connection streamed
        sport = streamed_sb.forward(8080).host_port
        _wait("127.0.0.1", sport)
        mbps: dict[str, list[float]] = {"docker": [], "ours": [], "streamed": []}
        peak: list[int] = []
        for _ in range(rounds):  # alternated: the machine is shared
            mbps["docker"].append(_download("127.0.0.1", dport))
            mbps["ours"].append(_download("127.0.0.1", oport, peak))
            mbps["streamed"].append(_download("127.0.0.1", sport))
        small = {"docker": _small("127.0.0.1", dport, small_n), "ours": _small("127.0.0.1", oport, small_n),
                 "streamed": _small("127.0.0.1", sport, small_n)}
        handed = ours.mux.handed_over
        rtt, floor = [], []
        for _ in range(rounds):
            r, f = _attach_floor(small_n if not rtt else 0, 1)
            rtt, floor = rtt or r, floor + f
    finally:
        sb.close()
        streamed_sb.close()
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
    down = Row("download_expose", "100 MB GET via Sandbox.expose() (no network; socket handed over)", mbps["ours"],
               unit="MB/s", targets=[Target("ratio_p50", ">=", 0.5, unit="x")])
    down.extra["ratio_p50"] = round(p50(mbps["ours"]) / p50(mbps["docker"]), 3)
    section.add(down)
    streamed = Row("download_streamed", "  ↳ the same, streamed on the channel (gVisor, a remote engine)",
                   mbps["streamed"], unit="MB/s")
    streamed.extra["ratio_p50"] = round(p50(mbps["streamed"]) / p50(mbps["docker"]), 3)
    section.add(streamed)
    section.add(Row("small_docker", f"{small_n} small GETs on keep-alive via docker run -p", small["docker"]))
    lat = Row("small_expose", f"{small_n} small GETs on keep-alive via Sandbox.expose()", small["ours"],
              vs={"÷ docker": "small_docker"}, targets=[Target("ratio_p50", "<=", 2.0, unit="x")])
    lat.extra["ratio_p50"] = round(p50(small["ours"]) / p50(small["docker"]), 3)
    section.add(lat)
    slat = Row("small_streamed", "  ↳ the same, streamed on the channel", small["streamed"], vs={"÷ docker": "small_docker"})
    slat.extra["ratio_p50"] = round(p50(small["streamed"]) / p50(small["docker"]), 3)
    section.add(slat)
    ceil = Row("download_attach", "  ↳ the attach stream alone: 100 MB from a container's stdout, no pygent (the ceiling)",
               floor, unit="MB/s")
    ceil.extra["ratio_p50"] = round(p50(floor) / p50(mbps["docker"]), 3)
    section.add(ceil)
    section.add(Row("rtt_attach", "  ↳ the attach stream alone: a 16-byte line there and back (the floor)", rtt))
    mem = Row("stream_rss", "  ↳ host RSS growth while streaming 100 MB via expose()", [], unit="MiB",
              targets=[Target("peak_mib", "<=", 64, unit="MiB")])
    mem.extra["peak_mib"] = round(max(peak or [0]) / 1024, 1)
    section.add(mem)
    section.notes.append(json.dumps({"service": "tests/support/port_service.py (ThreadingHTTPServer, 64 KiB writes)",
                                     "client": "http.client in the bench process", "rounds": rounds,
                                     "connections handed over": handed}))
