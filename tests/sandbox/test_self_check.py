"""The shipped conformance suite (pygent.sandbox.self_check) over backend x runtime x image.

Docker runs in this process; Podman in a subprocess whose DOCKER_HOST is Podman's
socket (`make podman` starts it), exactly as a user selects it. Nothing is
skipped: a combination that cannot run fails, and known differences are the
ones listed in self_check.KNOWN_DIFFERENCES.
"""

import json
import os
import subprocess
import sys

import pytest

from pygent.sandbox import SandboxPolicy, open_sandbox, self_check
from support.images import SH_ONLY, sh_only_image

IMAGES = {"python": "python", "minimal": "bash", "sh-only": "sh"}
DOCKER_RUNTIMES = ["crun", "runc", "runsc"]
PODMAN_RUNTIMES = ["crun", "runc", "runsc"]
PODMAN_SOCKET = os.environ.get("PYGENT_PODMAN_SOCKET", "/run/pygent-podman.sock")


def _image(name: str) -> str:
    return sh_only_image() if name == "sh-only" else name


@pytest.mark.docker
@pytest.mark.timeout(300)
@pytest.mark.parametrize("image", list(IMAGES))
@pytest.mark.parametrize("runtime", DOCKER_RUNTIMES)
def test_self_check_on_docker(image, runtime):
    ref = _image(image)
    policy = SandboxPolicy(runtime=runtime)
    known = self_check.known_for("docker", runtime, IMAGES[image])
    report = self_check.run(lambda: open_sandbox(ref, policy, pool=False), known=known)
    assert report.ok, str(report)
    assert len(report.passed) + len(report.known) == len(self_check.CHECKS)


@pytest.fixture(scope="module")
def podman_env():
    """The environment a Podman user has: DOCKER_HOST at Podman's socket (started by `make podman`)."""
    setup = subprocess.run(["bash", "scripts/ensure-podman.sh"], capture_output=True, text=True, timeout=600,
                           cwd=os.path.join(os.path.dirname(__file__), "..", ".."))
    assert setup.returncode == 0, f"Podman could not be started: {setup.stderr[-2000:]}"
    env = dict(os.environ, DOCKER_HOST=f"unix://{PODMAN_SOCKET}", PYGENT_POOL_SIZE="0")
    env.pop("PYGENT_BACKEND", None)
    # The bundled images, built on Podman itself through the same build code users run.
    build = subprocess.run([sys.executable, "-m", "pygent.cli", "images", "build"], env=env,
                           capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stderr[-3000:]
    sh_only_image(env)
    return env


@pytest.mark.docker
@pytest.mark.timeout(600)
@pytest.mark.parametrize("image", list(IMAGES))
@pytest.mark.parametrize("runtime", PODMAN_RUNTIMES)
def test_self_check_on_podman(podman_env, image, runtime):
    ref = SH_ONLY if image == "sh-only" else image
    res = subprocess.run(
        [sys.executable, "-m", "pygent.sandbox.self_check", "--image", ref, "--runtime", runtime,
         "--kind", IMAGES[image], "--json"],
        env=podman_env, capture_output=True, text=True, timeout=500,
    )
    assert res.stdout.strip(), res.stderr[-3000:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["backend"] == "podman"
    assert not report["failed"] and not report["unexpected_passes"], json.dumps(report, indent=1)
    assert len(report["passed"]) + len(report["known"]) == len(self_check.CHECKS)


@pytest.mark.docker
@pytest.mark.timeout(300)
def test_gc_on_podman_keeps_the_tooling_volume_and_a_sandbox_still_runs(podman_env):
    """Podman's API ignores volume filters (it lists every volume as dangling and
    scratch): gc must still remove only what is ours to remove."""
    def volumes() -> set[str]:
        out = subprocess.run(["docker", "volume", "ls", "-q"], env=podman_env, capture_output=True, text=True, check=True)
        return set(out.stdout.split())

    warm = subprocess.run([sys.executable, "-m", "pygent.cli", "exec", "--", "true"], env=podman_env,
                          capture_output=True, text=True, timeout=120)
    assert warm.returncode == 0, warm.stderr[-2000:]
    tooling = {v for v in volumes() if v.startswith("pygent-tooling-")}
    assert tooling
    gc = subprocess.run([sys.executable, "-m", "pygent.cli", "gc"], env=podman_env, capture_output=True, text=True, timeout=120)
    assert gc.returncode == 0, gc.stderr[-2000:]
    assert tooling <= volumes(), f"gc removed tooling volumes: {gc.stdout}"
    again = subprocess.run([sys.executable, "-m", "pygent.cli", "exec", "--", "echo", "ok"], env=podman_env,
                           capture_output=True, text=True, timeout=120)
    assert (again.returncode, again.stdout) == (0, "ok\n"), again.stderr[-2000:]
