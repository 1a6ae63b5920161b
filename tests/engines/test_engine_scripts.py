"""The scripts that start an engine return to a caller that captures their output.

Why: CI and the Podman fixture run `scripts/ensure-podman.sh` with captured output. A started
service left holding the caller's stdout/stderr pipe kept the caller waiting for an EOF that
never came: every Podman test errored after a 600 s set-up timeout in CI. The daemon must
also not hold the caller's directory (a removed checkout broke every later container start).
"""

import os
import signal
import subprocess
import time
import uuid

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def _service_pid(sock: str) -> int | None:
    out = subprocess.run(["pgrep", "-f", f"podman system service --time=0 unix://{sock}"],
                         capture_output=True, text=True).stdout.split()
    return int(out[0]) if out else None


@pytest.mark.docker
@pytest.mark.timeout(240)
def test_ensure_podman_returns_to_a_capturing_caller_and_leaves_its_directory(tmp_path):
    sock = f"/run/pygent-podman-test-{uuid.uuid4().hex[:8]}.sock"
    env = dict(os.environ, PYGENT_PODMAN_SOCKET=sock, PYGENT_PODMAN_LOG=str(tmp_path / "podman.log"))
    try:
        res = subprocess.run(["bash", "scripts/ensure-podman.sh"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=180)
        assert res.returncode == 0, res.stderr[-2000:]
        assert "Podman is up" in res.stderr
        ping = subprocess.run(["curl", "-sf", "--max-time", "5", "--unix-socket", sock, "http://d/_ping"],
                              capture_output=True, text=True)
        assert ping.stdout.strip() == "OK"
        pid = _service_pid(sock)
        assert pid is not None
        assert os.readlink(f"/proc/{pid}/cwd") == "/"
        for fd in ("1", "2"):
            assert not os.readlink(f"/proc/{pid}/fd/{fd}").startswith("pipe:")
        # Run a second time: an answering service is left as it is.
        again = subprocess.run(["bash", "scripts/ensure-podman.sh"], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=30)
        assert again.returncode == 0 and "already answers" in again.stderr
        assert _service_pid(sock) == pid
    finally:
        pid = _service_pid(sock)
        if pid:
            os.kill(pid, signal.SIGTERM)
            for _ in range(50):
                if _service_pid(sock) is None:
                    break
                time.sleep(0.1)
        if os.path.exists(sock):
            os.unlink(sock)
