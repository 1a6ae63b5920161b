"""Shared test set-up.

Docker tests never skip: with no engine they fail, with the message saying how
to start one (`make engine`). At the end the suite checks it leaked nothing.
"""

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def docker_client():
    """The shared docker-py client; errors (never skips) when no engine answers."""
    from pygent.sandbox.engine import get_client

    return get_client()


@pytest.fixture(scope="session", autouse=True)
def no_leaked_containers():
    """After the whole run, no container made by this test process may remain."""
    yield
    from pygent.sandbox import lifecycle, pool
    from pygent.sandbox.engine import get_client

    pool.drain_all()
    lifecycle.close_all()
    try:
        api = get_client().api
    except Exception:
        return
    deadline = time.monotonic() + 10
    while True:
        left = api.containers(all=True, filters={"label": f"{lifecycle.LABEL_SESSION}={lifecycle.SESSION_ID}"})
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not left, f"the test session leaked containers: {[c['Id'][:12] for c in left]}"


def pytest_sessionfinish(session, exitstatus):
    """In CI a skipped test is a failure: every test here needs to really run (Docker included)."""
    import os

    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if os.environ.get("CI") and skipped and session.exitstatus == 0:
        reporter.write_line(f"CI: {skipped} test(s) skipped; skipping counts as failing here", red=True)
        session.exitstatus = 1
