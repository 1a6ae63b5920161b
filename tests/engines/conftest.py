"""Fixtures for the endpoint and non-root tests: the test user, made by the project's own script."""

import pytest

from support.endpoints import ensure_user


@pytest.fixture(scope="session")
def test_user():
    """A non-root user in the `docker` group, with pygent installed for it from this checkout."""
    return ensure_user()
