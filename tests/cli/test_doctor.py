"""`pygent-runner doctor`."""

from __future__ import annotations

import pytest

from conftest import cli_env, run

pytestmark = pytest.mark.docker


@pytest.mark.runsc
def test_doctor_is_happy_here_and_lists_runsc():
    r = run("doctor", timeout=120)
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()
    assert "doctor: all checks passed" in out
    runsc = next(line for line in out.splitlines() if line.startswith("runtime runsc"))
    assert " ok " in runsc and "gVisor" in runsc
    for name in ("engine", "runtime runc", "image python", "image minimal", "memory limit", "pids limit", "cpus limit"):
        assert any(line.startswith(name) and " ok " in line for line in out.splitlines()), name


def test_doctor_without_engine_says_how_to_fix_and_exits_1():
    r = run("doctor", env=cli_env(DOCKER_HOST="unix:///nonexistent.sock"))
    out = r.stdout.decode()
    assert r.returncode == 1
    engine = next(line for line in out.splitlines() if line.startswith("engine"))
    assert "FAIL" in engine and "make engine" in engine
    assert "problem" in out.splitlines()[-1]
    assert "Traceback" not in r.stderr.decode()


def test_doctor_flags_an_unbuilt_image(tmp_path):
    # A bundled-images folder with an image that was never built.
    (tmp_path / "neverbuilt").mkdir()
    (tmp_path / "neverbuilt" / "Dockerfile").write_text("FROM scratch\nLABEL pygent.test=never-built\n")
    r = run("doctor", env=cli_env(PYGENT_IMAGES_DIR=str(tmp_path)))
    out = r.stdout.decode()
    assert r.returncode == 1
    row = next(line for line in out.splitlines() if line.startswith("image neverbuilt"))
    assert "FAIL" in row and "pygent-runner images build neverbuilt" in row
