"""Policy -> the engine's create request: every hardening of a sandbox, in one place.

Why one function: the policy is the security boundary, and the create body is
where it becomes real. Reviewing one function answers "what does a sandbox get",
and the exec cache stores exactly this body (a new policy field changes it).

The body is the Engine API's own JSON (`POST /containers/create`), so the same
body serves Docker and Podman's compatible API; the few differences between
engines are an `EngineFlavor`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any

from .. import lifecycle
from ..protocol import HANDOFF_DIR, NPROC_ENV

if TYPE_CHECKING:
    from ..policy import SandboxPolicy

#: Where the tooling volume is mounted in every sandbox (images/tooling).
TOOLING_DIR = "/opt/pygent"
#: The container's main process: the command server, on pygent's own interpreter and loader,
#: so it runs in any Linux image (no python, no libc of the image's needed).
SERVER_COMMAND = [
    f"{TOOLING_DIR}/lib/ld.so", "--library-path", f"{TOOLING_DIR}/lib",
    f"{TOOLING_DIR}/bin/python3", "-I", "-S", f"{TOOLING_DIR}/server.pyc",
]


@dataclasses.dataclass(frozen=True)
class EngineFlavor:
    """What differs between engines that serve the Docker API.

    network_disabled: `NetworkDisabled` (Docker: no network stack at all, and ~2x
    faster to start than --network none); otherwise NetworkMode "none".
    """

    name: str = "docker"
    network_disabled: bool = True
    #: Plain tmpfs mounts for /workspace and /tmp (Podman: its archive API sees them, and it
    #: ignores the size options of an anonymous tmpfs-backed volume, leaving it unbounded).
    tmpfs_mounts: bool = False
    security_opt: str = "no-new-privileges:true"
    ulimits: tuple[tuple[str, int, int], ...] = ()


#: gVisor's host threads per sandbox task, and its own, for the host pids ceiling (measured
#: on the ptrace platform: ~96 host pids at rest, ~10.4 more per task; rounded up).
GVISOR_PIDS_PER_TASK, GVISOR_PIDS_BASE = 16, 512


def handoff_source(body: dict[str, Any]) -> str | None:
    """The host directory a create body mounts as the handoff directory (create_body's handoff_dir), or None."""
    for m in body.get("HostConfig", {}).get("Mounts") or []:
        if m.get("Target") == HANDOFF_DIR:
            return m.get("Source")
    return None


def is_gvisor(runtime: str | None) -> bool:
    """runsc (gVisor), under any name it was registered with (runsc, runsc-kvm, gvisor)."""
    return bool(runtime) and ("runsc" in runtime or "gvisor" in runtime)


def pids_bounds(policy_pids: int, runtime: str | None, pids_cgroup: bool) -> tuple[int, int | None]:
    """(the host cgroup's pids limit, the RLIMIT_NPROC the command server sets, or None).

    Why gVisor differs: under runsc the pids cgroup counts gVisor's own host threads,
    not the sandbox's processes: its Go threads, and on the ptrace platform a stub
    thread per address space per sentry thread (96 host pids for an idle sandbox, 1,139
    for 100 sleeps, here). At the policy's bound gVisor could not start a thread and
    the whole sandbox died (the sentry panics, exit code 2): an ordinary start-and-kill
    of three sleeps lost its sandbox about 1 time in 100. So under gVisor the policy's
    pids is the sandbox's RLIMIT_NPROC, which gVisor's kernel enforces on processes and
    threads alike, and the cgroup keeps a ceiling sized for gVisor's threads in ordinary
    use (~10 a process). A fork bomb makes gVisor take ~30 a process (up to 7,638 host
    pids for 256, measured): that sandbox may still die at the ceiling, reported as gone,
    and the host keeps its pids (the ceiling is 4,608 for the default 256, of 32,768).
    Without a pids cgroup (a rootless engine on cgroup v1) RLIMIT_NPROC is the bound too.
    """
    if is_gvisor(runtime):
        return GVISOR_PIDS_BASE + GVISOR_PIDS_PER_TASK * policy_pids, policy_pids
    return policy_pids, None if pids_cgroup else policy_pids


def create_body(
    image: str,
    policy: "SandboxPolicy",
    *,
    tooling_volume: str,
    runtime: str | None,
    pooled: bool = False,
    flavor: EngineFlavor = EngineFlavor(),
    proxy: Any = None,
    pids_cgroup: bool = True,
    handoff_dir: str | None = None,
) -> dict[str, Any]:
    """The create request for one hardened sandbox of `image` under `policy`.

    handoff_dir: this user's handoff directory (handoff.py) on an engine on this machine,
    mounted read-only at protocol.HANDOFF_DIR so an exposed port's connections can be
    handed to the host instead of streamed; None (a remote engine) mounts nothing.

    proxy: the sandbox's side of its egress proxy (an egress.SandboxEgress; egress.py imports this
    module) when the policy has an allowlist (network.py).
    pids_cgroup: the engine can set a pids limit (Backend.pids_cgroup). A rootless engine on
    cgroup v1 cannot, and drops PidsLimit without a word: a fork bomb then grew to 18,661
    processes in 5 s under rootless Docker and to 21,245 under rootless Podman here, most
    of the host's pid_max (32768), starving every process on it (the engine's own forks
    failed). Without it, the policy's pids is the sandbox's RLIMIT_NPROC (the command
    server sets it: protocol.NPROC_ENV), which the kernel counts per uid in the engine's
    user namespace: every sandbox of that engine runs as the one uid, so they share the bound.
    """
    mounts: list[dict[str, Any]] = [
        {"Target": TOOLING_DIR, "Source": tooling_volume, "Type": "volume", "ReadOnly": True,
         "VolumeOptions": {"NoCopy": True}},
    ]
    tmpfs: dict[str, str] = {}
    if policy.workspace is not None:
        mounts.append({"Target": "/workspace", "Source": str(policy.workspace), "Type": "bind", "ReadOnly": False})
    elif flavor.tmpfs_mounts:
        tmpfs["/workspace"] = f"size={policy.workspace_size},mode=0755,U"  # U: owned by the sandbox user
    else:
        # A tmpfs-backed anonymous volume, not a plain tmpfs: Docker's archive API
        # (put/get files) sees volumes but not tmpfs mounts. Removed with the container.
        opts = f"size={policy.workspace_size},uid={policy.uid},gid={policy.gid},mode=0755"
        mounts.append(_tmpfs_volume("/workspace", opts))
    # /tmp too is a tmpfs-backed volume and not a plain --tmpfs on Docker: with a plain tmpfs,
    # write_file('/tmp/x') failed ("rootfs is marked read-only") and read_file('/tmp/x')
    # said "no such file" for a file the command had just written there.
    if not any(m.target.rstrip("/") == "/tmp" for m in policy.mounts):
        tmp_opts = f"size={policy.tmp_size},mode=1777,nosuid,nodev,noexec"
        if flavor.tmpfs_mounts:
            tmpfs["/tmp"] = tmp_opts
        else:
            mounts.append(_tmpfs_volume("/tmp", tmp_opts))
    for m in policy.mounts:
        mounts.append({"Target": m.target, "Source": str(m.source), "Type": "bind", "ReadOnly": m.read_only})
    if handoff_dir is not None and not any(m.target.rstrip("/") == HANDOFF_DIR for m in policy.mounts):
        mounts.append({"Target": HANDOFF_DIR, "Source": handoff_dir, "Type": "bind", "ReadOnly": True})
    from ..policy import size_in_bytes  # the policy is a pydantic model: loaded already

    memory = size_in_bytes(policy.memory)
    host_pids, nproc = pids_bounds(policy.pids, runtime, pids_cgroup)
    host: dict[str, Any] = {
        "Init": True,  # tini (catatonit on Podman) as PID 1: reaps zombies, forwards signals
        "AutoRemove": True,  # the engine removes it when the main process ends (owner gone)
        "CapDrop": ["ALL"],
        "CapAdd": list(policy.cap_add) or None,
        "SecurityOpt": [flavor.security_opt],
        "ReadonlyRootfs": policy.read_only_root,
        "Memory": memory,
        "MemorySwap": memory,  # equal to memory: no extra swap
        "NanoCpus": int(policy.cpus * 1e9),
        "PidsLimit": host_pids,
        "Mounts": mounts,
        # No log driver: the stream carries everything, and untrusted output must not
        # fill the engine's disk (json-file keeps all of it, unbounded, by default).
        "LogConfig": {"Type": "none", "Config": {}},
    }
    if tmpfs:
        host["Tmpfs"] = tmpfs
    if runtime:
        host["Runtime"] = runtime
    if flavor.ulimits:
        host["Ulimits"] = ulimits(flavor)
    hostname = f"sandbox-{os.urandom(4).hex()}"
    body = {
        "Image": image,
        # Entrypoint, not Cmd: an image's own ENTRYPOINT (docker-entrypoint.sh, tini) must not wrap the server.
        "Entrypoint": list(SERVER_COMMAND),
        "Cmd": None,
        "User": policy.user,
        "WorkingDir": "/workspace",
        "Env": [f"{k}={v}" for k, v in policy.env] + ([] if nproc is None else [f"{NPROC_ENV}={nproc}"]),
        # stdin open with StdinOnce: stdin closes when the owner's attach stream does (owner-death net)
        "AttachStdin": True, "AttachStdout": True, "AttachStderr": True,
        "OpenStdin": True, "StdinOnce": True, "Tty": False,
        "Labels": lifecycle.owner_labels(pooled=pooled),
        "Hostname": hostname,
        "HostConfig": host,
    }
    from .network import network_settings

    # NetworkDisabled is the strictest "no network" and starts ~2x faster than --network none.
    wiring = (proxy.proxy.id, proxy.ticket()) if proxy is not None else None
    top, net_host = network_settings(policy, list(SERVER_COMMAND), wiring, can_disable=flavor.network_disabled)
    top["Env"] = body["Env"] + top.get("Env", [])
    body.update(top)
    host.update(net_host)
    return body


def ulimits(flavor: EngineFlavor) -> list[dict[str, Any]]:
    """The engine's rlimits as the API spells them."""
    return [{"Name": n, "Soft": s, "Hard": h} for n, s, h in flavor.ulimits]


def _tmpfs_volume(target: str, opts: str) -> dict[str, Any]:
    """An anonymous tmpfs-backed volume, labelled: removing its container with the
    volumes (as we and AutoRemove do) removes it, and gc reclaims one left behind
    by a plain `docker rm -f` of an operator."""
    return {
        "Target": target, "Type": "volume",
        "VolumeOptions": {
            "Labels": {lifecycle.LABEL_MANAGED: "1", lifecycle.LABEL_SCRATCH: "1"},
            "DriverConfig": {"Name": "local", "Options": {"type": "tmpfs", "device": "tmpfs", "o": opts}},
        },
    }


def fresh_identity(body: dict[str, Any], pooled: bool = False) -> tuple[dict[str, Any], str]:
    """The body with a new hostname and this process's owner labels, and a container name.

    Named by us, so an interruption (Ctrl-C, SIGTERM) between the engine creating it
    and its answer reaching us still knows what to remove.
    """
    suffix = os.urandom(4).hex()
    body = dict(body, Hostname=f"sandbox-{suffix}", Labels=lifecycle.owner_labels(pooled=pooled))
    return body, f"pygent-{suffix}-{os.urandom(4).hex()}"
