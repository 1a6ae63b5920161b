"""The package on Python 3.13 (Debian trixie) and 3.14 (Debian testing), not only the host's 3.11.

Each Python gets one runner container (harness.py: its image debootstrapped offline, its
venv filled from a wheelhouse the host downloaded), the checkout installed editable, and
these steps run in it against the host's engine:

- the shipped conformance suite, `python -m pygent.sandbox.self_check`, on both images;
- the packaging test (build the sdist and wheel, install the wheel into a fresh venv, use
  it from an unrelated directory);
- a focused part of the agent and sandbox tests (INNER_TESTS). The full directories run
  on the host's Python only: twice over on two more Pythons they would take far longer
  than this matrix's CI budget.

A failing inner step fails here with the inner pytest's own summary in the message.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import harness  # noqa: E402

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

#: The agent and sandbox tests run under each newer Python: the agent loop, its tools and
#: tasks, the seed snippets and the OpenAI-compatible client against a real loopback
#: server; and the sandbox conformance tests on both images with crun (the default
#: runtime: runc and gVisor change the engine side, not the Python one). The rest of
#: tests/agent and tests/sandbox runs on the host's 3.11 only, to keep this matrix within
#: its CI budget.
INNER_TESTS = (
    "tests/agent/test_agent.py tests/agent/test_tools.py tests/agent/test_tasks.py "
    "tests/agent/test_seed.py tests/agent/test_openai_compat.py",
    "tests/sandbox/test_conformance.py -k crun",
)


#: Each Python's steps, in order: name -> the shell line run in its runner (None: INNER_TESTS).
STEPS = {
    "version": "python -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'",
    "self_check": "python -m pygent.sandbox.self_check --image python && "
                  "python -m pygent.sandbox.self_check --image minimal",
    "packaging": "pytest tests/packaging",
    "agent_and_sandbox": None,
}


def _pipeline(client, version: str, work: Path) -> dict[str, harness.Step]:
    """Build VERSION's runner, then run every step in it; the steps' outcomes by name."""
    started = time.monotonic()
    tag = harness.ensure_image(client, version)
    runner = harness.Runner(client, tag, work)
    harness.TIMES[version]["image and runner"] = time.monotonic() - started
    try:
        done: dict[str, harness.Step] = {}
        for name, cmd in STEPS.items():
            if cmd is None:
                done[name] = harness.Step.join([runner.pytest(sel) for sel in INNER_TESTS])
            elif cmd.startswith("pytest "):
                done[name] = runner.pytest(cmd.removeprefix("pytest "))
            else:
                done[name] = runner.run(cmd)
            harness.TIMES[version][name] = done[name].seconds
        return done
    finally:
        runner.close()


@pytest.fixture(scope="module")
def matrix(docker_client, tmp_path_factory):
    """Every Python's pipeline, started at once: the two runners share the machine's two cores,
    and most of an inner test's time is spent waiting on containers, so together they take
    little longer than one."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=len(harness.SUITES))
    futures = {v: pool.submit(_pipeline, docker_client, v, tmp_path_factory.mktemp(f"matrix-{v}"))
               for v in sorted(harness.SUITES)}
    yield futures
    pool.shutdown(wait=True)


def _step(matrix, version: str, name: str) -> harness.Step:
    return matrix[version].result()[name]


VERSIONS = pytest.mark.parametrize("version", sorted(harness.SUITES), ids=lambda v: f"py{v}")


@VERSIONS
def test_runner_python_is_the_suites_own(matrix, version):
    step = _step(matrix, version, "version")
    assert step.code == 0, step.summary()
    found = step.output.strip()
    assert found == version, (
        f"Debian {harness.SUITES[version]} now ships Python {found}, not {version}: "
        "update harness.SUITES and pyproject's classifiers")


@VERSIONS
def test_self_check_passes_on_each_bundled_image(matrix, version):
    step = _step(matrix, version, "self_check")
    assert step.code == 0, step.summary()


@VERSIONS
def test_packaging_wheel_installs_and_runs_from_an_unrelated_directory(matrix, version):
    step = _step(matrix, version, "packaging")
    assert step.code == 0, step.summary()


@VERSIONS
def test_agent_and_sandbox_tests_pass(matrix, version):
    step = _step(matrix, version, "agent_and_sandbox")
    assert step.code == 0, step.summary()
