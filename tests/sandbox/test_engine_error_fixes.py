"""Engine errors caused by the engine's own state tell the user the fix, not only the symptom.

Why: a Podman whose lock table (in /dev/shm) was cleared under a kept storage directory fails
every container start with "deadlock due to lock mismatch" (met here on a machine whose /dev/shm
was fresh and whose rootless storage was not); the message alone does not say what to do.
The messages below are the engines' own words, as their APIs answer them.
"""

from pygent.errors import RuntimeUnavailable, SandboxError
from pygent.sandbox.docker.client import EngineAPIError
from pygent.sandbox.docker.sandbox import map_error

LOCK_MISMATCH = ("preparing container 7a438158b8c2 for attach: container 7a438158b8c2 and volume "
                 "pygent-tooling-c881ec38636d share lock ID 0: deadlock due to lock mismatch")


def test_a_podman_lock_mismatch_names_the_renumber_fix():
    err = map_error(EngineAPIError(500, LOCK_MISMATCH, "start"), "pygent-sandbox")
    assert type(err) is SandboxError
    assert "lock mismatch" in str(err) and "podman system renumber" in str(err)


def test_an_ordinary_engine_error_gets_no_invented_fix():
    err = map_error(EngineAPIError(500, "container create: no space left on device"), "pygent-sandbox")
    assert str(err) == "container create: no space left on device"


def test_the_gvisor_network_probe_failure_names_the_runtime_args_fix():
    text = "OCI runtime create failed: runsc: running in root network namespace is not supported"
    err = map_error(EngineAPIError(500, text), "pygent-sandbox")
    assert isinstance(err, RuntimeUnavailable) and '"--network=none"' in str(err)
