"""Rootless engines run by the non-root user: Podman's API service at $XDG_RUNTIME_DIR/podman/podman.sock,
and Docker (docker.io's dockerd-rootless.sh under rootlesskit) at $XDG_RUNTIME_DIR/docker.sock.

The user here is outside the `docker` group (its supplementary groups dropped), so
/var/run/docker.sock is not its to use: with no variable set, the resolver passes
it over for the user's own engine's socket, and the engine's /version (not the
path) picks Podman or Docker semantics. subuid/subgid come from
scripts/ensure-users.sh; images come from the shared engine (docker save | load).
Each engine's log goes to a file, never to a pipe nobody reads: a rootless dockerd
whose stderr was an unread pipe stopped answering once ~64 KiB of log filled it
(the "one start in three lost its engine" of an earlier attempt).
"""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from pygent.sandbox import self_check

from support import rootless_docker as rdocker
from support.endpoints import answers

pytestmark = pytest.mark.docker
TOOLING_PYTHON = self_check.TOOLING_PYTHON  # any image: the tooling volume's own interpreter
PROBE = (Path(__file__).parents[1] / "support" / "endpoint_probe.py").read_text()


FORKS = (f"{TOOLING_PYTHON} -c 'import os, time\nn = 0\nwhile n < 5000:\n try: pid = os.fork()\n"
         " except BlockingIOError: break\n if pid == 0: time.sleep(20); os._exit(0)\n n += 1\nprint(n)'; echo alive")


def assert_processes_bounded(user):
    """No pids cgroup on a rootless engine on cgroup v1: the policy's pids holds as RLIMIT_NPROC. Forks
    until the kernel refuses, at and just above a bound (the command server and the shell count too)."""
    for pids in (64, 65):
        bounded = user.run([user.cli, "exec", "--image", "minimal", "--pids", str(pids), "--", "sh", "-c", FORKS], groups=False)
        n, alive = bounded.stdout.split()
        assert (bounded.returncode, alive) == (0, "alive") and pids - 8 <= int(n) < pids, bounded.stdout + bounded.stderr


