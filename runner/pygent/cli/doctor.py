"""`pygent-runner doctor`: is everything a sandbox needs here, and what fixes what is not.

Checks, in order (a failed engine check skips the rest): settings; the engine
(reachable, version); runtimes (runc; runsc registered *and* able to start a
sandbox); each bundled image (built, current); a real sandbox started with
small limits, reading its own cgroup to see which limits the kernel enforces
(memory, swap, pids, cpus), cross-checked with `docker info`.
Exit 0 when nothing failed (warnings allowed), 1 otherwise.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import typer

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"

FIX_ENGINE = "make engine   (or: sudo systemctl start docker; or set DOCKER_HOST)"
FIX_RUNSC = "make engine   (installs runsc and registers it in /etc/docker/daemon.json)"

#: Limits of the probe sandbox: small, and distinct from every default, so reading them back proves them.
PROBE_MEMORY, PROBE_MEMORY_BYTES, PROBE_PIDS, PROBE_CPUS = "96m", 96 << 20, 77, 0.5

_PROBE_SCRIPT = r"""
first() { for f in "$@"; do [ -r "$f" ] && { cat "$f"; return; }; done; echo none; }
echo "memory $(first /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory/memory.limit_in_bytes)"
echo "memsw $(first /sys/fs/cgroup/memory.swap.max /sys/fs/cgroup/memory/memory.memsw.limit_in_bytes)"
echo "pids $(first /sys/fs/cgroup/pids.max /sys/fs/cgroup/pids/pids.max)"
echo "nproc $(ulimit -u)"
if [ -r /sys/fs/cgroup/cpu.max ]; then echo "cpu $(cat /sys/fs/cgroup/cpu.max)"
else echo "cpu $(first /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us) $(first /sys/fs/cgroup/cpu/cpu.cfs_period_us /sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us)"
fi
"""


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


def register(app: "typer.Typer") -> None:
    import typer

    @app.command("doctor")
    def doctor() -> None:
        """Check the engine, runtimes (runc, runsc), bundled images and cgroup limits; say how to fix each problem."""
        checks = run_checks()
        render(checks)
        raise typer.Exit(1 if any(c.status == FAIL for c in checks) else 0)


# --------------------------------------------------------------------------- checks


def run_checks() -> list[Check]:
    checks: list[Check] = []
    settings = _settings(checks)
    if _ray_chosen():
        return checks + _cluster_rows()
    client = _engine(checks)
    if client is None:
        for name in ("runtimes", "images", "sandbox", "limits"):
            checks.append(Check(name, SKIP, "no engine"))
        return checks
    try:
        info = client.info()
    except Exception as exc:
        checks.append(Check("engine info", FAIL, _short(exc), FIX_ENGINE))
        return checks
    for warning in info.get("Warnings") or []:
        checks.append(Check("engine warning", WARN, str(warning)))
    probe_image = _images(checks)
    configured = getattr(settings, "pygent_runtime", None)
    _runtimes(checks, info, probe_image, configured)
    _sandbox_and_limits(checks, info, probe_image)
    return checks


def _ray_chosen() -> bool:
    from ..sandbox.registry import chosen_name

    return chosen_name() == "ray"


def _cluster_rows() -> list[Check]:
    """PYGENT_BACKEND=ray: the cluster, then each node (engine, slots, tooling), from the backend."""
    from ..sandbox.registry import get_backend

    return [Check(c.name, OK if c.ok else FAIL, c.detail, c.fix) for c in get_backend().checks()]


def _settings(checks: list[Check]) -> Any:
    from ..errors import ConfigError
    from ..settings import get_settings

    try:
        s = get_settings()
    except ConfigError as exc:
        checks.append(Check("settings", FAIL, str(exc), "correct the PYGENT_* variable or pygent.toml named above"))
        return None
    runtime = s.pygent_runtime or "engine default"
    checks.append(Check("settings", OK, f"image {s.pygent_image}, runtime {runtime}, command timeout {s.pygent_command_timeout:g}s"))
    return s


def _engine(checks: list[Check]) -> Any:
    """The backend (docker or podman, see PYGENT_BACKEND), once its engine answered; None otherwise."""
    from ..errors import ConfigError, EngineRefused, EngineUnavailable
    from ..sandbox.registry import get_backend

    where = os.environ.get("DOCKER_HOST") or "the engine"
    try:
        client = get_backend()
    except ConfigError as exc:
        checks.append(Check("endpoint", FAIL, _short(exc), "correct DOCKER_HOST, or `docker context use default`"))
        return None
    _endpoint(checks, client.client.endpoint)
    where = client.address
    try:
        v = client.version()
    except EngineRefused as exc:
        checks.append(Check("engine", FAIL, _short(exc), "the fix the detail names"))
        return None
    except EngineUnavailable as exc:
        checks.append(Check("engine", FAIL, f"{where}: {_short(exc).split('. Start one')[0]}", _fix_no_engine()))
        return None
    except Exception as exc:
        checks.append(Check("engine", FAIL, f"{where}: {_short(exc)}", _fix_no_engine()))
        return None
    checks.append(Check(
        "engine", OK,
        f"{client.name} {v.get('Version', '?')} (API {v.get('ApiVersion', '?')}) at {where}, "
        f"{v.get('Os', '?')}/{v.get('Arch', '?')}, kernel {v.get('KernelVersion', '?')}",
    ))
    return client


def _endpoint(checks: list[Check], ep: Any) -> None:
    """Which endpoint was chosen and why, what was tried before it; a warning for plain tcp:// off this machine."""
    tried = "; tried before: " + ", ".join(f"{what} ({why})" for what, why in ep.tried) if ep.tried else ""
    transport = {"unix": "unix socket", "ssh": "ssh (docker system dial-stdio)"}.get(
        ep.scheme, "tcp + TLS" if ep.tls is not None else "plain tcp")
    detail = f"{ep.host} via {transport}, chosen by {ep.source}{tried}"
    if ep.scheme == "tcp" and ep.tls is None and not ep.loopback:
        checks.append(Check(
            "endpoint", WARN, detail + ": plain tcp:// off this machine lets anyone on the network run containers as root",
            "serve the engine with --tlsverify and export DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH=<dir>, or use ssh://user@host",
        ))
        return
    checks.append(Check("endpoint", OK, detail))


