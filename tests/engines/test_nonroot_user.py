"""pygent as a non-root user in the `docker` group: the CLI, the library, doctor and the self_check.

The user, its group and the socket's group come from scripts/ensure-users.sh;
pygent is installed for it from this checkout with pip (tests/support/endpoints.py).
Commands run with setpriv as that user, with a fresh login's environment.
"""

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker
PROBE = (Path(__file__).parents[1] / "support" / "endpoint_probe.py").read_text()


@pytest.mark.timeout(300)
def test_a_docker_group_member_runs_the_cli_library_doctor_and_self_check(test_user):
    user = test_user
    for _ in range(2):  # the full path, then the exec fast path (its cache is in the user's home)
        res = user.run([user.cli, "exec", "--image", "minimal", "--", "sh", "-c", "id -u; cat"], input="as a user\n")
        assert (res.returncode, res.stdout) == (0, "1000\nas a user\n"), res.stderr
    assert (user.home / ".cache" / "pygent-runner" / "exec").is_dir()
    probe = user.run([user.python, "-c", PROBE], timeout=180)
    assert probe.returncode == 0, probe.stderr[-3000:]
    out = json.loads(probe.stdout.strip().splitlines()[-1])
    assert out["exec"] == [0, "1000\nthrough stdin"] and out["archive_roundtrip"], out
    assert out["after_kill"].startswith("SandboxGone") and "killed from outside" in (out["event_reason"] or ""), out
    doctor = user.run([user.cli, "doctor"], timeout=240)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "unix:///var/run/docker.sock via unix socket" in " ".join(doctor.stdout.split())
    check = user.run([user.python, "-m", "pygent.sandbox.self_check", "--image", "minimal", "--kind", "bash", "--json"], timeout=240)
    report = json.loads(check.stdout.strip().splitlines()[-1])
    assert report["backend"] == "docker" and not report["failed"] and not report["unexpected_passes"], report


@pytest.mark.timeout(120)
def test_a_user_outside_the_docker_group_is_told_to_join_it(test_user):
    """The same user with its supplementary groups dropped: the socket refuses it, and the error says why."""
    user = test_user
    res = user.run([user.cli, "exec", "--image", "minimal", "--", "true"], groups=False)
    err = " ".join(res.stderr.split())
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
    assert "permission denied on /var/run/docker.sock" in err and "usermod -aG docker" in err, err
    doctor = user.run([user.cli, "doctor"], groups=False)
    assert doctor.returncode == 1 and "usermod -aG docker" in " ".join(doctor.stdout.split()), doctor.stdout
