"""What each command cost (issue 26): CPU time and peak memory, in every image and runtime.

Known costs: a child bash that spins for 0.5 s of wall time (so ~0.5 s of CPU on an idle
core, less under contention but never more than its wall time), one that allocates a
100 MB string, and one that sleeps (no CPU to speak of). Children, not the command's own
bash, so the figures are the process tree's.
"""

import pytest

from pygent.sandbox import SandboxPolicy, open_sandbox

SPIN = "bash -c 's=${EPOCHREALTIME/./}; while (( ${EPOCHREALTIME/./} - s < 500000 )); do :; done'"
ALLOC = "bash -c 'printf -v x \"%*s\" 100000000 \"\"; echo ${#x}'"


@pytest.fixture(scope="module", params=[("python", "crun"), ("minimal", "crun"), ("minimal", "runsc")],
                ids=["python-crun", "minimal-crun", "minimal-runsc"])
def sandbox(request, docker_client):
    image, runtime = request.param
    sb = open_sandbox(image, SandboxPolicy(runtime=runtime, timeout=30, memory="1g"), pool=False)
    yield sb
    sb.close()


def test_cpu_time_of_the_process_tree(sandbox):
    r = sandbox.exec(SPIN)
    assert r.exit_code == 0, r.stderr
    cpu = r.cpu_user + r.cpu_sys
    assert 0.15 <= cpu <= r.duration + 0.05, (r.cpu_user, r.cpu_sys, r.duration)
    assert r.cost() == {"cpu_user": r.cpu_user, "cpu_sys": r.cpu_sys, "max_rss": r.max_rss}


def test_idle_command_costs_no_cpu(sandbox):
    r = sandbox.exec("sleep 0.3")
    assert r.exit_code == 0 and r.duration >= 0.3
    assert r.cpu_user + r.cpu_sys < 0.1


def test_peak_memory_of_the_process_tree(sandbox):
    r = sandbox.exec(ALLOC)
    assert r.stdout == b"100000000\n", r.stderr
    assert 95_000_000 <= r.max_rss <= 450_000_000, r.max_rss
    small = sandbox.exec("true")
    assert small.max_rss < 20_000_000, small.max_rss