def _fix_no_engine() -> str:
    """This machine's commands to start an engine (printed, never run), and the checkout's one."""
    from .engine_fix import start_engine_commands

    return f"{start_engine_commands()}   (in a checkout: make engine)"


def _images(checks: list[Check]) -> str | None:
    """One row per bundled image; returns an image to start probe sandboxes from (no build)."""
    from ..errors import PygentError
    from ..sandbox import images

    try:
        rows = images.list_images()
    except PygentError as exc:
        checks.append(Check("images", FAIL, _short(exc), "pygent-runner images build"))
        return None
    if not rows:
        checks.append(Check("images", FAIL, f"no bundled images found in {images.images_dir()}", "reinstall pygent-runner (the wheel carries them), or set PYGENT_IMAGES_DIR to an images/ folder"))
        return None
    probe: str | None = None
    for r in sorted(rows, key=lambda r: r["name"] != "minimal"):  # minimal starts fastest
        fix = f"pygent-runner images build {r['name']}"
        if r["built"] and r["current"]:
            checks.append(Check(f"image {r['name']}", OK, f"{r['tag']} built and current ({_size(r['size'])})"))
            probe = probe or r["tag"]
        elif r["built"]:
            checks.append(Check(f"image {r['name']}", FAIL, f"built from an older context (current is {r['tag']})", fix))
            probe = probe or r["id"]
        else:
            checks.append(Check(f"image {r['name']}", FAIL, f"not built ({r['tag']})", fix))
    return probe


