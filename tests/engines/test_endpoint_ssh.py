"""ssh://user@host:port, as the docker CLI does it: `ssh ... docker system dial-stdio`.

Against an sshd the test starts on 127.0.0.1 (Debian's openssh-server, its own
host key and config), logged into as the non-root test user, whose key lives in
the user's own ssh-agent and whose ~/.ssh/config and known_hosts say the rest.
The remote's `docker` reaches the shared engine through the docker group.
"""

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from support.endpoints import start_sshd, stop_sshd

pytestmark = pytest.mark.docker
PROBE = (Path(__file__).parents[1] / "support" / "endpoint_probe.py").read_text()


@pytest.fixture(scope="module")
def ssh_setup(test_user, tmp_path_factory):
    """sshd, the user's key (in an ssh-agent run as the user), ~/.ssh/config aliases for the failure cases."""
    user = test_user
    ssh_dir = user.home / ".ssh"
    for path in ("pygent_test_key", "pygent_test_key.pub", "pygent_other_key", "pygent_other_key.pub"):
        (ssh_dir / path).unlink(missing_ok=True)
    assert user.run(["mkdir", "-p", "-m", "700", str(ssh_dir)]).returncode == 0
    for key in ("pygent_test_key", "pygent_other_key"):
        made = user.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh_dir / key)])
        assert made.returncode == 0, made.stderr
    base = Path(tempfile.mkdtemp(prefix="pgs-", dir="/tmp"))  # the user's sshd session reads authorized_keys here
    os.chmod(base, 0o755)
    server = start_sshd(user, (ssh_dir / "pygent_test_key.pub").read_text(), base)
    # The no-docker case: a second port whose sessions get a PATH without docker.
    agent_sock = str(user.home / ".ssh" / "pygent-agent.sock")
    Path(agent_sock).unlink(missing_ok=True)
    agent = subprocess.Popen(
        ["setpriv", f"--reuid={user.name}", f"--regid={user.name}", "--init-groups", "--",
         "ssh-agent", "-D", "-a", agent_sock], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        for _ in range(50):
            if os.path.exists(agent_sock):
                break
            time.sleep(0.1)
        env = user.env(SSH_AUTH_SOCK=agent_sock)
        added = user.run(["ssh-add", str(ssh_dir / "pygent_test_key")], env=env)
        assert added.returncode == 0, added.stderr
        host_key = server.host_key_pub.split()
        (ssh_dir / "known_hosts").write_text(
            f"[127.0.0.1]:{server.port} {host_key[0]} {host_key[1]}\n[127.0.0.1]:{server.nodocker_port} {host_key[0]} {host_key[1]}\n")
        (ssh_dir / "config").write_text(
            "Host pygent-unknown-host\n  HostName 127.0.0.1\n  UserKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n"
            f"Host pygent-other-key\n  HostName 127.0.0.1\n  IdentityFile {ssh_dir / 'pygent_other_key'}\n  IdentitiesOnly yes\n"
            "  IdentityAgent none\n")
        assert user.run(["chown", "-R", f"{user.name}:", str(ssh_dir)]).returncode in (0, 1)
        subprocess.run(["chown", "-R", f"{user.name}:{user.name}", str(ssh_dir)], check=True)
        yield user, server, env
    finally:
        agent.terminate()
        agent.wait(timeout=10)
        stop_sshd(server)
        shutil.rmtree(base, ignore_errors=True)


def _exec(user, env, host, *cmd, stdin=None):
    return user.run([user.cli, "exec", "--image", "minimal", "--", *cmd], env={**env, "DOCKER_HOST": host}, input=stdin)


@pytest.mark.timeout(300)
def test_exec_library_and_events_work_over_ssh(ssh_setup):
    user, server, env = ssh_setup
    host = f"ssh://{user.name}@127.0.0.1:{server.port}"
    for _ in range(2):  # the full path (docker-py checks the image over ssh too), then the fast path
        res = _exec(user, env, host, "sh", "-c", "cat; echo done", stdin="over ssh\n")
        assert (res.returncode, res.stdout) == (0, "over ssh\ndone\n"), res.stderr
    probe = user.run([user.python, "-c", PROBE], env={**env, "DOCKER_HOST": host}, timeout=240)
    assert probe.returncode == 0, probe.stderr[-3000:]
    out = json.loads(probe.stdout.strip().splitlines()[-1])
    assert out["exec"] == [0, "1000\nthrough stdin"]
    assert out["archive_roundtrip"] and out["sum"] == "300000"
    assert out["after_kill"].startswith("SandboxGone") and "killed from outside" in (out["event_reason"] or ""), out
    doctor = user.run([user.cli, "doctor"], env={**env, "DOCKER_HOST": host}, timeout=240)
    words = " ".join(doctor.stdout.split())
    assert "endpoint │ ok" in words and "ssh (docker system dial-stdio)" in words, doctor.stdout
    # docker-py's relay (relay.py) leaves no socket directory behind, whichever way the process ended.
    import glob

    assert not [d for d in glob.glob("/tmp/pygent-relay-*") if os.stat(d).st_uid == _uid(user.name)]
    # No ssh process outlives the commands that used it.
    left = subprocess.run(["pgrep", "-u", user.name, "-f", "docker system dial-stdio"], capture_output=True, text=True)
    assert not left.stdout.strip() or _gone_soon(user), left.stdout


def _uid(name: str) -> int:
    import pwd

    return pwd.getpwnam(name).pw_uid


def _gone_soon(user) -> bool:
    for _ in range(50):
        if subprocess.run(["pgrep", "-u", user.name, "-f", "^ssh .*dial-stdio"], capture_output=True).returncode:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", ["host key unknown", "auth refused", "no docker on the remote"])
def test_ssh_mistakes_get_an_error_that_names_the_fix(ssh_setup, case):
    user, server, env = ssh_setup
    host = {
        "host key unknown": f"ssh://{user.name}@pygent-unknown-host:{server.port}",
        "auth refused": f"ssh://{user.name}@pygent-other-key:{server.port}",
        "no docker on the remote": f"ssh://{user.name}@127.0.0.1:{server.nodocker_port}",
    }[case]
    res = _exec(user, env, host, "true")
    err = " ".join(res.stderr.split())
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
    expected = {
        "host key unknown": ["host key is not known", "ssh-keyscan -p"],
        "auth refused": ["was refused", "ssh-add", "authorized_keys"],
        "no docker on the remote": ["has no `docker` command", "install the docker CLI there"],
    }[case]
    for text in expected:
        assert text in err, err

