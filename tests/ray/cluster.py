"""A real three-node Ray cluster on this machine, for the Ray backend's tests and bench.

Why ray.cluster_utils.Cluster: it is how Ray's own tests make multi-node clusters
(one GCS, one raylet per node, as `ray start` would). Nodes differ in resources
and labels so placement is observable. Light on a 2-core machine: no dashboard,
no usage stats, small object stores, logical CPUs only.
Everything it starts is stopped by stop(); any of its processes left is killed by PID.
"""

from __future__ import annotations

import os
import signal
import time

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_enable_metrics_collection", "0")

GIB = 1 << 30
#: (resources, labels) of the three nodes: slots, logical CPUs, memory differ.
NODES = [
    dict(num_cpus=8, memory=6 * GIB, resources={"pygent_slot": 8}, labels={"zone": "a"}),
    dict(num_cpus=4, memory=3 * GIB, resources={"pygent_slot": 4}, labels={"zone": "b"}),
    dict(num_cpus=2, memory=1 * GIB, resources={"pygent_slot": 2}, labels={"zone": "c"}),
]
COMMON = dict(object_store_memory=80 << 20, include_dashboard=False)


def descendants(root: int | None = None) -> set[int]:
    """PIDs of every process below `root` (this process): the GCS, raylets and workers the
    cluster started are ours, and only those may be killed by PID."""
    root = root or os.getpid()
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


class TestCluster:
    """start() -> the address; add()/remove() nodes; stop() ends every process it started."""

    def __init__(self) -> None:
        self.cluster = None

    def start(self) -> str:
        from ray.cluster_utils import Cluster

        head = dict(NODES[0], **COMMON)
        self.cluster = Cluster(initialize_head=True, head_node_args=head, shutdown_at_exit=False)
        for spec in NODES[1:]:
            self.cluster.add_node(**spec, **COMMON)
        self.cluster.wait_for_nodes()
        return self.cluster.address

    def add(self, **spec):
        node = self.cluster.add_node(**{**COMMON, **spec})
        self.cluster.wait_for_nodes()
        return node

    def remove(self, node) -> None:
        self.cluster.remove_node(node, allow_graceful=False)

    def wait_dead(self, node, timeout: float = 60.0) -> float:
        """Seconds until the GCS lists a removed node as dead. Why wait: a killed raylet
        stays "alive" in ray.nodes() until its health checks fail (~15-30 s), and a later
        test's driver (doctor, placement) would still count it."""
        import ray

        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if not any(n["NodeID"] == node.node_id and n["Alive"] for n in ray.nodes()):
                return time.monotonic() - t0
            time.sleep(0.5)
        raise AssertionError(f"Ray still lists removed node {node.node_id[:12]} as alive after {timeout:g}s")

    def stop(self) -> None:
        import ray

        ours = descendants()
        try:
            ray.shutdown()
            if self.cluster is not None:
                self.cluster.shutdown()
        finally:  # whatever Ray raised, every process the cluster started ends here
            deadline = time.monotonic() + 10
            while (left := {p for p in ours if _alive(p)}) and time.monotonic() < deadline:
                time.sleep(0.2)
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