def _runtimes(checks: list[Check], info: dict, probe: str | None, configured: str | None) -> None:
    names = sorted((info.get("Runtimes") or {}).keys())
    default = info.get("DefaultRuntime") or "runc"
    suffix = f"; registered: {', '.join(names)}"
    if "runc" in names:
        checks.append(Check("runtime runc", OK, f"registered{' (default)' if default == 'runc' else ''}{suffix}"))
    else:
        checks.append(Check("runtime runc", WARN, f"not registered (default is {default}){suffix}", FIX_ENGINE))
    if "runsc" not in names:
        status = FAIL if configured == "runsc" else WARN
        why = " but PYGENT_RUNTIME=runsc" if configured == "runsc" else " (optional: gVisor isolation with --runtime runsc)"
        checks.append(Check("runtime runsc", status, f"not registered{why}", FIX_RUNSC))
    elif probe is None:
        checks.append(Check("runtime runsc", SKIP, "registered; not tried: no image built", "pygent-runner images build"))
    else:
        checks.append(_try_runsc(probe, info.get("KernelVersion") or ""))
    if configured and configured not in ("runc", "runsc") and configured not in names:
        checks.append(Check(f"runtime {configured}", FAIL, f"PYGENT_RUNTIME={configured} is not registered{suffix}", "register it in /etc/docker/daemon.json, or unset PYGENT_RUNTIME"))


def _try_runsc(image: str, host_kernel: str) -> Check:
    started = time.monotonic()
    try:
        out = _in_sandbox(image, {"runtime": "runsc"}, "uname -r; dmesg 2>/dev/null | head -n 3")
    except Exception as exc:
        return Check("runtime runsc", FAIL, f"registered, but a sandbox fails to run: {_short(exc)}",
                     "check `runsc --version` and /etc/docker/daemon.json, then `sudo systemctl restart docker`; or `make engine`")
    ms = (time.monotonic() - started) * 1000
    lines = out.splitlines()
    kernel = lines[0].strip() if lines else "?"
    if "gVisor" in out or (kernel and host_kernel and kernel != host_kernel):
        return Check("runtime runsc", OK, f"works: gVisor (kernel {kernel} inside, {host_kernel} on the host; sandbox in {ms:.0f} ms)")
    return Check("runtime runsc", WARN, f"a sandbox ran but does not look like gVisor (kernel {kernel})", FIX_RUNSC)


def _sandbox_and_limits(checks: list[Check], info: dict, probe: str | None) -> None:
    if probe is None:
        checks.append(Check("sandbox", SKIP, "not tried: no image built", "pygent-runner images build"))
        return
    started = time.monotonic()
    try:
        # The engine's default runtime, whatever PYGENT_RUNTIME says (that one has its own check).
        limits = {"memory": PROBE_MEMORY, "pids": PROBE_PIDS, "cpus": PROBE_CPUS, "runtime": info.get("DefaultRuntime")}
        out = _in_sandbox(probe, limits, _PROBE_SCRIPT)
    except Exception as exc:
        checks.append(Check("sandbox", FAIL, f"cannot start a sandbox from {probe}: {_short(exc)}", _fix_for(exc)))
        return
    ms = (time.monotonic() - started) * 1000
    checks.append(Check("sandbox", OK, f"{probe} starts, runs and is removed ({ms:.0f} ms, runtime {info.get('DefaultRuntime', '?')};"
                        f" cgroup v{info.get('CgroupVersion', '?')}, {info.get('CgroupDriver', '?')} driver)"))
    seen = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)

    cmdline = "the kernel command line (cgroup v1: `cgroup_enable=memory swapaccount=1`; or boot with cgroup v2) and reboot"
    checks.append(_limit("memory limit", info.get("MemoryLimit"), seen.get("memory"), lambda v: v == str(PROBE_MEMORY_BYTES),
                         f"--memory {PROBE_MEMORY}", f"enable the memory cgroup: {cmdline}"))
    swap_expected = {"0", str(PROBE_MEMORY_BYTES)}  # v2: memory.swap.max 0; v1: memsw == memory
    checks.append(_limit("swap limit", info.get("SwapLimit"), seen.get("memsw"), lambda v: v in swap_expected,
                         "no swap beyond --memory", f"enable swap accounting: {cmdline}", fail_status=WARN))
    pids = _limit("pids limit", info.get("PidsLimit"), seen.get("pids"), lambda v: v == str(PROBE_PIDS),
                  f"--pids {PROBE_PIDS}", "a kernel with the pids cgroup (CONFIG_CGROUP_PIDS)")
    if pids.status != OK and (seen.get("nproc") or "").strip() == str(PROBE_PIDS):
        # A rootless engine on cgroup v1: pygent bounds processes with RLIMIT_NPROC instead (docker/config.py).
        pids = Check("pids limit", WARN, f"no pids cgroup: --pids {PROBE_PIDS} is RLIMIT_NPROC instead, which every"
                     " sandbox of this engine shares (they run as one uid)",
                     "cgroup v2 with systemd's delegation (a rootless engine), or a rootful engine, for a limit per sandbox")
    checks.append(pids)
    checks.append(_limit("cpus limit", info.get("CpuCfsQuota"), seen.get("cpu"), _cpu_ok,
                         f"--cpus {PROBE_CPUS:g}", "a kernel with CFS bandwidth control (CONFIG_CFS_BANDWIDTH)"))


