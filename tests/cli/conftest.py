"""The CLI tests' leak check: no container labelled with the pid of a CLI process we started
may be left at the end (helpers in support/cli.py: every CLI process gets its own pygent
session id, so the suite-wide leak check by session cannot see its containers)."""

import pytest

from support.cli import _pids


@pytest.fixture(scope="session", autouse=True)
def no_cli_leaks(docker_client):
    yield
    from support.engine import reap_owned

    leaked = reap_owned(docker_client.api, _pids, timeout=10)
    assert not leaked, f"CLI processes left containers behind: {leaked}"
