"""RayBackend: sandboxes on the nodes of a Ray cluster (PYGENT_BACKEND=ray, RAY_ADDRESS).

Ray does the placement; pygent writes no scheduler. Each sandbox is a one-bundle
placement group asking for one `pygent_slot` (the custom resource a node with a
working engine offers, see node.node_resources), its policy's CPUs and its
memory. Ray's placement spreads such bundles over the nodes (least-used node
first: 6 groups on 3 nodes landed 2/2/2, measured), which is the default; a
caller pins a node by id or by Ray labels (PYGENT_RAY_NODE, PYGENT_RAY_LABELS,
or create(node=..., labels=...)), and Ray's label selector enforces it.

The sandbox is then made by that node's agent (node.py), a Ray actor owned by
this driver: when the driver dies, Ray kills its actors and with them every
container they own, on every node.
"""

from __future__ import annotations

import os
import pickle
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from ...errors import ClusterUnavailable, ConfigError, PlacementError, SandboxError, SandboxGone
from .. import lifecycle
from ..interface import Backend, Check, SandboxInfo
from ..registry import backend
from .direct import Broken, DirectClient
from .node import SLOT, NodeAgent

if TYPE_CHECKING:
    from ..policy import SandboxPolicy
    from .sandbox import RaySandbox

#: Seconds to reach RAY_ADDRESS before saying nothing answers there.
CONNECT_TIMEOUT = 5.0
#: Seconds a feasible request waits for a slot to free before PlacementError.
PLACEMENT_TIMEOUT = 60.0
#: Seconds a closed sandbox's placement group is kept for this driver's next sandbox of the
#: same size (RayBackend.release): a new group costs a two-phase commit through the GCS,
#: 7 ms on a quiet cluster, 0.3 s p50 and up to 20 s while 64 delegated tasks ran here.
SPARE_LINGER = 2.0


def _labels_from(text: str | None) -> dict[str, str]:
    """'zone=a,gpu=none' -> {'zone': 'a', 'gpu': 'none'}. Raises ConfigError on a bad entry."""
    out: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"PYGENT_RAY_LABELS entry {part!r} is not key=value")
        out[key.strip()] = value.strip()
    return out


def _mismatch(address: str, ours: str, text: str) -> str:
    """The message for Ray's version check at ray.init: which version the cluster runs (Ray's
    text says "The cluster was started with: Ray: X ... This process ... Ray: Y"), and the fix."""
    import re

    found = re.search(r"cluster was started with:\s*Ray:\s*(\S+)(?:\s*Python:\s*(\S+))?", text)
    theirs, python = (found.group(1), found.group(2)) if found else ("another version", None)
    pin = f"pip install 'ray=={theirs}'" if found else "pip install the cluster's ray version"
    return (f"the Ray cluster at RAY_ADDRESS={address} runs Ray {theirs}"
            + (f" on Python {python}" if python else "") + f", this process Ray {ours}: a driver must run the "
            f"cluster's Ray version. Install it here ({pin}) or run the driver in the cluster's Python environment.")


def _actor_id(handle: Any) -> Any:
    """The id of the actor a Ray handle points to (two unpickled handles are two objects)."""
    return handle._actor_id


def _remove_group(pg: Any) -> None:
    """Remove a placement group, where the cluster may be gone already (its groups went with it).

    Why the is_initialized check: remove_placement_group joins Ray again on its own (Ray's
    auto-init) when this process left it, and a background sweep doing so after ray.shutdown()
    made a driver of a cluster being shut down. A group goes with the job that made it anyway."""
    import ray
    from ray.util import remove_placement_group

    if not ray.is_initialized():
        return
    try:
        remove_placement_group(pg)
    except Exception:  # noqa: BLE001
        pass


def _gib(n: float) -> str:
    return f"{n / (1 << 30):.1f} GiB"


