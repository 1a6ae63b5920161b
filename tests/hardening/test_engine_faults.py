"""The engine fails under us: clear errors within a bound, nothing left once it is back.

Uses a second, private dockerd (its own socket, data root and containerd), so
killing it cannot disturb the engine the rest of the suite uses.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(240)

SCRIPT_EXEC = r"""
import json, sys, time
from pygent.errors import PygentError
from pygent.sandbox import open_sandbox
sb = open_sandbox("python", pool=False)
print("ready", sb.id, flush=True)
t0 = time.monotonic()
try:
    r = sb.exec("sleep 60", timeout=120)
    out = {"error": None, "exit": r.exit_code}
except PygentError as e:
    out = {"error": type(e).__name__, "message": str(e)}
out["elapsed"] = time.monotonic() - t0
print(json.dumps(out), flush=True)
"""

SCRIPT_CREATE = r"""
import json, time
from pygent.errors import PygentError
from pygent.sandbox import open_sandbox
t0 = time.monotonic()
try:
    open_sandbox("python", pool=False)
    out = {"error": None}
except PygentError as e:
    out = {"error": type(e).__name__, "message": str(e)}
out["elapsed"] = time.monotonic() - t0
print(json.dumps(out), flush=True)
"""


BRIDGE = "pygent-e2"


class PrivateEngine:
    """A dockerd of our own on a private socket."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sock = root / "docker.sock"
        self.host = f"unix://{self.sock}"
        self.proc: subprocess.Popen | None = None

    def env(self) -> dict:
        return dict(os.environ, DOCKER_HOST=self.host, PYGENT_POOL_SIZE="0")

    def start(self) -> None:
        # Its own bridge: with --bridge none, dockerd deletes docker0, which the main engine uses.
        if subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode != 0:
            subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True)
        dockerd = shutil.which("dockerd")
        if dockerd is None or os.geteuid() != 0:
            pytest.fail("engine fault tests need root and dockerd (run `make engine`)")
        runsc = shutil.which("runsc")
        # A crun the engine registers but cannot run (as on a hybrid cgroup layout crun
        # refuses): sandboxes must fall back to the engine's default runtime.
        broken_crun = self.root / "broken-crun"
        broken_crun.write_text("#!/bin/sh\necho 'crun: cannot run containers here' >&2\nexit 1\n")
        broken_crun.chmod(0o755)
        config = self.root / "daemon.json"  # not the main engine's /etc/docker/daemon.json
        config.write_text("{}")
        cmd = [
            dockerd, "-H", self.host, "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
            "--pidfile", str(self.root / "docker.pid"), "--bridge", BRIDGE, "--iptables=false", "--ip-masq=false",
            "--ip-forward=false",
            "--config-file", str(config), "--add-runtime", f"crun={broken_crun}",
        ] + (["--add-runtime", f"runsc={runsc}"] if runsc else [])
        self.log = open(self.root / "dockerd.log", "ab")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if subprocess.run(["docker", "-H", self.host, "info"], capture_output=True).returncode == 0:
                return
            time.sleep(0.3)
        pytest.fail("private dockerd did not start: " + (self.root / "dockerd.log").read_text()[-2000:])

    def kill(self) -> None:
        """A crash: dockerd and its containerd die at once (running shims survive, as in real crashes)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        pattern = f"^containerd --config {self.root}"
        subprocess.run(["pkill", "-KILL", "-f", pattern], capture_output=True)
        deadline = time.monotonic() + 15
        while subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        # A new dockerd trusts a pid file whose process looks alive; this one is gone.
        (self.root / "exec" / "containerd" / "containerd.pid").unlink(missing_ok=True)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def containers(self) -> list[str]:
        out = subprocess.run(
            ["docker", "-H", self.host, "ps", "-aq", "--filter", "label=io.pygent.managed=1"],
            capture_output=True, text=True, check=True,
        )
        return out.stdout.split()


@pytest.fixture(scope="module")
def engine2():
    from pygent.sandbox.images import resolve_image

    tag = resolve_image("python")  # built on the main engine
    root = Path(tempfile.mkdtemp(prefix="pygent-engine2-", dir="/tmp"))
    eng = PrivateEngine(root)
    eng.start()
    try:
        save = subprocess.Popen(["docker", "save", tag], stdout=subprocess.PIPE)
        subprocess.run(["docker", "-H", eng.host, "load", "-q"], stdin=save.stdout, check=True, capture_output=True)
        save.wait()
        yield eng
    finally:
        eng.stop()
        # containerd of the private engine exits with it; its shims may linger a moment
        subprocess.run(["pkill", "-f", str(root)], capture_output=True)
        subprocess.run(["umount", "-R", str(root / "data")], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
        subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True)


def _run(script: str, env: dict, timeout: float = 90) -> dict:
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout)
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    assert lines, f"no result; stderr: {out.stderr[-2000:]}"
    return json.loads(lines[-1])


def test_engine_killed_while_a_command_runs_then_back_and_gc_leaves_nothing(engine2):
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT_EXEC], env=engine2.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("ready"), proc.stderr.read()
    time.sleep(0.5)  # the command is running inside
    engine2.kill()
    try:
        out, err = proc.communicate(timeout=40)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the caller hung after the engine died")
    result = json.loads([l for l in out.splitlines() if l.startswith("{")][-1])
    assert result["error"] in ("EngineUnavailable", "SandboxGone"), result
    assert result["elapsed"] < 30, result
    assert "Traceback" not in err

    # Engine down: creating a sandbox fails fast and says what to do.
    down = _run(SCRIPT_CREATE, engine2.env())
    assert down["error"] == "EngineUnavailable", down
    assert down["elapsed"] < 15, down
    assert "make engine" in down["message"] or "start" in down["message"].lower()

    # Engine back: gc (run here as a user would) leaves nothing behind.
    engine2.start()
    gc = subprocess.run([sys.executable, "-m", "pygent.cli", "gc"], env=engine2.env(), capture_output=True, text=True, timeout=60)
    assert gc.returncode == 0, gc.stderr
    deadline = time.monotonic() + 20
    while engine2.containers() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert engine2.containers() == []


SCRIPT_RUNTIME = """
import json, docker
from pygent.sandbox import open_sandbox
from pygent.sandbox.registry import get_backend
api = docker.from_env().api
runtimes, outs = [], []
for _ in range(2):
    with open_sandbox("python", pool=False) as sb:
        outs.append(sb.exec("echo hi").stdout.decode().strip())
        runtimes.append(api.inspect_container(sb.id)["HostConfig"]["Runtime"])
