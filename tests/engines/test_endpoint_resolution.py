"""The engine is found as the docker CLI finds it: DOCKER_HOST, the current context, the usual sockets.

Against the shared engine, reached under other names: a docker context the docker
CLI itself creates, and the sockets Docker Desktop, Colima, OrbStack and rootless
Docker serve, each made by bind-mounting the shared socket there inside a mount
namespace of the test's own, where /var/run/docker.sock is hidden.
"""

import os
import subprocess

import pytest

from support.cli import CLI, REPO, cli_env

pytestmark = pytest.mark.docker
WHERE = "from pygent.sandbox.endpoint import resolve; from pygent.sandbox.registry import get_backend; " \
        "ep = resolve(); print(ep.host, '|', ep.source, '|', get_backend().name)"


def _env(tmp_path, **extra):
    env = {k: v for k, v in cli_env().items() if not k.startswith("DOCKER_")}
    env.update(DOCKER_CONFIG=str(tmp_path / "docker-config"), HOME=str(tmp_path / "home"),
               XDG_RUNTIME_DIR=str(tmp_path / "run"), XDG_CACHE_HOME=str(tmp_path / "cache"), PYGENT_POOL_SIZE="0")
    for d in ("home", "run"):
        (tmp_path / d).mkdir(exist_ok=True)
    env.update(extra)
    return env


def _where(env):
    res = subprocess.run([CLI[0], "-c", WHERE], env=env, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert res.returncode == 0, res.stderr
    return [part.strip() for part in res.stdout.split("|")]


def test_docker_host_then_the_context_then_the_usual_sockets(tmp_path):
    env = _env(tmp_path)
    link = tmp_path / "podman.sock"  # a Docker engine behind a Podman-looking path: still Docker
    os.symlink("/var/run/docker.sock", link)
    for name, target in (("ctx-a", f"unix://{link}"), ("ctx-b", "unix:///nonexistent/b.sock")):
        made = subprocess.run(["docker", "context", "create", name, "--docker", f"host={target}"],
                              env=env, capture_output=True, text=True, timeout=30)
        assert made.returncode == 0, made.stderr
    assert _where(env)[0] == "unix:///var/run/docker.sock"  # no context in use: the usual socket
    assert subprocess.run(["docker", "context", "use", "ctx-a"], env=env, capture_output=True, timeout=30).returncode == 0
    host, source, backend = _where(env)
    assert (host, backend) == (f"unix://{link}", "docker") and "docker context 'ctx-a'" in source and "config.json" in source
    res = subprocess.run([*CLI, "exec", "--image", "minimal", "--", "echo", "through the context"], env=env,
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert (res.returncode, res.stdout) == (0, "through the context\n"), res.stderr
    host, source, _ = _where({**env, "DOCKER_CONTEXT": "ctx-b"})
    assert host == "unix:///nonexistent/b.sock" and "DOCKER_CONTEXT" in source
    host, source, _ = _where({**env, "DOCKER_CONTEXT": "ctx-b", "DOCKER_HOST": "unix:///var/run/docker.sock"})
    assert (host, source) == ("unix:///var/run/docker.sock", "DOCKER_HOST")
    res = subprocess.run([*CLI, "exec", "--image", "minimal", "--", "true"], env={**env, "DOCKER_HOST": "npipe:////./pipe/x"},
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert res.returncode != 0 and "ssh://[user@]host[:port]" in res.stderr and "Traceback" not in res.stderr, res.stderr


@pytest.mark.timeout(180)
@pytest.mark.parametrize("where", ["run/docker.sock", "home/.docker/run/docker.sock",
                                   "home/.colima/default/docker.sock", "home/.orbstack/run/docker.sock"])
def test_the_usual_sockets_of_rootless_docker_desktop_colima_and_orbstack(tmp_path, where):
    env = _env(tmp_path)
    sock = tmp_path / where
    sock.parent.mkdir(parents=True, exist_ok=True)
    sock.touch()
    script = (f"mount --bind /var/run/docker.sock {sock} && mount --bind /dev/null /var/run/docker.sock && "
              f"{CLI[0]} -c \"{WHERE}\" && {CLI[0]} -m pygent.cli exec --image minimal -- echo found")
    res = subprocess.run(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script],
                         env=env, capture_output=True, text=True, timeout=150, cwd=REPO)
    assert res.returncode == 0, res.stderr
    first, last = res.stdout.strip().splitlines()[0], res.stdout.strip().splitlines()[-1]
    assert first.startswith(f"unix://{sock} |") and "the first usual socket" in first, res.stdout
    assert last == "found"
