"""`pygent-runner doctor`."""

from __future__ import annotations

import pytest

from support.cli import cli_env, run

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
    engine = _row(out, "engine")
    assert "FAIL" in engine and "make engine" in engine
    assert "problem" in out.splitlines()[-1]
    assert "Traceback" not in r.stderr.decode()


def _row(out: str, name: str) -> str:
    """A table row with its wrapped continuation lines, cells joined (rich wraps long fixes)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(name + " "))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith(" ")), len(lines))
    cols = [[c.strip() for c in line.split("│")] for line in lines[start:end]]
    return " │ ".join(" ".join(filter(None, (row[i] for row in cols if i < len(row)))) for i in range(len(cols[0])))


def test_doctor_flags_an_unbuilt_image(tmp_path):
    # A bundled-images folder with an image that was never built.
    (tmp_path / "neverbuilt").mkdir()
    (tmp_path / "neverbuilt" / "Dockerfile").write_text("FROM scratch\nLABEL pygent.test=never-built\n")
    r = run("doctor", env=cli_env(PYGENT_IMAGES_DIR=str(tmp_path)))
    out = r.stdout.decode()
    assert r.returncode == 1
    row = next(line for line in out.splitlines() if line.startswith("image neverbuilt"))
    assert "FAIL" in row and "pygent-runner images build neverbuilt" in row


def test_doctor_names_the_unreachable_docker_host_and_how_to_leave_it():
    r = run("doctor", env=cli_env(DOCKER_HOST="unix:///nonexistent.sock"))
    engine = _row(r.stdout.decode(), "engine")
    assert "start the engine listening at unix:///nonexistent.sock" in engine and "unset DOCKER_HOST" in engine


def test_start_engine_commands_fit_this_machine(tmp_path, monkeypatch):
    """The printed commands use what is installed here; with nothing installed, the distribution's package."""
    import shutil
    from pathlib import Path

    from pygent.cli.engine_fix import start_engine_commands

    monkeypatch.delenv("DOCKER_HOST", raising=False)
    here = start_engine_commands()
    if shutil.which("dockerd"):
        assert "dockerd" in here or "systemctl start docker" in here, here
    bare = tmp_path / "bin"
    bare.mkdir()
    monkeypatch.setenv("PATH", str(bare))  # no dockerd, no podman
    if Path("/etc/debian_version").is_file():
        assert "apt-get install -y docker.io" in start_engine_commands()
    (bare / "podman").write_text("#!/bin/sh\n")
    (bare / "podman").chmod(0o755)
    with_podman = start_engine_commands()
    assert "podman" in with_podman and "export DOCKER_HOST=unix://" in with_podman
