"""The shared sandbox of a test module, once per (image, runtime) combination."""

import pytest

from pygent.sandbox import SandboxPolicy, open_sandbox
from sbhelpers import COMBO_IDS, COMBOS


@pytest.fixture(scope="module", params=COMBOS, ids=COMBO_IDS)
def combo(request):
    return request.param


@pytest.fixture(scope="module")
def sb(combo, docker_client):
    image, runtime = combo
    sandbox = open_sandbox(image, SandboxPolicy(runtime=runtime, timeout=30), pool=False)
    yield sandbox
    sandbox.close()
