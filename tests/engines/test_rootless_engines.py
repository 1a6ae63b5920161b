"""Rootless Podman run by the non-root user: its API service at $XDG_RUNTIME_DIR/podman/podman.sock.

The user here is outside the `docker` group (its supplementary groups dropped), so
/var/run/docker.sock is not its to use: with no variable set, the resolver passes
it over for the user's own Podman socket, and the engine's /version (not the
path) makes pygent use Podman semantics. subuid/subgid come from
scripts/ensure-users.sh; images come from the shared engine (docker save | podman load).
"""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from support.endpoints import answers

pytestmark = pytest.mark.docker
PROBE = (Path(__file__).parents[1] / "support" / "endpoint_probe.py").read_text()


@pytest.fixture(scope="module")
def rootless_podman(test_user):
    from pygent.sandbox import images

    user = test_user
    run_dir = Path(user.env()["XDG_RUNTIME_DIR"])
    sock = run_dir / "podman" / "podman.sock"
    assert user.run(["mkdir", "-p", str(sock.parent)], groups=False).returncode == 0
    tags = [images.resolve_image("minimal"), images.image_tag(images.TOOLING)]
    save = subprocess.Popen(["docker", "save", *tags], stdout=subprocess.PIPE)
    load = user.run(["podman", "load", "-q"], stdin=save.stdout, groups=False, timeout=300)
    save.stdout.close()
    assert save.wait(timeout=60) == 0 and load.returncode == 0, load.stderr
    env = user.env()
    service = subprocess.Popen(
        ["setpriv", f"--reuid={user.name}", f"--regid={user.name}", "--clear-groups", "--reset-env", "--",
         "env", "-i", *[f"{k}={v}" for k, v in env.items()], "podman", "system", "service", "--time=0", f"unix://{sock}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True, cwd=str(user.home))
    try:
        for _ in range(100):
            if answers(sock) or service.poll() is not None:
                break
            time.sleep(0.1)
        assert answers(sock), service.stderr.read().decode()[-2000:] if service.poll() is not None else "no answer"
        yield user
    finally:
        os.killpg(service.pid, signal.SIGTERM)
        service.wait(timeout=30)
        # Rootless Podman keeps a pause process holding the user namespace: it is ours, stop it too.
        pause = run_dir / "libpod" / "tmp" / "pause.pid"
        if pause.exists():
            try:
                os.kill(int(pause.read_text().strip()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass


@pytest.mark.timeout(300)
def test_rootless_podman_is_found_and_runs_the_cli_library_and_self_check(rootless_podman):
    user = rootless_podman
    res = user.run([user.cli, "exec", "--image", "minimal", "--", "sh", "-c", "id -u; cat"], input="rootless\n", groups=False)
    assert (res.returncode, res.stdout) == (0, "1000\nrootless\n"), res.stderr
    sock = f"{user.env()['XDG_RUNTIME_DIR']}/podman/podman.sock"
    where = user.run([user.python, "-c", "from pygent.sandbox.registry import get_backend; b = get_backend(); "
                      "print(b.name, b.client.endpoint.host)"], groups=False)
    assert where.stdout.split() == ["podman", f"unix://{sock}"], where.stdout + where.stderr
    probe = user.run([user.python, "-c", PROBE], groups=False, timeout=180,
                     env=user.env(DOCKER_HOST=f"unix://{sock}"))  # the probe's `docker kill`: the CLI needs it
    assert probe.returncode == 0, probe.stderr[-3000:]
    out = json.loads(probe.stdout.strip().splitlines()[-1])
    assert out["exec"] == [0, "1000\nthrough stdin"] and out["archive_roundtrip"] and out["sum"] == "300000", out
    assert out["after_kill"].startswith("SandboxGone") and "killed from outside" in (out["event_reason"] or ""), out
    check = user.run([user.python, "-m", "pygent.sandbox.self_check", "--image", "minimal", "--kind", "bash", "--json"],
                     groups=False, timeout=240)
    report = json.loads(check.stdout.strip().splitlines()[-1])
    assert report["backend"] == "podman" and report["variant"] == "podman-rootless-cgroup1", report
    assert set(report["known"]) <= {"memory_limit_reports_oom"}, report
    assert not report["failed"] and not report["unexpected_passes"], report
