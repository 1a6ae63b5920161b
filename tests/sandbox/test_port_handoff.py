"""The socket handoff of an exposed port (issue 25, handoff.py): what a sandbox can and cannot do with it.

The command server hands the host its connected socket over a unix socket in a
directory every sandbox of a local engine mounts read-only. A command in the
sandbox runs as the same user as the server, so here it plays the hostile
server: it knows the host's socket, and sends what a real server never would.
The host must hand nothing on, keep no fd of it, and keep serving the real
connections. Where the handoff cannot be had, the connection is streamed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from pygent.sandbox import SandboxPolicy, handoff, open_sandbox

pytestmark = pytest.mark.docker

SERVICE = (Path(__file__).parents[1] / "support" / "port_service.py").read_text()
RUNNER = Path(__file__).parents[2] / "runner"

HOSTILE = textwrap.dedent("""
    import os, socket, sys, time
    path = "/run/pygent/" + sys.argv[1]
    def send(data, fds=()):
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        socket.send_fds(s, [data], list(fds)) if fds else s.sendall(data)
        return s
    a, b = socket.socketpair()
    f = open("/etc/hostname")
    kept = [
        send(os.urandom(16), [a.fileno()]),  # a guessed token, with a socket
        send(b"x" * 16),  # no socket at all
        send(os.urandom(16), [f.fileno()]),  # a file, not a socket
        send(os.urandom(16), [a.fileno(), b.fileno(), f.fileno()]),  # more than one fd
        send(os.urandom(4), [a.fileno()]),  # a short token
    ]
    idle = []
    for _ in range(200):  # connections that never say anything
        try:
            s = socket.socket(socket.AF_UNIX); s.settimeout(1); s.connect(path); idle.append(s)
        except OSError:
            pass
    print("sent", len(idle), flush=True)
    time.sleep(float(sys.argv[2]))
""")


def host_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def served():
    sb = open_sandbox("python", SandboxPolicy(timeout=60), pool=False)
    sb.write_file("/tmp/service.py", SERVICE)
    sb.exec_background("exec python3 /tmp/service.py 8080")
    fwd = sb.forward(8080)
    assert fwd.wait_answering(30), "the service inside never answered"
    yield sb, fwd
    sb.close()


def test_the_directory_cannot_be_listed_or_written_from_inside(served):
    sb, fwd = served
    name = fwd.mux.handoff.name
    res = sb.exec(f"ls /run/pygent; touch /run/pygent/x; rm -f /run/pygent/{name}; ln -s /etc /run/pygent/y; "
                  f"test -S /run/pygent/{name} && echo still there")
    err = res.stderr.decode()
    assert "Permission denied" in err and err.count("Read-only file system") == 3, err
    assert res.stdout.decode().strip() == "still there"
    where = Path(fwd.mux.handoff.path).parent
    assert oct(where.stat().st_mode & 0o777) == "0o711" and sorted(p.name for p in where.iterdir() if p.name == name) == [name]


def test_a_hostile_handshake_is_dropped_and_real_connections_go_on(served):
    sb, fwd = served
    listener = fwd.mux.handoff
    assert httpx.get(f"{fwd.url}/small", timeout=10).content == b"ok"  # warm: threads and fds of a first use made
    before, handed = host_fds(), fwd.mux.handed_over
    sb.write_file("/tmp/hostile.py", HOSTILE)
    sb.exec_background(f"exec python3 /tmp/hostile.py {listener.name} 4 > /tmp/hostile.out 2>&1")
    deadline = time.monotonic() + 20
    while b"sent" not in sb.exec("cat /tmp/hostile.out").stdout and time.monotonic() < deadline:
        time.sleep(0.1)
    said = sb.exec("cat /tmp/hostile.out").stdout.decode()
    assert said.startswith("sent"), said
    # While the idle handshakes are held, real connections are still handed over and answered.
    with httpx.Client(base_url=fwd.url, timeout=10) as client:
        for i in range(5):
            assert client.get(f"/bytes/{1000 + i}").content[:3] == bytes([0, 1, 2])
    for _ in range(5):
        assert httpx.get(f"{fwd.url}/small", timeout=10).content == b"ok"
    assert fwd.mux.handed_over == handed + 6 and fwd.mux.streamed == 0
    assert not listener.waiting, "a token was left waiting"
    deadline = time.monotonic() + 15  # the hostile process ends (4 s); pending handshakes time out (2 s)
    while host_fds() > before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert host_fds() <= before, f"the host kept {host_fds() - before} fds of the hostile handshakes"


def _in_subprocess(code: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    full = dict(os.environ, PYTHONPATH=str(RUNNER), PYGENT_POOL_SIZE="0", **env)
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=timeout)


EXPOSE = textwrap.dedent("""
    import httpx, json
    from pygent.sandbox import open_sandbox
    with open_sandbox("minimal", pool=False) as sb:
        py = "/opt/pygent/lib/ld.so --library-path /opt/pygent/lib /opt/pygent/bin/python3"
        sb.exec_background(f"cd /tmp && echo served > index.html && exec {py} -m http.server 8000")
        fwd = sb.forward(8000)
        assert fwd.wait_answering(20)
        body = httpx.get(fwd.url + "/index.html", timeout=10).text
        print(json.dumps({"body": body, "handed": fwd.mux.handed_over, "streamed": fwd.mux.streamed,
                          "mounted": any(m["Target"] == "/run/pygent" for m in sb.create_config["HostConfig"]["Mounts"])}))
