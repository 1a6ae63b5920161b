"""The Docker backend object: the engine's state for this process, and sandbox creation.

Its state (the client, the engine's runtimes, whether crun turned out broken,
the tooling volumes seen ready) lives here, not in module globals, so a second
engine endpoint (or Podman, a subclass) is a second object.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Any

from ...errors import ConfigError, EngineUnavailable, RuntimeUnavailable, SandboxError
from .. import lifecycle
from ..interface import Backend, Check, SandboxInfo
from ..registry import backend
from . import config
from .client import Conflict, EngineClient, NotFound
from .sandbox import DockerSandbox, Limits, force_remove

if TYPE_CHECKING:
    from ..endpoint import Endpoint
    from ..policy import SandboxPolicy
    from . import egress

#: The runtime a policy without one gets when the engine registers it (`make engine` does).
PREFERRED_RUNTIME = "crun"


@backend("docker")
class DockerBackend(Backend):
    """Sandboxes as containers on a Docker-API engine (DOCKER_HOST, or the default socket)."""

    flavor = config.EngineFlavor()

    def __init__(self, host: str | None = None) -> None:
        self.client = EngineClient(host)
        self._runtimes: dict[str, dict] | None = None
        self._pids_cgroup: bool | None = None
        self._first_info: dict[str, Any] | None = None  # /info as first asked: runtimes and pids_cgroup share it
        self._preferred_broken = False
        self._tooling_ready: set[str] = set()
        self._handoff: str | None = None  # handoff_dir(): "" once known to be unavailable
        self._lock = threading.Lock()
        #: Which of our containers the engine reported dead (followed while a pool is warm).
        from .deaths import DeathWatch  # here: the exec fast path needs no event watcher

        self.deaths = DeathWatch(self.client)

    @staticmethod
    def engine_name(ep: "Endpoint") -> str | None:
        """ "podman" or "docker" by what the engine at ep answers to /version (a socket's path proves
        nothing: Podman may serve /var/run/docker.sock); None when it does not answer."""
        from ...errors import PygentError

        try:
            version = EngineClient(ep).call("GET", "/version", timeout=10) or {}
        except (PygentError, OSError, ValueError):
            return None
        components = [str(c.get("Name", "")) for c in version.get("Components") or [] if isinstance(c, dict)]
        return "podman" if any("podman" in name.lower() for name in components) else "docker"

    # -- engine facts -------------------------------------------------------
    @property
    def address(self) -> str:
        return self.client.host

    def version(self) -> dict[str, Any]:
        return self.client.call("GET", "/version", timeout=10) or {}

    def info(self) -> dict[str, Any]:
        return self.client.call("GET", "/info", timeout=30) or {}

    def runtimes(self) -> dict[str, Any]:
        """Runtime name -> its registration (path, runtimeArgs), asked once per backend."""
        if self._runtimes is None:
            self._runtimes = dict(self._engine_facts().get("Runtimes") or {})
        return self._runtimes

    def _engine_facts(self) -> dict[str, Any]:
        """/info, asked once: what the create path needs of it does not change while we run."""
        if self._first_info is None:
            self._first_info = self.info()
        return self._first_info

    def rootless(self) -> bool:
        """Does the engine run as a user? Docker says so in /info's SecurityOptions ("name=rootless")."""
        return any("name=rootless" in str(o) for o in self._engine_facts().get("SecurityOptions") or [])

    def pids_cgroup(self) -> bool:
        """Can the engine set a pids limit? Asked once per backend. Not when /info's PidsLimit is
        false, nor rootless on cgroup v1 (rootless Podman's /info says true there, and its sandboxes
        had no pids cgroup): such sandboxes get RLIMIT_NPROC instead (config.create_body)."""
        if self._pids_cgroup is None:
            info = self._engine_facts()
            cgroup1 = str(info.get("CgroupVersion") or "1") == "1"
            self._pids_cgroup = info.get("PidsLimit") is not False and not (cgroup1 and self.rootless())
        return self._pids_cgroup

    def chosen_runtime(self, policy: "SandboxPolicy") -> str | None:
        """The policy's runtime; without one, crun when the engine has it, else the engine's default.

        Why crun: a container start costs the engine ~25% less CPU with crun than with
        runc here (create/start/remove, 8 threads: 16 -> 20 a second; `make bench`'s
        tasks section runs docker run with and without it), and engine CPU is what
        bounds sandboxes a second on a 2-core machine. Same OCI spec, same hardening.
        """
        if policy.runtime:
            return policy.runtime
        if not self._preferred_broken and PREFERRED_RUNTIME in self.runtimes():
            return PREFERRED_RUNTIME
        return None

    def check_policy(self, policy: "SandboxPolicy") -> None:
        """Refuse what this engine cannot honour. Raises: RuntimeUnavailable, ConfigError."""
        runtimes = self.runtimes()
        if policy.runtime and policy.runtime not in runtimes:
            raise RuntimeUnavailable(
                f"runtime {policy.runtime!r} is not registered with the engine "
                f"(has: {', '.join(sorted(runtimes)) or 'none listed'}). Install it (e.g. Debian's runsc) "
                "and register it with the engine, or `make engine` on an engine we manage."
            )
        args = (runtimes.get(policy.runtime) or {}).get("runtimeArgs") or [] if policy.runtime else []
        if policy.runtime and policy.network is True and "--network=none" in args:
            raise ConfigError(
                f"network=True cannot be honoured: the engine registers {policy.runtime!r} with --network=none "
                "(Debian's runsc cannot start with networking on this kernel). Use the default runtime for networked sandboxes."
            )

    def tooling_volume(self) -> str:
        """The read-only tooling volume sandboxes mount (made once per tooling version)."""
        extra = {"Ulimits": config.ulimits(self.flavor)} if self.flavor.ulimits else {}
        from . import tooling

        return tooling.ensure_volume(self.client, lambda: self.resolve_image("tooling"), self._tooling_ready, extra)

    # -- Backend ------------------------------------------------------------
    def resolve_image(self, ref: str, *, build_missing: bool = True) -> str:
        from ..images import resolve_image

        return resolve_image(ref, build_missing=build_missing)

    def create_body(self, image: str, policy: "SandboxPolicy", *, pooled: bool = False, runtime: str | None = None,
                    proxy: "egress.SandboxEgress | None" = None) -> dict:
        """The create request for one sandbox (config.py), with this engine's flavor and tooling."""
        return config.create_body(image, policy, tooling_volume=self.tooling_volume(), runtime=runtime,
                                  pooled=pooled, flavor=self.flavor, proxy=proxy, pids_cgroup=self.pids_cgroup(),
                                  handoff_dir=self.handoff_dir(runtime))

    def handoff_dir(self, runtime: str | None) -> str | None:
        """The handoff directory sandboxes mount (handoff.py), or None: the engine is not on this
        machine (its bind sources are another machine's paths), the runtime is gVisor (its
        sockets are not the host kernel's, so none can be handed over), or a create refused it."""
        if self._handoff is None:
            self._handoff = ""
            if self.client.host.startswith("unix://"):
                from .. import handoff

                try:
                    self._handoff = handoff.directory()
                except OSError:
                    pass
        if config.is_gvisor(runtime):
            return None
        return self._handoff or None

    def create(self, image: str, policy: "SandboxPolicy", *, pooled: bool = False) -> DockerSandbox:
        from ..gc import reclaim_in_background

        reclaim_in_background(self)
        self.check_policy(policy)
        runtime = self.chosen_runtime(policy)
        for _attempt in range(3):
            proxy = self.egress_proxy(policy, runtime)
            if proxy is None:
                return self._start_on(image, policy, pooled, runtime, proxy)
            from .egress import still_running  # only allowlisted sandboxes load the egress module

            # An allowlisted sandbox holds its proxy before it answers (egress_proxy.relay); one
            # that had begun to exit as we claimed it is gone by then: start on a new one.
            try:
                sandbox = self._start_on(image, policy, pooled, runtime, proxy)
            except SandboxError:
                if still_running(self.client, proxy):
                    raise
                continue  # it went before the create (which names it in VolumesFrom)
            if still_running(self.client, proxy):
                return sandbox
            sandbox.close()
        raise SandboxError("the egress proxy kept exiting as sandboxes started on it; run `pygent-runner gc` and retry")

    def _start_on(self, image: str, policy: "SandboxPolicy", pooled: bool, runtime: str | None,
                  proxy: "egress.ProxyRef | None") -> DockerSandbox:
        try:
            return self._start(image, policy, pooled, runtime, proxy)
        except RuntimeUnavailable:
            if policy.runtime or runtime is None:
                raise
            # The engine registers crun but may not run it (e.g. a hybrid cgroup layout crun
            # refuses): when the engine's default works, use it from now on.
            sandbox = self._start(image, policy, pooled, None, proxy)
            self._preferred_broken = True
            return sandbox

    def reclaim_shared(self, everything: bool = False) -> list[tuple[str, str, float]]:
        """Egress proxies no sandbox uses (egress.collect_unused), and scratch volumes no
        container uses. Raises: EngineUnavailable."""
        from . import egress

        return egress.collect_unused(self.client, everything) + self._dangling_scratch()

    def _dangling_scratch(self) -> list[tuple[str, str, float]]:
        """Remove the /workspace and /tmp volumes whose container is gone without them
        (an operator's `docker rm -f` keeps a container's anonymous volumes)."""
        # One filter key only: Podman's API ORs keys (dangling + label listed the tooling volume).
        found = self.client.call("GET", "/volumes", params={"filters": {"dangling": ["true"]}}) or {}
        removed = []
        for vol in found.get("Volumes") or []:
            if (vol.get("Labels") or {}).get(lifecycle.LABEL_SCRATCH) != "1":
                continue
            try:
                self.client.call("DELETE", f"/volumes/{vol['Name']}", what="remove volume")
            except (Conflict, NotFound):  # taken by a container meanwhile, or already gone
                continue
            removed.append((vol["Name"], "scratch volume of a removed sandbox", 0.0))
        return removed

    def egress_proxy(self, policy: "SandboxPolicy", runtime: str | None) -> "egress.ProxyRef | None":
        """The running egress proxy for the policy's allowlist (started once, shared), or None without one.

        Raises ConfigError (a runtime that cannot reach it: runsc), EngineUnavailable, SandboxError.
        """
        if not policy.allow_hosts:
            return None
        if self.flavor.name != "docker":
            raise ConfigError(f"an allowlist (network=[hosts]) is implemented for the docker backend only, not {self.flavor.name}")
        from . import egress

        egress.check_supported(policy, runtime, self.runtimes())
        return egress.ensure_proxy(self.client, self.resolve_image, policy)

    def _start(self, image: str, policy: "SandboxPolicy", pooled: bool, runtime: str | None,
               proxy: "egress.ProxyRef | None" = None) -> DockerSandbox:
        from .egress import SandboxEgress

        wiring = SandboxEgress(proxy, policy) if proxy is not None else None  # its own id and rules
        body = self.create_body(image, policy, pooled=pooled, runtime=runtime, proxy=wiring)
        body, name = config.fresh_identity(body, pooled=pooled)
        try:
            sandbox = DockerSandbox.start(self.client, body, name, image=image, limits=Limits.of(policy), policy=policy,
                                          backend=self.name)
        except SandboxError as exc:
            if not self._handoff or self._handoff not in str(exc):
                raise
            # An engine that says it is on this machine but cannot mount our directory (a
            # socket forwarded from elsewhere, a VM's file sharing): ports are streamed instead.
            self._handoff = ""
            return self._start(image, policy, pooled, runtime, proxy)
        sandbox.deaths = self.deaths
        sandbox.egress = wiring
        return sandbox

    def follow_deaths(self, on: bool) -> None:
        """Follow the engine's kill/die/destroy events of this session's containers (deaths.py)."""
        self.deaths.start() if on else self.deaths.stop()

    def interactive_shell(self, image: str, policy: "SandboxPolicy", command: list[str] | None = None,
                          workdir: str | None = None, env: dict[str, str] | None = None,
                          publish: Any = None) -> int:
        from .terminal import interactive_shell

        return interactive_shell(self, image, policy, command, workdir, env, publish)

    def start_from_recipe(self, recipe: dict) -> DockerSandbox:
        """Start a sandbox from a create body made earlier (the exec cache): no policy, no pydantic."""
        if recipe.get("backend") != self.name:
            raise ConfigError("the remembered sandbox was made for another backend")
        if self.client._version is None:  # saves asking /version: an engine that differs refuses the create
            self.client._version = str(recipe["api"])
        body, name = config.fresh_identity(recipe["body"])
        source = config.handoff_source(body)
        if source is not None and not os.path.isdir(source):
            from .. import handoff  # removed since (a /tmp cleaner): made again, as create_body would

            try:
                handoff.directory()
            except OSError:
                pass
        return DockerSandbox.start(self.client, body, name, image=recipe["image"], limits=Limits(**recipe["limits"]),
                                   backend=self.name)

    def list_ours(self) -> list[SandboxInfo]:
        found = self.client.call("GET", "/containers/json",
                                 params={"all": 1, "filters": {"label": [f"{lifecycle.LABEL_MANAGED}=1"]}}) or []
        return [SandboxInfo(c["Id"], c.get("Labels") or {}, c.get("State", ""), c.get("Image", "")) for c in found]

    def usage(self, sandbox_ids: list[str]) -> dict[str, dict[str, float]]:
        """Two one-shot samples of the engine's stats, 0.5 s apart, all sandboxes at once (threads):
        CPU % from the cgroup's CPU time over the wall time between them, memory without page cache."""
        def sample() -> dict[str, tuple[float, dict]]:
            got: dict[str, tuple[float, dict]] = {}

            def one(cid: str) -> None:
                try:
                    stats = self.client.call("GET", f"/containers/{cid}/stats", params={"stream": "false", "one-shot": "true"}, timeout=10)
                except Exception:
                    return
                if isinstance(stats, dict):
                    got[cid] = (time.monotonic(), stats)

            threads = [threading.Thread(target=one, args=(cid,), daemon=True) for cid in sandbox_ids]
            for t in threads:
                t.start()
            for t in threads:
                t.join(15)
            return got

        first = sample()
        time.sleep(0.5)
        second = sample()
        out: dict[str, dict[str, float]] = {}
        for cid, (t1, s1) in second.items():
            if cid not in first:
                continue
            t0, s0 = first[cid]
            cpu = lambda s: ((s.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage") or 0  # noqa: E731
            mem = s1.get("memory_stats") or {}
            extra = mem.get("stats") or {}
            cache = extra.get("total_inactive_file", extra.get("inactive_file", extra.get("cache", 0))) or 0
            out[cid] = {"cpu_percent": max(0.0, (cpu(s1) - cpu(s0)) / 1e9 / max(t1 - t0, 1e-6) * 100),
                        "memory": float(max(0, (mem.get("usage") or 0) - cache))}
        return out

    def remove(self, sandbox_id: str) -> None:
        force_remove(self.client, sandbox_id)

    def exists(self, sandbox_id: str) -> bool:
        try:
            self.client.call("GET", f"/containers/{sandbox_id}/json")
            return True
        except NotFound:
            return False

    def checks(self) -> list[Check]:
        out: list[Check] = []
        try:
            self.client.ping()
            version = self.client.call("GET", "/version", timeout=10) or {}
            out.append(Check("engine", True, f"{version.get('Version', '?')} (API {self.client.version}) at {self.client.host}"))
        except EngineUnavailable as exc:
            out.append(Check("engine", False, str(exc), "start an engine: `make engine` in a checkout, or `sudo systemctl start docker`"))
            return out
        try:
            rts = self.runtimes()
            out.append(Check("runtimes", True, ", ".join(sorted(rts)) or "engine default only"))
        except Exception as exc:  # noqa: BLE001 - doctor never raises
            out.append(Check("runtimes", False, str(exc)))
        return out