def _cpu_ok(value: str) -> bool:
    parts = value.split()
    try:
        quota, period = int(parts[0]), int(parts[1])
    except (ValueError, IndexError):
        return False
    return period > 0 and abs(quota / period - PROBE_CPUS) < 0.01


def _limit(name: str, engine_says: Any, seen: str | None, good: Callable[[str], bool], what: str, fix: str,
           fail_status: str = FAIL) -> Check:
    if seen is not None and seen != "none" and good(seen.strip()):
        return Check(name, OK, f"enforced ({what} reads back as {seen.strip()} inside)")
    if seen is None or seen.strip() == "none":
        if engine_says:
            return Check(name, OK, "engine reports it supported (not visible inside this runtime)")
        return Check(name, fail_status, "engine reports it unsupported", fix)
    return Check(name, fail_status, f"not enforced: {what} reads back as {seen.strip()} inside"
                 + ("" if engine_says else "; engine reports it unsupported"), fix)


def _in_sandbox(image: str, overrides: dict, script: str) -> str:
    """Run script in a fresh sandbox (never a pooled one) and return its stdout; raises on failure."""
    from ..errors import SandboxError
    from ..sandbox import default_policy, open_sandbox

    with open_sandbox(image, default_policy(**overrides), pool=False) as sandbox:
        result = sandbox.exec(script, timeout=30)
    if result.exit_code != 0:
        raise SandboxError(f"exit {result.exit_code}: {result.stderr.decode('utf-8', 'replace').strip()[:200]}")
    return result.stdout.decode("utf-8", "replace")


def _fix_for(exc: BaseException) -> str:
    from ..errors import EngineUnavailable, ImageNotFound, RuntimeUnavailable

    if isinstance(exc, EngineUnavailable):
        return FIX_ENGINE
    if isinstance(exc, ImageNotFound):
        return "pygent-runner images build"
    if isinstance(exc, RuntimeUnavailable):
        return FIX_RUNSC
    return "see the detail; `docker info` and the engine's log (journalctl -u docker) say more"


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def _size(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.1f} MB"


# --------------------------------------------------------------------------- output


def render(checks: list[Check]) -> None:
    import sys

    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    style = {OK: "green", WARN: "yellow", FAIL: "bold red", SKIP: "dim"}
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("check", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("detail")
    fixes = any(c.fix for c in checks)
    if fixes:
        table.add_column("fix")
    for c in checks:
        row = [c.name, f"[{style[c.status]}]{c.status}[/]", c.detail] + ([c.fix] if fixes else [])
        table.add_row(*row)
    console.print(table)
    failed = [c for c in checks if c.status == FAIL]
    warned = [c for c in checks if c.status == WARN]
    if failed:
        console.print(f"[bold red]doctor: {len(failed)} problem{'s' if len(failed) != 1 else ''}[/]"
                      + (f", {len(warned)} warning{'s' if len(warned) != 1 else ''}" if warned else "")
                      + ": run the fix commands above")
    else:
        console.print("[green]doctor: all checks passed[/]" + (f" ({len(warned)} warning{'s' if len(warned) != 1 else ''})" if warned else ""))
