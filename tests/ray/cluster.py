"""A real three-node Ray cluster on this machine, for the Ray backend's tests and bench.

Why ray.cluster_utils.Cluster: it is how Ray's own tests make multi-node clusters
(one GCS, one raylet per node, as `ray start` would). Nodes differ in resources
and labels so placement is observable. Light on a 2-core machine: no dashboard,
no usage stats, small object stores, logical CPUs only.
Everything it starts is stopped by stop(), and any Ray process left is killed by PID.
"""

from __future__ import annotations

import os
import signal
import subprocess
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


def ray_pids() -> set[int]:
    """PIDs of Ray processes this user runs (raylet, gcs_server, workers), to kill leftovers by PID."""
    out = subprocess.run(["pgrep", "-u", str(os.getuid()), "-f", "ray/core/src|ray::|raylet|gcs_server|default_worker.py"],
                         capture_output=True, text=True).stdout
    return {int(p) for p in out.split()} - {os.getpid()}


class TestCluster:
    """start() -> the address; add()/remove() nodes; stop() ends every process it started."""

    def __init__(self) -> None:
        self.cluster = None
        self.before: set[int] = set()

    def start(self) -> str:
        from ray.cluster_utils import Cluster

        self.before = ray_pids()
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

    def stop(self) -> None:
        import ray

        try:
            ray.shutdown()
        finally:
            if self.cluster is not None:
                self.cluster.shutdown()
            deadline = time.monotonic() + 10
            while (left := ray_pids() - self.before) and time.monotonic() < deadline:
                time.sleep(0.2)
            for pid in ray_pids() - self.before:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