@pytest.fixture(scope="module")
def rootless_podman(test_user, tmp_path_factory):
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
    log = tmp_path_factory.mktemp("rootless-podman") / "podman.log"
    service = subprocess.Popen(
        ["setpriv", f"--reuid={user.name}", f"--regid={user.name}", "--clear-groups", "--reset-env", "--",
         "env", "-i", *[f"{k}={v}" for k, v in env.items()], "podman", "system", "service", "--time=0", f"unix://{sock}"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True, cwd=str(user.home))
    try:
        for _ in range(100):
            if answers(sock) or service.poll() is not None:
                break
            time.sleep(0.1)
        assert answers(sock), log.read_text()[-2000:] if service.poll() is not None else "no answer"
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
    assert_processes_bounded(user)
    check = user.run([user.python, "-m", "pygent.sandbox.self_check", "--image", "minimal", "--kind", "bash", "--json"],
                     groups=False, timeout=240)
    report = json.loads(check.stdout.strip().splitlines()[-1])
    assert report["backend"] == "podman" and report["variant"] == "podman-rootless-cgroup1", report
    assert set(report["known"]) <= {"memory_limit_reports_oom"}, report
    assert not report["failed"] and not report["unexpected_passes"], report


AGENT = """
import json
from pygent import Agent, openai_compat

class BashOnce:  # the custom-models page's BashModel: one bash call
    def chat(self, messages, model, tools):
        call = openai_compat.ToolCall(id="1", type="function", function=openai_compat.ToolCallFunction(
            name="bash", arguments=json.dumps({"cmd": "id -u; echo from the agent"})))
        return openai_compat.Message(role="assistant", content=None, tool_calls=[call])

with Agent(model=BashOnce(), image="minimal") as agent:
    agent.step("run it")  # the model's message; its bash call has run in a sandbox
    tool = [m["content"] for m in agent.history if m.get("role") == "tool"]
print(json.dumps({"tool": tool}))
"""


@pytest.fixture
def rootless_docker(test_user, tmp_path):
    """The user's rootless dockerd (tests/support/rootless_docker.py), on fresh state, stopped after the test."""
    from pygent.sandbox import images

    had_docker0 = subprocess.run(["ip", "link", "show", "docker0"], capture_output=True).returncode == 0
    engine = rdocker.start(test_user, [images.resolve_image("minimal"), images.image_tag(images.TOOLING)], tmp_path)
    try:
        yield engine
    finally:
        forced = rdocker.stop(engine)
    assert not forced, f"left after the rootless dockerd was asked to stop: {forced}; log: {engine.log_tail()}"
    assert not engine.sock.exists() and not engine.data_root.exists()
    docker0 = subprocess.run(["ip", "link", "show", "docker0"], capture_output=True)
    assert docker0.returncode == 0 or not had_docker0, "the rootless dockerd removed the shared engine's docker0"
    assert answers("/var/run/docker.sock"), "the shared engine stopped answering"


@pytest.mark.timeout(300)
def test_rootless_docker_is_found_and_runs_the_cli_library_agent_and_self_check(rootless_docker):
    engine = rootless_docker
    user = engine.user
    sock = str(engine.sock)
    where = user.run([user.python, "-c", "from pygent.sandbox.endpoint import resolve; ep = resolve(); "
                      "print(ep.host); print(dict(ep.tried).get('/var/run/docker.sock'))"], groups=False)
    assert where.stdout.split() == [f"unix://{sock}", "no", "permission"], where.stdout + where.stderr
    res = user.run([user.cli, "exec", "--image", "minimal", "--", "sh", "-c", "id -u; cat"], input="rootless docker\n", groups=False)
    assert (res.returncode, res.stdout) == (0, "1000\nrootless docker\n"), res.stderr + engine.log_tail()
    probe = user.run([user.python, "-c", PROBE], groups=False, timeout=180,
                     env=user.env(DOCKER_HOST=engine.host))  # the probe's `docker kill`: the CLI needs it
    assert probe.returncode == 0, probe.stderr[-3000:] + engine.log_tail()
    out = json.loads(probe.stdout.strip().splitlines()[-1])
    assert out["exec"] == [0, "1000\nthrough stdin"] and out["archive_roundtrip"] and out["sum"] == "300000", out
    assert out["after_kill"].startswith("SandboxGone") and "killed from outside" in (out["event_reason"] or ""), out
    agent = user.run([user.python, "-c", AGENT], groups=False, timeout=120)
    assert agent.returncode == 0, agent.stderr[-3000:] + engine.log_tail()
    said = json.loads(agent.stdout.strip().splitlines()[-1])
    assert len(said["tool"]) == 1 and "1000\nfrom the agent" in said["tool"][0], said
    check = user.run([user.python, "-m", "pygent.sandbox.self_check", "--image", "minimal", "--kind", "bash", "--json"],
                     groups=False, timeout=240)
    assert check.stdout.strip(), check.stderr[-3000:] + engine.log_tail()
    report = json.loads(check.stdout.strip().splitlines()[-1])
    assert report["backend"] == "docker" and report["variant"] == "docker-rootless-cgroup1", report
    assert set(report["known"]) <= {"memory_limit_reports_oom"}, report
    assert not report["failed"] and not report["unexpected_passes"], (report, engine.log_tail())
    assert_processes_bounded(user)
    doctor = " ".join(user.run([user.cli, "doctor"], groups=False, timeout=240).stdout.split())
    assert f"{engine.host} via unix socket" in doctor and "is RLIMIT_NPROC instead" in doctor, doctor
    left = user.run(engine.cli("ps", "-aq"), groups=False)
    assert (left.returncode, left.stdout) == (0, ""), left.stdout + left.stderr