""")


def test_a_directory_that_is_not_the_users_own_is_never_used(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "pygent-runner-ports").symlink_to(elsewhere)  # planted where the directory would be
    res = _in_subprocess(EXPOSE, {"XDG_RUNTIME_DIR": str(tmp_path)})
    assert res.returncode == 0, res.stderr[-3000:]
    out = __import__("json").loads(res.stdout.strip().splitlines()[-1])
    assert out == {"body": "served\n", "handed": 0, "streamed": 1, "mounted": False}
    assert list(elsewhere.iterdir()) == []


def test_an_engine_that_cannot_see_the_directory_still_starts_the_sandbox_and_streams(tmp_path):
    """The client in a mount namespace of its own, its runtime directory on a tmpfs the engine
    cannot see: as an engine socket forwarded from another machine, or a VM's file sharing."""
    private = tmp_path / "private"
    private.mkdir()
    script = tmp_path / "expose.py"
    script.write_text(EXPOSE)
    cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
           f"mount -t tmpfs none {private} && exec {sys.executable} {script}"]
    full = dict(os.environ, PYTHONPATH=str(RUNNER), PYGENT_POOL_SIZE="0", XDG_RUNTIME_DIR=str(private))
    res = subprocess.run(cmd, env=full, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    out = __import__("json").loads(res.stdout.strip().splitlines()[-1])
    assert out == {"body": "served\n", "handed": 0, "streamed": 1, "mounted": False}


def test_the_socket_of_a_killed_process_is_swept_by_the_next():
    tmp_path = Path(tempfile.mkdtemp(prefix="hd-", dir="/tmp"))  # short: a unix socket's path has 107 bytes at most
    make = "from pygent.sandbox import handoff; import sys, time; l = handoff.listener(); print(l.path, flush=True); time.sleep(60)"
    env = dict(os.environ, PYTHONPATH=str(RUNNER), XDG_RUNTIME_DIR=str(tmp_path))
    first = subprocess.Popen([sys.executable, "-c", make], env=env, stdout=subprocess.PIPE, text=True)
    try:
        path = Path(first.stdout.readline().strip())
        assert path.exists()
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert path.exists()  # SIGKILL runs no atexit
    res = _in_subprocess("from pygent.sandbox import handoff; print(handoff.listener().path)", {"XDG_RUNTIME_DIR": str(tmp_path)})
    assert res.returncode == 0, res.stderr
    assert not path.exists() and Path(res.stdout.strip()).parent == path.parent
    assert not Path(res.stdout.strip()).exists()  # and its own is removed as it exits
    assert handoff.directory() != str(path.parent)  # this process's directory is elsewhere: untouched
    shutil.rmtree(tmp_path)
