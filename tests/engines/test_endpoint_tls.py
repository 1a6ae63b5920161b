"""tcp:// with TLS, against a second dockerd the test starts with --tlsverify on 127.0.0.1.

The user's entry points (`pygent-runner exec`, doctor, the library) over
DOCKER_TLS_VERIFY/DOCKER_CERT_PATH and over a docker context made by the docker
CLI itself; and the mistakes users make, each with an error naming the fix.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

from support.cli import CLI, REPO, cli_env
from support.endpoints import start_tls_engine, stop_tls_engine

pytestmark = pytest.mark.docker
PROBE = (Path(__file__).parents[1] / "support" / "endpoint_probe.py").read_text()


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    from pygent.sandbox import images

    tags = [images.resolve_image("minimal"), images.image_tag(images.TOOLING)]
    engine = start_tls_engine(tags)
    yield engine
    stop_tls_engine(engine)


def _env(config: Path, **extra: str) -> dict[str, str]:
    """A user's environment with no engine variables but `extra`, and their own docker config dir."""
    env = {k: v for k, v in cli_env().items() if not k.startswith("DOCKER_")}
    env.update(DOCKER_CONFIG=str(config), PYGENT_POOL_SIZE="0", XDG_CACHE_HOME=str(config / "cache"))
    env.update(extra)
    return env


def _run(args, env, **kw):
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=120, cwd=REPO, **kw)


@pytest.mark.timeout(240)
def test_exec_library_and_events_work_over_tls(tls, tmp_path):
    env = _env(tmp_path, **tls.tls_env())
    for _ in range(2):  # the full path, then the exec fast path from its stored recipe
        res = _run(["exec", "--image", "minimal", "--", "sh", "-c", "cat; echo done"], env, input="over tls\n")
        assert (res.returncode, res.stdout) == (0, "over tls\ndone\n"), res.stderr
    probe = subprocess.run([CLI[0], "-c", PROBE], env=env, capture_output=True, text=True, timeout=180, cwd=REPO)
    assert probe.returncode == 0, probe.stderr[-3000:]
    out = json.loads(probe.stdout.strip().splitlines()[-1])
    assert out["exec"] == [0, "1000\nthrough stdin"]
    assert out["archive_roundtrip"] and out["sum"] == "300000"
    assert out["after_kill"].startswith("SandboxGone") and "killed from outside" in (out["event_reason"] or ""), out


@pytest.mark.timeout(180)
def test_a_docker_context_with_tls_material_is_found_without_any_variable(tls, tmp_path):
    c = tls.certs.client_dir
    env = _env(tmp_path)
    made = subprocess.run(["docker", "context", "create", "pygent-tls",
                           "--docker", f"host={tls.host},ca={c / 'ca.pem'},cert={c / 'cert.pem'},key={c / 'key.pem'}"],
                          env=env, capture_output=True, text=True, timeout=30)
    assert made.returncode == 0, made.stderr
    assert subprocess.run(["docker", "context", "use", "pygent-tls"], env=env, capture_output=True, timeout=30).returncode == 0
    res = _run(["exec", "--image", "minimal", "--", "echo", "via context"], env)
    assert (res.returncode, res.stdout) == (0, "via context\n"), res.stderr
    doctor = _run(["doctor"], env)
    words = " ".join(doctor.stdout.split())
    assert "endpoint │ ok" in words and "tcp + TLS" in words and "context 'pygent-tls'" in words, doctor.stdout
    # DOCKER_CONTEXT names another context than config.json's: it wins, as for the CLI.
    res = _run(["exec", "--image", "minimal", "--", "true"], {**env, "DOCKER_CONTEXT": "nonesuch"})
    assert res.returncode != 0 and "docker context 'nonesuch'" in res.stderr and "docker context use default" in res.stderr, res.stderr


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", ["wrong CA", "no client certificate", "plain tcp to the TLS port"])
def test_tls_mistakes_get_an_error_that_names_the_fix(tls, tmp_path, case):
    env = {
        "wrong CA": tls.tls_env(tls.certs.wrong_ca_dir),
        "no client certificate": tls.tls_env(tls.certs.no_cert_dir),
        "plain tcp to the TLS port": {"DOCKER_HOST": tls.host},
    }[case]
    res = _run(["exec", "--image", "minimal", "--", "true"], _env(tmp_path, **env))
    assert res.returncode != 0
    err = " ".join(res.stderr.split())
    expected = {
        "wrong CA": ["does not verify against", str(tls.certs.wrong_ca_dir / "ca.pem"), "point DOCKER_CERT_PATH"],
        "no client certificate": ["refused no client certificate", "put cert.pem and key.pem beside ca.pem"],
        "plain tcp to the TLS port": ["speaks TLS", "DOCKER_TLS_VERIFY=1"],
    }[case]
    for text in expected:
        assert text in err, err
    assert "Traceback" not in res.stderr


@pytest.mark.timeout(120)
def test_doctor_warns_about_plain_tcp_off_this_machine(tmp_path):
    """In a network namespace of its own (loopback only, down): nothing leaves this machine."""
    env = _env(tmp_path, DOCKER_HOST="tcp://192.0.2.10:2375")
    res = subprocess.run(["unshare", "--net", "--", *CLI, "doctor"], env=env, capture_output=True, text=True, timeout=60, cwd=REPO)
    out = " ".join(res.stdout.split())
    assert res.returncode == 1
    assert "endpoint │ warn" in out and "plain tcp:// off this" in out and "--tlsverify" in out, out
    loop = subprocess.run([*CLI, "doctor"], env=_env(tmp_path, DOCKER_HOST="tcp://127.0.0.1:9"),
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert "endpoint │ ok" in " ".join(loop.stdout.split()) and "off this" not in loop.stdout