print(json.dumps({"runtimes": runtimes, "outs": outs, "crun_given_up": get_backend()._preferred_broken}))
"""


def test_a_registered_crun_that_cannot_run_falls_back_to_the_default_runtime(engine2):
    if engine2.proc is None or engine2.proc.poll() is not None:
        engine2.start()
    result = _run(SCRIPT_RUNTIME, engine2.env())
    assert result["outs"] == ["hi", "hi"], result
    assert result["runtimes"] == ["runc", "runc"], result
    assert result["crun_given_up"] is True, result  # the second sandbox did not try crun again
    deadline = time.monotonic() + 15
    while engine2.containers() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert engine2.containers() == []


def test_engine_stopped_before_a_sandbox_is_created(engine2):
    if engine2.proc is None or engine2.proc.poll() is not None:
        engine2.start()
    engine2.stop()
    try:
        result = _run(SCRIPT_CREATE, engine2.env())
        assert result["error"] == "EngineUnavailable", result
        assert result["elapsed"] < 15
    finally:
        engine2.start()
    ok = _run(SCRIPT_CREATE, engine2.env())
    assert ok["error"] is None, ok  # and it works again once the engine is back
    deadline = time.monotonic() + 15
    while engine2.containers() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert engine2.containers() == []


SCRIPT_RESTART = r"""
import json, sys, time
from pygent import Agent
from pygent.sandbox import default_policy, open_sandbox
from pygent.sandbox.images import resolve_image
from pygent.sandbox.pool import get_pool
from support.scripted import Script, call, say
ag = Agent(model=Script(
    say(call("bash", {"cmd": "echo one > f.txt"})),
    say(call("bash", {"cmd": "echo two"})),
    say(call("bash", {"cmd": "echo three; ls"})),
))
ag.step("go")
pool = get_pool(resolve_image("python"), default_policy())
deadline = time.monotonic() + 60
while pool.ready < pool.size and time.monotonic() < deadline:
    time.sleep(0.05)
print(json.dumps({"members": [sb.id for sb in list(pool._ready)], "agent": ag.runtime.sandbox.id}), flush=True)
sys.stdin.readline()  # the engine restarts meanwhile
ag.step(None)
ag.step(None)
sb = open_sandbox("python")
pooled = {"id": sb.id, "out": sb.exec("echo pooled").stdout.decode()}
print(json.dumps({"tools": [m["content"] for m in ag.history if m.get("role") == "tool"], "pooled": pooled}), flush=True)
sb.close()
ag.close()
"""


def test_engine_restart_the_pool_drops_its_dead_members_and_an_agent_recovers(engine2):
    if engine2.proc is None or engine2.proc.poll() is not None:
        engine2.start()
    env = dict(engine2.env(), PYGENT_POOL_SIZE="2", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT_RESTART], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("{"), proc.stderr.read()
        before = json.loads(line)
        assert len(before["members"]) == 2
        engine2.stop()  # a restart, as `systemctl restart docker` does it: every container dies
        engine2.start()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    after = json.loads([l for l in out.splitlines() if l.startswith("{")][-1])
    _, lost, again = after["tools"]
    assert lost.startswith("error:") and "died" in lost and "lost" in lost and "fresh sandbox" in lost, lost
    assert "engine" in lost, lost  # says what happened
    assert again.startswith("exit code: 0") and "three" in again and "f.txt" not in again, again
    assert after["pooled"]["out"] == "pooled\n" and after["pooled"]["id"] not in before["members"], after
    assert "Traceback" not in err, err[-2000:]
    deadline = time.monotonic() + 20
    while engine2.containers() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert engine2.containers() == []
