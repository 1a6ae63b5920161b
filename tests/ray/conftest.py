"""The Ray backend's tests share one real three-node Ray cluster, started here and stopped here.

Nothing is skipped: without Ray (the `ray` extra, installed by `make venv`) these
fail. At the end no container of any of the cluster's node agents may remain,
and no Ray process this session started may outlive it (killed by PID if so).
"""

import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from cluster import TestCluster  # noqa: E402


def node_containers(docker_client, node_ids=None):
    """Containers on the shared engine a node agent made (all nodes, or these)."""
    from pygent.sandbox import lifecycle

    found = docker_client.api.containers(all=True, filters={"label": lifecycle.LABEL_RAY_NODE})
    return [c for c in found if node_ids is None or c["Labels"].get(lifecycle.LABEL_RAY_NODE) in node_ids]


#: The session's cluster while it runs: {"stop": its teardown}, popped by whoever stops it first.
_RUNNING: dict = {}


@pytest.fixture(scope="session")
def ray_cluster(docker_client):
    cluster = TestCluster()
    address = cluster.start()
    os.environ["RAY_ADDRESS"] = address
    _RUNNING["stop"] = lambda: _stop(cluster, docker_client)
    try:
        yield cluster
    finally:
        stop = _RUNNING.pop("stop", None)
        if stop is not None:
            stop()


def _stop(cluster, docker_client):
    from pygent.sandbox import lifecycle

    lifecycle.close_all()
    ids = {n["NodeID"] for n in _nodes()}
    cluster.stop()
    os.environ.pop("RAY_ADDRESS", None)
    deadline = time.monotonic() + 20
    while (left := node_containers(docker_client, ids)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"node agents left containers: {[c['Id'][:12] for c in left]}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """Stop the cluster once the last test that uses it is torn down, not at the session's end:
    a session fixture would keep three raylets, their agents and loop hosts running beside
    the half of the suite that comes after tests/ray."""
    result = yield
    if "stop" in _RUNNING:
        items = item.session.items
        rest = items[items.index(item) + 1:] if item in items else []
        if not any("ray_cluster" in getattr(i, "fixturenames", ()) for i in rest):
            _RUNNING.pop("stop")()
    return result


def _nodes():
    try:
        import ray

        return ray.nodes() if ray.is_initialized() else []
    except Exception:
        return []


@pytest.fixture
def ray_backend(ray_cluster):
    """This process's RayBackend (PYGENT_BACKEND=ray's object), pins cleared after each test."""
    from pygent.sandbox.registry import get_backend

    backend = get_backend("ray")
    yield backend
    backend.pin_node, backend.pin_labels = None, {}


@pytest.fixture
def ray_env(ray_cluster):
    """The environment a Ray user has: PYGENT_BACKEND=ray and the cluster in RAY_ADDRESS."""
    return dict(os.environ, PYGENT_BACKEND="ray", RAY_ADDRESS=os.environ["RAY_ADDRESS"], PYGENT_POOL_SIZE="0")


@pytest.fixture(scope="session")
def other_ray():
    """A directory holding another Ray release (the one before ours), for PYTHONPATH: a driver
    whose Ray differs from the cluster's. scripts/ensure-ray-other.sh installs it once (~10 s)."""
    import subprocess

    import ray

    major, minor = (int(p) for p in ray.__version__.split(".")[:2])
    version = f"{major}.{minor - 1}.0"
    root = Path(__file__).resolve().parents[2]
    dest = Path(sys.prefix) / "ray-other" / version
    subprocess.run(["bash", str(root / "scripts" / "ensure-ray-other.sh"), version, str(dest),
                    str(Path(sys.executable).with_name("pip"))], check=True, timeout=300)
    return version, str(dest)
