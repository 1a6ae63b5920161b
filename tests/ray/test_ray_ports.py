"""expose() through the Ray backend (ray/ports.py): the listener is the driver's, each connection
a tunnel to the node agent on its direct channel; the node opens no port for it.

Run as users do: `pygent-runner exec -p` with PYGENT_BACKEND=ray, and the Python API. The
shipped self_check's port check (reset when nobody listens, the listener gone with the sandbox)
runs through Ray in test_ray_backend.py."""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from pygent.sandbox import SandboxPolicy
from pygent.sandbox.self_check import ECHO_SERVICE, TOOLING_PYTHON

pytestmark = [pytest.mark.docker, pytest.mark.ray]

SERVE = "cd /tmp && echo served-from-a-ray-node > index.html && exec python3 -m http.server 8000 --bind 127.0.0.1"


def _listening_inodes(pid: int) -> set[int]:
    """Inodes of the TCP sockets process `pid` listens on (/proc/net/tcp{,6} state 0A)."""
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for row in f.readlines()[1:]:
                cols = row.split()
                if cols[3] == "0A":
                    listening.add(int(cols[9]))
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            held.add(int(target[8:-1]))
    return listening & held


def test_exec_publish_through_ray_serves_the_driver_from_the_node(ray_env):
    proc = subprocess.Popen([sys.executable, "-m", "pygent.cli", "exec", "-p", "8000", "--timeout", "90", "--", SERVE],
                            env=ray_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline, url, line = time.monotonic() + 90, None, b""
        while time.monotonic() < deadline and url is None:
            line = proc.stderr.readline()
            found = re.search(rb"port 8000 is answering at (http://127\.0\.0\.1:\d+)", line)
            url = found.group(1).decode() if found else None
            if not line and proc.poll() is not None:
                break
        assert url, f"no URL on stderr (last line {line!r})"
        assert urllib.request.urlopen(f"{url}/index.html", timeout=10).read() == b"served-from-a-ray-node\n"
    finally:
        proc.terminate()
        proc.wait(30)
    port = int(url.rsplit(":", 1)[1])
    with pytest.raises(OSError):  # the sandbox is gone, and the driver's listener with it
        socket.create_connection(("127.0.0.1", port), timeout=5)


def test_bytes_both_ways_with_half_close_and_no_listener_on_the_node(ray_backend):
    """4 MiB up, the client's half-close passed on, 4 MiB back; several connections at once;
    the node agent holds the same listening sockets before and after (tunnels, not ports)."""
    from concurrent.futures import ThreadPoolExecutor

    with ray_backend.create("python", SandboxPolicy(), labels={"zone": "b"}) as sb:
        agent_pid = ray_backend.call(sb.node_id, "hello")["pid"]
        before = _listening_inodes(agent_pid)
        sb.write_file("/tmp/echo_service.py", ECHO_SERVICE)
        sb.exec_background(f"exec {TOOLING_PYTHON} /tmp/echo_service.py 7007")
        fwd = sb.forward(7007)
        assert fwd.url.startswith("http://127.0.0.1:") and sb.expose(7007) == fwd.url
        assert fwd.wait_answering(30)
        address = ("127.0.0.1", fwd.host_port)

        def roundtrip(seed: int) -> bytes:
            body = hashlib.sha256(str(seed).encode()).hexdigest().encode() * (4 << 20 >> 6)
            with socket.create_connection(address, timeout=30) as conn:
                conn.sendall(body)
                conn.shutdown(socket.SHUT_WR)
                got = b"".join(iter(lambda: conn.recv(1 << 16), b""))
            assert len(got) == len(body) == 4 << 20
            return hashlib.sha256(got).digest() if got == body.upper() else b"mismatch"

        with ThreadPoolExecutor(4) as pool:
            digests = list(pool.map(roundtrip, range(4)))
        assert b"mismatch" not in digests and len(set(digests)) == 4
        assert _listening_inodes(agent_pid) == before


def test_a_tunnel_without_the_agents_secret_gets_nothing(ray_backend):
    """The tunnel is a frame on the direct channel: before the secret matched, a TUNNEL request
    for a real sandbox and port is dropped unanswered, as a call is."""
    from pygent.sandbox.ray.direct import TUNNEL, _send_frame

    with ray_backend.create("python", SandboxPolicy()) as sb:
        host, port, secret = ray_backend.call(sb.node_id, "hello")["direct"]
        sb.write_file("/tmp/echo_service.py", ECHO_SERVICE)
        sb.exec_background(f"exec {TOOLING_PYTHON} /tmp/echo_service.py 7007")
        assert sb.forward(7007).wait_answering(30)
        with socket.create_connection((host, port), timeout=10) as conn:
            try:
                conn.sendall(bytes(32))  # a wrong secret
                _send_frame(conn, TUNNEL + f"{sb.id} 7007".encode())
                conn.sendall(b"hello")
                conn.shutdown(socket.SHUT_WR)
                got = conn.recv(100)
            except OSError:  # reset, or a broken pipe: dropped either way
                got = b""
        assert got == b""
        with socket.create_connection(("127.0.0.1", sb.forward(7007).host_port), timeout=10) as conn:
            conn.sendall(b"still served")
            conn.shutdown(socket.SHUT_WR)
            assert b"".join(iter(lambda: conn.recv(100), b"")) == b"STILL SERVED"
