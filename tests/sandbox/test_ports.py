"""Sandbox.expose() (issue 25): a host URL whose connections reach a loopback service inside;
the sandbox keeps no network interface.

Each test runs on both paths a connection can take: handed over (the server passes its
connected socket to the host: an engine on this machine, runc or crun) and streamed over
the sandbox's own channel (gVisor here; a remote engine too). The fixture checks that
each path really was the one taken.

Every image and runtime (Docker and Podman) runs the conformance check
`exposed_port_answers_over_the_channel` (test_self_check.py); here the depth:
HTTP keep-alive, many connections at once, streaming with bounded host memory,
a WebSocket upgrade, refused ports, closing, and bad arguments.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from pygent.errors import SandboxError
from pygent.sandbox import SandboxPolicy, open_sandbox

pytestmark = pytest.mark.docker

SERVICE = (Path(__file__).parents[1] / "support" / "port_service.py").read_text()
BLOCK = bytes(range(256)) * 256


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname, parts.port


@pytest.fixture(scope="module", params=["handed-over", "streamed"])
def served(request):
    runtime = "runsc" if request.param == "streamed" else None
    sb = open_sandbox("python", SandboxPolicy(timeout=60, runtime=runtime), pool=False)
    sb.write_file("/tmp/service.py", SERVICE)
    sb.exec_background("exec python3 /tmp/service.py 8080")
    fwd = sb.forward(8080)
    assert fwd.wait_answering(30), "the service inside never answered"
    yield sb, fwd.url
    counts = {"handed-over": fwd.mux.handed_over, "streamed": fwd.mux.streamed}
    sb.close()
    assert counts[request.param] >= 60 and sum(counts.values()) == counts[request.param], counts


def test_the_url_is_loopback_and_the_sandbox_has_no_network_interface(served):
    sb, url = served
    host, port = address(url)
    assert host == "127.0.0.1" and port > 0
    assert sb.expose(8080) == url  # the same port twice: the same listener
    names = set(sb.exec("tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '").stdout.decode().split())
    assert names == {"lo"}


def test_keep_alive_requests_share_one_connection(served):
    _, url = served
    with httpx.Client(base_url=url, timeout=10) as client:
        answers, ends = [], set()
        for _ in range(200):
            answers.append(client.get("/small"))
            ends.add(answers[-1].extensions["network_stream"].get_extra_info("client_addr"))
    assert all(a.status_code == 200 and a.content == b"ok" for a in answers)
    assert len(ends) == 1


def test_many_connections_at_once_each_get_their_own_bytes(served):
    _, url = served
    results: list[bytes | Exception] = []

    def fetch(n: int) -> None:
        try:
            results.append(httpx.get(f"{url}/bytes/{n}", timeout=30).content)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            results.append(exc)

    sizes = [1 + 37_000 * i for i in range(64)]
    threads = [threading.Thread(target=fetch, args=(n,)) for n in sizes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(len(r) if isinstance(r, bytes) else -1 for r in results) == sorted(sizes)
    assert all(r == (BLOCK * (len(r) // len(BLOCK) + 1))[: len(r)] for r in results)


def test_a_streamed_download_is_whole_and_host_memory_stays_bounded(served):
    _, url = served
    n = 64 << 20
    before = rss()
    peak = 0
    digest = hashlib.sha256()
    got = 0
    with httpx.stream("GET", f"{url}/bytes/{n}", timeout=60) as answer:
        for chunk in answer.iter_raw(1 << 16):
            digest.update(chunk)
            got += len(chunk)
            if got % (4 << 20) < len(chunk):
                peak = max(peak, rss() - before)
    expected = hashlib.sha256((BLOCK * (n // len(BLOCK)))).hexdigest()
    assert got == n and digest.hexdigest() == expected
    assert peak < 32 << 20, f"host memory grew by {peak >> 20} MiB while streaming 64 MiB"


def test_a_client_that_stops_reading_holds_at_most_a_window(served):
    _, url = served
    before = rss()
    with socket.create_connection(address(url), timeout=10) as conn:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        conn.sendall(b"GET /forever HTTP/1.1\r\nHost: x\r\n\r\n")
        conn.recv(1024)
        time.sleep(2)  # the service writes forever; nobody reads here
        grew = rss() - before
        assert grew < 16 << 20, f"host memory grew by {grew >> 20} MiB for a client that does not read"
        total = 0
        while total < 8 << 20:  # and the stream still flows once it reads again
            total += len(conn.recv(1 << 16))


def test_half_close_the_request_body_ends_and_the_answer_still_comes(served):
    sb, _ = served
    sb.write_file("/tmp/upper.py", "import socket\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
                  "s.bind(('127.0.0.1',8081));s.listen(8)\nwhile True:\n c,_=s.accept();d=b''\n"
                  " while (g:=c.recv(65536)): d+=g\n c.sendall(d.upper());c.close()\n")
    sb.exec_background("exec python3 /tmp/upper.py")
    fwd = sb.forward(8081)
    assert fwd.wait_answering(20)
    with socket.create_connection(address(fwd.url), timeout=10) as conn:
        conn.sendall(b"abc" * 1_000_000)  # 3 MB: past the 1 MiB window, so the server's credit must come back
        conn.shutdown(socket.SHUT_WR)
        answer = b"".join(iter(lambda: conn.recv(65536), b""))
    assert answer == b"ABC" * 1_000_000


def test_a_websocket_upgrade_carries_messages_both_ways(served):
    _, url = served
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection(address(url), timeout=10) as conn:
        conn.sendall(f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += conn.recv(1)
        assert head.startswith(b"HTTP/1.1 101")
        accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        assert b"Sec-WebSocket-Accept: " + accept in head
        for message in (b"hello", b"second message"):
            mask = os.urandom(4)
            conn.sendall(bytes([0x81, 0x80 | len(message)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(message)))
            echoed = conn.recv(2)
            assert echoed[0] == 0x81 and conn.recv(echoed[1]) == message


def test_a_port_nobody_listens_on_is_reset_at_once(served):
    sb, _ = served
    url = sb.expose(8099)
    # The reset may come before connect() returns: with a timeout Python connects non-blocking
    # and then reads SO_ERROR, which can already say ECONNRESET (CI met it). Either way: a reset.
    with pytest.raises((ConnectionResetError, BrokenPipeError)):
        with socket.create_connection(address(url), timeout=10) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            conn.recv(10)
    with pytest.raises(httpx.TransportError):
        httpx.get(url, timeout=10)


def test_closing_the_sandbox_closes_the_listener_and_its_connections():
    sb = open_sandbox("python", SandboxPolicy(timeout=60), pool=False)
    sb.write_file("/tmp/service.py", SERVICE)
    sb.exec_background("exec python3 /tmp/service.py 8080")
    fwd = sb.forward(8080)
    assert fwd.wait_answering(30)
    conn = socket.create_connection(address(fwd.url), timeout=10)
    conn.sendall(b"GET /forever HTTP/1.1\r\nHost: x\r\n\r\n")
    assert conn.recv(1024)
    sb.close()
    with pytest.raises((ConnectionResetError, AssertionError)):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # buffered bytes drain, then the reset
            if not conn.recv(1 << 16):
                raise AssertionError("closed")
    conn.close()
    with pytest.raises(OSError):
        socket.create_connection(address(fwd.url), timeout=5)
    with pytest.raises(SandboxError, match="closed"):
        sb.expose(8080)


@pytest.mark.parametrize("port", [0, -1, 65536, "80", True])
def test_a_port_outside_1_to_65535_is_a_clear_error(served, port):
    sb, _ = served
    with pytest.raises(SandboxError, match="port must be an integer from 1 to 65535"):
        sb.expose(port)


@pytest.mark.parametrize("port", [1, 65535])
def test_the_lowest_and_highest_ports_are_accepted(served, port):
    sb, _ = served
    assert address(sb.expose(port))[1] > 0


def test_a_host_port_in_use_is_a_clear_error_and_a_free_one_is_used(served):
    sb, _ = served
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    with taken:
        with pytest.raises(SandboxError, match="pick another host port"):
            sb.expose(8080, host_port=taken.getsockname()[1])
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    wanted = free.getsockname()[1]
    free.close()
    url = sb.expose(8080, host_port=wanted)
    assert address(url)[1] == wanted
    assert httpx.get(f"{url}/small", timeout=10).content == b"ok"