@backend("ray")
class RayBackend(Backend):
    """Sandboxes on a Ray cluster, each held by the node agent of the node Ray chose."""

    def __init__(self, address: str | None = None) -> None:
        self.ray_address = address if address is not None else (os.environ.get("RAY_ADDRESS") or "")
        self.pin_node = os.environ.get("PYGENT_RAY_NODE") or None
        self.pin_labels = _labels_from(os.environ.get("PYGENT_RAY_LABELS"))
        self._agents: dict[str, Any] = {}
        #: node id -> (the agent handle it belongs to, its direct channel: direct.py)
        self._direct: dict[str, tuple[Any, Any]] = {}
        self._where: dict[str, str] = {}  #: sandbox id -> node id (for remove)
        self._recent: list[tuple[float, str | None]] = []  #: (when, node) of this driver's last placements
        #: request (sorted items) -> [(closed at, placement group, node id)]: see release()
        self._spare: dict[tuple, list[tuple[float, Any, str]]] = {}
        self._sweeper: threading.Thread | None = None
        self._lock = threading.Lock()
        self._ray: Any = None
        self._job: str | None = None  #: the Ray job this process joined as (a new ray.init is a new job)

    # -- the cluster ------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"ray {self.ray_address or '(this process)'}"

    def connect(self) -> Any:
        """The `ray` module, connected to RAY_ADDRESS (or to the cluster this process already joined).

        Raises: ClusterUnavailable (nothing answers at the address, within CONNECT_TIMEOUT;
        another Ray version), ConfigError (no RAY_ADDRESS), ImportError text as ConfigError.
        """
        if self._ray is not None and self._ray.is_initialized() and self._job == self._ray.get_runtime_context().get_job_id():
            return self._ray
        with self._lock:
            if self._ray is not None:
                if not self._ray.is_initialized():
                    # Never join again on our own: a call's .remote() would start a Ray of its
                    # own here, and a background close joining again broke a cluster's shutdown.
                    raise ClusterUnavailable("this process left the Ray cluster (ray.shutdown()): call ray.init() "
                                             "again, or use pygent from a new process")
                if self._job != self._ray.get_runtime_context().get_job_id():
                    self._forget_cluster()  # ray.init() again, by the caller: old handles are void
                else:
                    return self._ray
            try:
                import ray
            except ImportError:
                raise ConfigError("PYGENT_BACKEND=ray needs Ray: pip install 'pygent-runner[ray]'") from None
            if not ray.is_initialized():
                if not self.ray_address:
                    raise ConfigError("PYGENT_BACKEND=ray needs the cluster's address in RAY_ADDRESS (host:port of its GCS)")
                self._reachable(self.ray_address)
                os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
                try:
                    ray.init(address=self.ray_address, log_to_driver=False, logging_level="ERROR")
                except Exception as exc:  # noqa: BLE001 - Ray raises RuntimeError, ConnectionError, ...
                    text = str(exc)
                    if "version mismatch" in text.lower():
                        raise ClusterUnavailable(_mismatch(self.ray_address, ray.__version__, text)) from None
                    raise ClusterUnavailable(f"could not join the Ray cluster at RAY_ADDRESS={self.ray_address}: "
                                             f"{type(exc).__name__}: {text[:400]}") from None
            self._ray = ray
            self._job = ray.get_runtime_context().get_job_id()
            return ray

    def _forget_cluster(self) -> None:
        """Drop every handle of an earlier connection (its agents, channels and groups are void)."""
        self._agents.clear()
        for _handle, channel in self._direct.values():
            channel.close()
        self._direct.clear()
        self._spare.clear()

    @staticmethod
    def _reachable(address: str) -> None:
        """Fail in seconds where Ray's own connect retries for a minute. Raises ClusterUnavailable."""
        if address == "auto":
            return
        target = address.split("://", 1)[-1]
        host, _, port = target.rpartition(":")
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=CONNECT_TIMEOUT):
                pass
        except (OSError, ValueError) as exc:
            raise ClusterUnavailable(
                f"no Ray cluster answers at RAY_ADDRESS={address} ({exc}). Start one (`ray start --head` on the "
                "head machine, see docs/scale.md) or set RAY_ADDRESS to its GCS address host:port.") from None

    def nodes(self) -> list[dict[str, Any]]:
        """The cluster's live nodes as Ray lists them (NodeID, Resources, Labels, NodeManagerHostname)."""
        return [n for n in self.connect().nodes() if n.get("Alive")]

    def agent(self, node_id: str) -> Any:
        """This driver's node agent on `node_id`, started on first use (a Ray actor pinned there,
        owned by this driver, threaded). Raises: ClusterUnavailable (its pygent differs)."""
        hit = self._agents.get(node_id)
        if hit is not None:
            return hit
        ray = self.connect()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        with self._lock:
            hit = self._agents.get(node_id)
            if hit is None:
                hit = ray.remote(NodeAgent).options(
                    num_cpus=0, max_concurrency=256, max_restarts=0,
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
                ).remote(node_id)
                self._agents[node_id] = hit
        return self._greet(node_id, hit)

    def adopt(self, node_id: str, handle: Any) -> None:
        """Use an agent another process made (a delegated task's loop on the node uses its
        driver's agent), with its direct channel. Raises: ClusterUnavailable, SandboxGone.

        Each loop brings its own unpickled handle; one to the agent already adopted is not
        taken: RaySandbox.healthy() compares handles by identity, and a loop host runs many
        loops at once (replacing it made the other loops' sandboxes look dead)."""
        with self._lock:
            current = self._agents.get(node_id)
            if current is not None and _actor_id(current) == _actor_id(handle):
                return
            self._agents[node_id] = handle  # the driver's of the moment (a dead one's was replaced)
        self._greet(node_id, handle)

    def _greet(self, node_id: str, hit: Any) -> Any:
        """Check the agent's versions against ours and open its direct channel; the handle."""
        ray = self.connect()
        hello = self.call(node_id, "hello")
        from ...version import package_version

        if hello["pygent"] != package_version() or hello["ray"] != ray.__version__:
            raise ClusterUnavailable(
                f"node {node_id[:12]} runs pygent-runner {hello['pygent']} with Ray {hello['ray']}, this driver "
                f"pygent-runner {package_version()} with Ray {ray.__version__}: install the same versions on every node")
        if hello.get("direct") and self._channel(node_id, hit) is None:
            host, port, secret = hello["direct"]
            try:
                self._direct[node_id] = (hit, DirectClient((host, int(port)), bytes.fromhex(secret)))
            except OSError:
                pass  # its port is not reachable from here (a firewall): Ray's calls it is
        return hit

    def call(self, node_id: str, method: str, *args: Any, timeout: float | None = None) -> Any:
        """One call on the node agent, its failure re-raised as the very exception the agent saw.
        The call and its answer cross Ray as one pickled bytes each (see NodeAgent.run: why).

        Raises: SandboxGone (the node or its agent died: names the node), the agent's own errors.
        """
        ray = self.connect()
        handle = self._agents.get(node_id) or self.agent(node_id)
        payload = pickle.dumps((method, args), 5)
        channel = self._channel(node_id, handle)
        try:
            if channel is not None:
                try:
                    answer = channel.call(payload, timeout)
                except Broken as exc:
                    self._broken(node_id, handle, exc, timeout)  # raises
            else:
                answer = ray.get(handle.run.remote(payload), timeout=timeout)
        except ray.exceptions.RayActorError as exc:
            self._forget(node_id, handle)
            raise SandboxGone(f"Ray node {node_id[:12]} (its node agent) is gone: {str(exc).splitlines()[0][:300]}",
                              reason=f"its Ray node {node_id[:12]} died or its node agent was killed") from None
        ok, value = pickle.loads(answer)
        if ok:
            return value
        from .node import unpack

        raise unpack(value)

    def _channel(self, node_id: str, handle: Any) -> DirectClient | None:
        """The direct channel to this very agent (one to an agent since replaced does not count)."""
        entry = self._direct.get(node_id)
        return entry[1] if entry is not None and entry[0] is handle else None

    def _forget(self, node_id: str, handle: Any) -> None:
        """The agent is dead: a new one is made if the node lives on."""
        with self._lock:
            if self._agents.get(node_id) is handle:
                del self._agents[node_id]
            gone = self._channel(node_id, handle)
            if gone is not None:
                del self._direct[node_id]
        if gone is not None:
            gone.close()

    def _broken(self, node_id: str, handle: Any, exc: Exception, timeout: float | None) -> None:
        """The direct channel failed mid-call: Ray says whether the agent is gone (then
        RayActorError, which call() reports as SandboxGone naming the node, as for an actor call).

        Raises: RayActorError (the agent is dead), SandboxError (it lives, but the call's fate is unknown).
        """
        ray = self.connect()
        try:
            ray.get(handle.run.remote(pickle.dumps(("hello", ()), 5)), timeout=10)
        except ray.exceptions.GetTimeoutError:
            self._forget(node_id, handle)
            raise SandboxGone(f"Ray node {node_id[:12]} (its node agent) does not answer: {exc}",
                              reason=f"its Ray node {node_id[:12]} died or its node agent hangs") from None
        if timeout is not None and "timed out" in str(exc):
            raise SandboxError(f"the node agent on Ray node {node_id[:12]} did not answer within {timeout:g}s") from None
        raise SandboxError(f"the connection to the node agent on Ray node {node_id[:12]} broke during a call ({exc}); "
                           "it is still up, but whether the call took effect is unknown: check, then retry") from None

    # -- placement --------------------------------------------------------------
    def request_of(self, policy: "SandboxPolicy") -> dict[str, float]:
        """What one sandbox asks of a node: a slot, its CPUs, its memory (bytes)."""
        from ..policy import size_in_bytes

        return {SLOT: 1.0, "CPU": float(policy.cpus), "memory": float(size_in_bytes(policy.memory))}

    def offers(self) -> str:
        """Each live node's resources, for messages."""
        rows = []
        for n in self.nodes():
            r = n.get("Resources") or {}
            labels = {k: v for k, v in (n.get("Labels") or {}).items() if not k.startswith("ray.io/")}
            rows.append(f"node {n['NodeID'][:12]}: {r.get(SLOT, 0):g} slots, {r.get('CPU', 0):g} CPUs, "
                        f"memory {_gib(r.get('memory', 0))}" + (f", labels {labels}" if labels else ""))
        return "; ".join(rows) or "no live nodes"

    def place(self, request: dict[str, float], node: str | None = None, labels: dict[str, str] | None = None) -> tuple[Any, str]:
        """Reserve `request` on a node Ray picks (spread by default; pinned by node id / labels):
        (placement group, node id). Raises: PlacementError (no node could ever, or none frees up)."""
        ray = self.connect()
        from ray.util import placement_group, remove_placement_group
        from ray.util.placement_group import placement_group_table

        selector = dict(labels or {})
        if node:
            selector["ray.io/node-id"] = self._node_id(node)
        asked = ", ".join(f"{k} {_gib(v) if k == 'memory' else f'{v:g}'}" for k, v in request.items())
        asked += f" on a node with labels {selector}" if selector else ""
        fits = [n for n in self.nodes()
                if all((n.get("Resources") or {}).get(k, 0) >= v for k, v in request.items())
                and all((n.get("Labels") or {}).get(k) == v for k, v in selector.items())]
        if not fits:
            raise PlacementError(f"no node of the Ray cluster can hold a sandbox asking {asked}. The cluster offers: "
                                 f"{self.offers()}. Ask for less (policy cpus/memory), pin another node, or add a node "
                                 "whose engine answers (it offers slots: docs/scale.md)")
        if not selector:
            spare = self._take_spare(request, {n["NodeID"] for n in fits})
            if spare is not None:
                return spare
        target = None if selector else self._emptiest(fits)
        pg = placement_group([request], strategy="STRICT_PACK", bundle_label_selector=[selector] if selector else None,
                             _soft_target_node_id=target)
        if not pg.wait(PLACEMENT_TIMEOUT):
            remove_placement_group(pg)
            raise PlacementError(f"no node had room for a sandbox asking {asked} within {PLACEMENT_TIMEOUT:g}s "
                                 f"(the cluster offers: {self.offers()}); fewer sandboxes at once, or more nodes")
        return pg, placement_group_table(pg)["bundles_to_node_id"][0]

    def release(self, pg: Any, node_id: str, policy: "SandboxPolicy", reuse: bool = True) -> None:
        """A closed sandbox's placement group: kept SPARE_LINGER s for this driver's next
        unpinned sandbox of the same request (place() hands it out), then removed; removed
        at once when not `reuse` (its node died). Ray placed it; only the reservation
        outlives the container, never a container. Never raises."""
        if not reuse:
            _remove_group(pg)
            return
        request = self.request_of(policy)
        with self._lock:
            self._spare.setdefault(tuple(sorted(request.items())), []).append((time.monotonic(), pg, node_id))
            if self._sweeper is None:
                self._sweeper = threading.Thread(target=self._sweep_spares, name="pygent-ray-spares", daemon=True)
                self._sweeper.start()

    def _take_spare(self, request: dict[str, float], live: set[str]) -> tuple[Any, str] | None:
        """A spare group for `request` on a live node, the one on the node holding fewest of
        this driver's sandboxes (placement keeps spreading); None when there is none."""
        held = [getattr(sb, "node_id", None) for sb in lifecycle.live() if not sb.closed]
        with self._lock:
            spares = [e for e in self._spare.get(tuple(sorted(request.items())), []) if e[2] in live]
            if not spares:
                return None
            best = min(spares, key=lambda e: held.count(e[2]))
            self._spare[tuple(sorted(request.items()))].remove(best)
        return best[1], best[2]

    def _sweep_spares(self) -> None:
        """Remove spare groups older than SPARE_LINGER; ends when none is left."""
        while True:
            time.sleep(SPARE_LINGER / 4)
            now = time.monotonic()
            with self._lock:
                stale = [e for group in self._spare.values() for e in group if now - e[0] >= SPARE_LINGER]
                for group in self._spare.values():
                    group[:] = [e for e in group if now - e[0] < SPARE_LINGER]
                if not stale and not any(self._spare.values()):
                    self._sweeper = None
                    return
            for _, pg, _ in stale:
                _remove_group(pg)

    def _emptiest(self, nodes: list[dict[str, Any]]) -> str | None:
        """The node with the largest share of its slots free, by Ray's own accounting: the hint
        that makes placement spread. Why a hint: Ray's default (hybrid) policy packs bundles on
        one node until half its resources are used (6 sandboxes on nodes of 8/4/2 slots went 5/1/0);
        Ray still checks the hint and places elsewhere when that node cannot take it.
        Ray's view of free resources lags by up to a second under load, so this driver's own
        placements of the last second are counted too (a burst would otherwise all go to one node)."""
        from ray._private.state import available_resources_per_node

        free = available_resources_per_node()
        now = time.monotonic()
        with self._lock:
            self._recent = [(t, nid) for t, nid in self._recent if now - t < 1.0]
            recent = [nid for _, nid in self._recent]
        share = {n["NodeID"]: ((free.get(n["NodeID"]) or {}).get(SLOT, 0.0) - recent.count(n["NodeID"]))
                 / max(1.0, n["Resources"][SLOT]) for n in nodes}
        best = max(share, key=share.__getitem__, default=None)
        with self._lock:
            self._recent.append((now, best))
        return best

    def _node_id(self, node: str) -> str:
        """A full node id from an id or its unique prefix. Raises PlacementError."""
        ids = [n["NodeID"] for n in self.nodes() if n["NodeID"].startswith(node)]
        if len(ids) != 1:
            raise PlacementError(f"no single live Ray node has id {node!r}; the cluster offers: {self.offers()}")
        return ids[0]

    # -- Backend ------------------------------------------------------------------
    def resolve_image(self, ref: str, *, build_missing: bool = True) -> str:
        """The reference itself: images live on each node's engine, which resolves (and builds
        bundled ones) where the sandbox starts."""
        if not isinstance(ref, str) or not ref.strip():
            raise ConfigError(f"invalid image reference {ref!r}")
        return ref

    def create(self, image: str, policy: "SandboxPolicy", *, pooled: bool = False, node: str | None = None,
               labels: dict[str, str] | None = None) -> "RaySandbox":
        """Place one sandbox and have that node's agent start it.

        Raises: ClusterUnavailable, PlacementError, ConfigError, and what the node's engine raises
        (EngineUnavailable, ImageNotFound, RuntimeUnavailable, SandboxError).
        """
        from .sandbox import RaySandbox

        chosen_labels = dict(self.pin_labels) | dict(labels or {})
        pg, node_id = self.place(self.request_of(policy), node or self.pin_node, chosen_labels)
        try:
            info = self.call(node_id, "create", image, policy, pooled)
        except BaseException:
            _remove_group(pg)
            raise
        self._where[info["id"]] = node_id
        return RaySandbox(self, node_id, info, pg, policy)

    def list_ours(self) -> list[SandboxInfo]:
        """Every node's own sandboxes (each agent lists only those labelled with its node id)."""
        out: list[SandboxInfo] = []
        for n in self.nodes():
            if (n.get("Resources") or {}).get(SLOT, 0) <= 0:
                continue  # no engine there
            for info in self.call(n["NodeID"], "list_ours"):
                self._where[info.id] = n["NodeID"]
                out.append(info)
        return out

    def remove(self, sandbox_id: str) -> None:
        node_id = self._where.get(sandbox_id)
        if node_id is None:
            self.list_ours()
            node_id = self._where.get(sandbox_id)
        if node_id is not None:
            self.call(node_id, "remove", sandbox_id)

    def checks(self) -> list[Check]:
        """Doctor's rows: the cluster, then one per node (engine, free/used slots, tooling volume)."""
        try:
            ray = self.connect()
            nodes = self.nodes()
        except Exception as exc:  # noqa: BLE001 - doctor never raises
            return [Check("cluster", False, str(exc), "start the cluster or correct RAY_ADDRESS (docs/scale.md)")]
        from ray._private.state import available_resources_per_node

        free = available_resources_per_node()
        out = [Check("cluster", True, f"Ray {ray.__version__} at {self.ray_address or 'this process'}: {len(nodes)} live nodes")]
        for n in nodes:
            nid, total = n["NodeID"], (n.get("Resources") or {})
            name = f"node {nid[:12]} ({n.get('NodeManagerHostname', '?')})"
            slots = total.get(SLOT, 0)
            if slots <= 0:
                out.append(Check(name, False, "offers no sandbox slots (no working engine when it started)",
                                 "start its engine, then restart the node with `ray start ... --resources "
                                 "\"$(python -m pygent.sandbox.ray.node --resources)\"`"))
                continue
            left = (free.get(nid) or {}).get(SLOT, 0)
            try:
                report = self.call(nid, "report", timeout=60)
                engine = report["checks"][0]
                ok, detail = engine.ok, f"engine {engine.detail}; tooling volume {report['tooling']}"
            except Exception as exc:  # noqa: BLE001
                ok, detail = False, f"its node agent did not answer: {str(exc)[:200]}"
            out.append(Check(name, ok, f"{slots - left:g} of {slots:g} slots used ({left:g} free), "
                                       f"{total.get('CPU', 0):g} CPUs, memory {_gib(total.get('memory', 0))}; {detail}"))
        return out

    def close(self) -> None:
        """Forget the agents (Ray ends them with this driver; their sandboxes go with them)."""
        with self._lock:
            spares = [e for group in self._spare.values() for e in group]
            self._spare.clear()
        for _, pg, _ in spares:
            _remove_group(pg)
        self._agents.clear()
        for _handle, channel in self._direct.values():
            channel.close()
        self._direct.clear()

