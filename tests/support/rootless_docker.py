"""A rootless dockerd run by the non-root test user, started and stopped by the tests.

Debian's way: docker.io's contrib/dockerd-rootless.sh re-executes itself under
rootlesskit (a user namespace and a mount namespace owned by the user, ids from
/etc/subuid and /etc/subgid) and runs dockerd there. Everything it keeps is the
test's own: data-root in the user's home, exec-root, pidfile and rootlesskit's
state in a directory of $XDG_RUNTIME_DIR, and the socket rootless Docker's users
have, $XDG_RUNTIME_DIR/docker.sock (the resolver finds it with no variable set).
The shared root engine is not touched: the network is the host's (rootlesskit
--net=host, no port driver: slirp4netns needs /dev/net/tun, which only root may
open here), where an unprivileged namespace can change no link and no iptables
rule (dockerd's --bridge=none does try to delete docker0, and its log says
"operation not permitted"); it is told --iptables=false too. The test checks
that docker0 and the shared engine are still there afterwards.

The log goes to a file, never to a pipe: an earlier fixture's stderr=PIPE, read
only at the end, filled after ~64 KiB (dockerd-rootless.sh's `set -x` and
dockerd's info-level log: ~14 KiB to start, ~2 KiB a sandbox, 74-92 KiB for the
test), and then dockerd blocked in its logger: /_ping answered, every container
call hung, SIGTERM could not stop it. That was "one start in three lost its engine".

Stopping: rootlesskit is asked to end (SIGTERM: dockerd stops its containers
and its containerd), then its process group is killed. `--pidns` makes dockerd's
tree a PID namespace of its own, so nothing it started (containerd, shims,
container processes) can outlive the namespace's init; the stop then checks that
no process is left in rootlesskit's user namespace, and kills any by PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .endpoints import TestUser, answers

CONTRIB = "/usr/share/docker.io/contrib"


@dataclass
class RootlessDocker:
    user: TestUser
    proc: subprocess.Popen  # setpriv -> env -> dockerd-rootless.sh -> rootlesskit (one process: exec all the way)
    run_dir: Path  # exec-root, pidfile, rootlesskit's state, the logs
    data_root: Path
    log: Path
    userns: str = ""  # the user namespace rootlesskit made: dockerd, containerd, shims and containers are in it

    @property
    def sock(self) -> Path:
        return Path(self.user.env()["XDG_RUNTIME_DIR"]) / "docker.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.sock}"

    def cli(self, *args: str) -> list[str]:
        return ["docker", "-H", self.host, *args]

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def processes_in(userns: str) -> dict[int, str]:
    """PID -> command line of every process in this user namespace (as /proc/PID/ns/user names it)."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if os.readlink(d / "ns" / "user") == userns:
                out[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
    return out


def start(user: TestUser, images: list[str], log_dir: Path, *, timeout: float = 60) -> RootlessDocker:
    """Start the user's rootless dockerd on fresh state and load `images` into it (docker save | docker load).

    dockerd's and rootlesskit's output goes to log_dir/dockerd.log, which outlives the engine.

    Raises AssertionError (with the engine's log) when it does not answer in `timeout` seconds.
    """
    env = user.env()
    runtime_dir = Path(env["XDG_RUNTIME_DIR"])
    tag = os.urandom(3).hex()
    run_dir = runtime_dir / f"pgt-rd-{tag}"  # short: containerd's socket path must fit a sockaddr_un
    data_root = user.home / ".cache" / "pygent-tests" / f"rootless-docker-{tag}"
    sock = runtime_dir / "docker.sock"
    if sock.exists() and not answers(sock):
        sock.unlink()  # left by an engine of an earlier run that was killed
    assert not sock.exists(), f"{sock} already answers: another rootless dockerd of {user.name} is running"
    # No engine answers, so state of an earlier run that was killed is nobody's: remove it.
    for stale in [*runtime_dir.glob("pgt-rd-*"), *data_root.parent.glob("rootless-docker-*")]:
        shutil.rmtree(stale, ignore_errors=True)
    made = user.run(["mkdir", "-m", "700", "-p", str(run_dir), str(data_root)], groups=False)
    assert made.returncode == 0, made.stderr
    log = log_dir / "dockerd.log"
    engine_env = user.env(
        PATH=f"{CONTRIB}:/usr/sbin:/usr/bin:/sbin:/bin",
        DOCKERD_ROOTLESS_ROOTLESSKIT_NET="host",
        DOCKERD_ROOTLESS_ROOTLESSKIT_PORT_DRIVER="none",
        DOCKERD_ROOTLESS_ROOTLESSKIT_FLAGS=f"--pidns --state-dir={run_dir / 'rootlesskit'}",
    )
    args = [
        "dockerd-rootless.sh", f"--host={'unix://' + str(sock)}", f"--data-root={data_root}",
        f"--exec-root={run_dir / 'exec'}", f"--pidfile={run_dir / 'docker.pid'}",
        "--iptables=false", "--ip-masq=false", "--bridge=none", "--userland-proxy=false",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["setpriv", f"--reuid={user.name}", f"--regid={user.name}", "--clear-groups", "--reset-env", "--",
             "env", "-i", *[f"{k}={v}" for k, v in engine_env.items()], *args],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, cwd=str(user.home))
    engine = RootlessDocker(user, proc, run_dir, data_root, log)
    try:
        deadline = time.monotonic() + timeout
        while not answers(sock):
            if proc.poll() is not None:
                raise AssertionError(f"rootless dockerd exited ({proc.returncode}): {engine.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"rootless dockerd did not answer in {timeout:.0f} s: {engine.log_tail()}")
            time.sleep(0.1)
        child = (run_dir / "rootlesskit" / "child_pid").read_text().strip()
        engine.userns = os.readlink(f"/proc/{child}/ns/user")
        if images:
            save = subprocess.Popen(["docker", "save", *images], stdout=subprocess.PIPE)
            load = user.run(engine.cli("load", "-q"), stdin=save.stdout, groups=False, timeout=300)
            save.stdout.close()
            assert save.wait(timeout=60) == 0 and load.returncode == 0, load.stderr + engine.log_tail()
    except BaseException:
        stop(engine)
        raise
    return engine


def stop(engine: RootlessDocker, wait: float = 30) -> list[str]:
    """Stop the engine and everything it started; remove its state. Returns what had to be killed by force."""
    forced: list[str] = []
    proc = engine.proc
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)  # rootlesskit hands it to dockerd, which stops containers and containerd
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            forced.append(f"rootlesskit {proc.pid} after {wait:.0f} s")
            os.killpg(proc.pid, signal.SIGKILL)  # its PID namespace's init goes with it, and so does the namespace
            proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    left: dict[int, str] = {}
    while engine.userns and (left := processes_in(engine.userns)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid, cmd in left.items():
        forced.append(f"{pid} {cmd}")
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    sock = engine.sock
    if sock.exists() and not answers(sock):
        sock.unlink()
    shutil.rmtree(engine.run_dir, ignore_errors=True)
    shutil.rmtree(engine.data_root, ignore_errors=True)
    return forced
