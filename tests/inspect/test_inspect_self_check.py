"""inspect_ai's own sandbox conformance suite (self_check), run through pygent's provider.

Every check must pass, over the bundled images and gVisor, except the ones in
DESIGN_CHOICES, which are strict xfails: if one starts passing, the design
changed and this list must say so.
"""

import pytest
from inspect_ai.util._sandbox.self_check import *  # noqa: F401,F403  (the checks, collected here)

from pygent.inspect_sandbox import PygentSandboxEnvironment

pytestmark = pytest.mark.anyio

#: Checks this provider fails on purpose, with the reason.
DESIGN_CHOICES = {
    "test_exec_as_user": (
        "a pygent sandbox has one non-root user and no way to become root or another user "
        "(caps dropped, no-new-privileges): exec(user='root') raises SandboxUserUnsupportedError"
    ),
}

#: (image, runtime): each bundled image on the default runtime, and gVisor.
COMBOS = [("python", None), ("minimal", None), ("python", "runsc")]


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module", params=COMBOS, ids=[f"{i}-{r or 'default'}" for i, r in COMBOS])
def shared_env(request, docker_client):
    import anyio

    image, runtime = request.param
    env = anyio.run(PygentSandboxEnvironment.open, {"image": image, "runtime": runtime, "policy": {"timeout": 60, "memory": "1g"}})
    yield env
    env.sandbox.close()


@pytest.fixture
def sandbox_env(shared_env, request):
    reason = DESIGN_CHOICES.get(request.node.originalname)
    if reason:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))
    return shared_env
