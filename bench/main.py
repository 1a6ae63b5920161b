"""`python -m bench`: run the sections, print a table per section and all of them at the end.

Exit status: 0 when every section ran and nothing was left behind, 1 when a
section failed or containers were left, 2 on bad arguments, 130 on Ctrl-C.
Missed targets never change the exit status (no timing assertions).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Callable

from .context import Ctx, leftover_containers
from .core import (
    SCHEMA,
    Section,
    docker_info,
    machine_info,
    now_iso,
    section_table,
    settings_info,
    targets_table,
    write_json,
)


def _sections() -> list[tuple[str, str, Callable]]:
    from .sections import cli, egress, inspect_provider, latency, lifecycle, mcp, memory, model_client, output, ray, runlog, snapshots, tasks

    return [
        ("latency", "1. Command latency (one `echo hi`)", latency.run),
        ("lifecycle", "2. Sandbox lifecycle", lifecycle.run),
        ("cli", "3. CLI process: pygent-runner exec -- true", cli.run),
        ("output", "4. Large output (head -c /dev/zero)", output.run),
        ("memory", "5. Host memory per live sandbox", memory.run),
        ("tasks", "6. Delegated tasks", tasks.run),
        ("model_client", "7. Model client: openai_compat vs the official SDK (loopback)", model_client.run),
        ("mcp", "8. MCP bash round trip (stdio, the SDK's client)", mcp.run),
        ("egress", "9. Network by name (egress allowlist)", egress.run),
        ("inspect", "10. inspect_ai: exec through the pygent provider", inspect_provider.run),
        ("runlog", "11. Run logs and the viewer", runlog.run),
        ("ray", "12. Ray backend vs local (3-node cluster on this machine)", ray.run),
        ("snapshots", "13. Snapshots, forks, resume, changes (100 MB, 10,000 files)", snapshots.run),
    ]


KEYS = ["latency", "lifecycle", "cli", "output", "memory", "tasks", "model_client", "mcp", "egress", "inspect", "runlog", "ray", "snapshots"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="pygent-runner benchmarks. No timing assertions: targets are shown, never enforced.",
    )
    p.add_argument("--quick", action="store_true", help="small N everywhere: a smoke run (about a minute)")
    p.add_argument(
        "--only", action="append", metavar="SECTION",
        help=f"run only this section (name or number; repeat or comma-separate): {', '.join(KEYS)}",
    )
    p.add_argument("--json", metavar="PATH", help="save every figure (raw samples, machine, docker, date) to PATH")
    p.add_argument("--compare", metavar="PATH", help="a previous --json file: adds a 'p50 vs prev' column")
    p.add_argument("--width", type=int, default=None, help="table width (default: terminal, or 200 when piped)")
    args = p.parse_args(argv)
    chosen: list[str] = []
    for item in args.only or []:
        for part in item.split(","):
            part = part.strip().lower()
            if not part:
                continue
            if part.isdigit() and 1 <= int(part) <= len(KEYS):
                part = KEYS[int(part) - 1]
            if part not in KEYS:
                p.error(f"unknown section {part!r}; choose from {', '.join(KEYS)} (or 1-{len(KEYS)})")
            if part not in chosen:
                chosen.append(part)
    args.sections = chosen or list(KEYS)
    return args


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    args = parse_args(argv)
    width = args.width or (None if sys.stdout.isatty() else 200)
    console = Console(width=width, highlight=False)
    previous = None
    if args.compare:
        try:
            with open(args.compare) as f:
                previous = json.load(f)
        except (OSError, ValueError) as exc:
            console.print(f"[red]cannot read --compare file: {exc}[/red]")
            return 2

    ctx = Ctx(quick=args.quick, console=console)
    started = time.monotonic()
    report: dict = {
        "schema": SCHEMA, "date": now_iso(), "argv": sys.argv[1:] if argv is None else argv,
        "quick": args.quick, "sections_run": args.sections, "machine": machine_info(),
    }
    console.rule("[bold]pygent-runner benchmark")
    m = report["machine"]
    console.print(
        f"{report['date']}  {m['hostname']}  {m['cpu_model'] or '?'} × {m['cpus']}  {m['mem_total_mb']} MB  "
        f"python {m['python']}  commit {(m['git_commit'] or '?')[:10]}{' (dirty)' if m['git_dirty_files'] else ''}"
        f"  load {m['loadavg_start'][0]:.2f}" + ("  [yellow]--quick[/yellow]" if args.quick else "")
    )
    if m["loadavg_start"][0] > (m["cpus"] or 1):
        console.print(
            f"[yellow]the machine is busy (load {m['loadavg_start'][0]:.1f} on {m['cpus']} CPUs): "
            "figures will be noisy; ratios (same run, interleaved) hold up better than absolute times[/yellow]"
        )
    report["docker"] = docker_info()
    report["settings"] = settings_info()
    d = report["docker"]
    if d.get("error"):
        console.print(f"[red]Docker engine: {d['error']}[/red] (start one with `make engine`)")
    else:
        console.print(
            f"docker engine {d['server_version']} (API {d['api_version']}, CLI {d['cli_version']}), "
            f"{d['storage_driver']}, cgroup v{d['cgroup_version']}, engine default runtime {d['default_runtime']}, sandboxes on {d.get('sandbox_runtime')}, root {d.get('data_root')}; "
            f"settings {report['settings']}"
        )
    preflight = _preflight(console)
    report["images"] = preflight

    sections: list[Section] = []
    interrupted = False
    registry = {k: (title, fn) for k, title, fn in _sections()}
    try:
        for key in args.sections:
            title, fn = registry[key]
            section = Section(key, title)
            sections.append(section)
            console.print(f"\n[bold]▶ {title}[/bold]")
            t0 = time.monotonic()
            try:
                fn(ctx, section)
            except KeyboardInterrupt:
                section.error = "interrupted"
                raise
            except Exception as exc:  # one broken section must not hide the others
                import traceback

                section.error = f"{type(exc).__name__}: {exc}"[:500]
                report.setdefault("tracebacks", {})[key] = traceback.format_exc()[-4000:]
            finally:
                section.elapsed = time.monotonic() - t0
                section.finish()
            console.print(section_table(section, _prev(previous, key)))
            console.print(f"[dim]  ({section.elapsed:.1f} s)[/dim]")
    except KeyboardInterrupt:
        interrupted = True
        console.print("[yellow]interrupted: cleaning up[/yellow]")
    finally:
        left = _cleanup(ctx, console)

    report["sections"] = {s.key: s.to_json() for s in sections}
    report["leftover_containers"] = [c["Id"][:12] for c in left]
    report["total_s"] = round(time.monotonic() - started, 2)
    report["machine"]["loadavg_end"] = list(os.getloadavg())

    console.print()
    console.rule("[bold]Summary")
    for s in sections:
        console.print(section_table(s, _prev(previous, s.key)))
    if any(r.targets for s in sections for r in s.rows):
        console.print(targets_table(sections))
    la0, la1 = report["machine"]["loadavg_start"][0], report["machine"]["loadavg_end"][0]
    console.print(
        f"total {report['total_s']:.0f} s; load average {la0:.2f} → {la1:.2f} on {report['machine']['cpus']} CPUs; "
        "containers left behind: "
        + (f"[red]{len(left)} ({', '.join(report['leftover_containers'])})[/red]" if left else "[green]0[/green]")
    )
    if args.json:
        write_json(args.json, report)
        console.print(f"figures saved to {args.json}")
    if interrupted:
        return 130
    return 1 if left or any(s.error for s in sections) else 0


def _prev(previous: dict | None, key: str) -> dict | None:
    return (previous or {}).get("sections", {}).get(key) if previous else None


def _preflight(console) -> dict:
    """Resolve (build if missing) the bundled images; note when :latest is not what pygent runs."""
    out: dict = {}
    try:
        from pygent.sandbox.engine import get_client
        from pygent.sandbox.images import resolve_image

        client = get_client()
        for name in ("python", "minimal"):
            tag = resolve_image(name)
            latest = f"pygent/{name}:latest"
            ids = {}
            for ref in (tag, latest):
                try:
                    ids[ref] = client.api.inspect_image(ref)["Id"]
                except Exception:
                    ids[ref] = None
            out[name] = {"tag": tag, "id": ids[tag], "latest_id": ids[latest]}
            if ids[tag] != ids[latest]:
                console.print(
                    f"[yellow]note: {latest} is not {tag} (the image pygent runs); docker CLI baselines use {latest}[/yellow]"
                )
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"[:300]
        console.print(f"[red]preflight: {out['error']}[/red]")
    return out


def _cleanup(ctx: Ctx, console) -> list[dict]:
    """Drain pools, close sandboxes, then check nothing of ours is left on the engine."""
    try:
        from pygent.sandbox import lifecycle, pool

        pool.drain_all()
        lifecycle.close_all()
        left = leftover_containers(ctx)
    except Exception as exc:
        console.print(f"[red]cleanup/leak check failed: {exc}[/red]")
        return []
    # Remove what is provably ours (our session labels); report anything else.
    if left:
        from pygent.sandbox.engine import get_client

        api = get_client().api
        for c in left:
            if (c.get("Labels") or {}).get(lifecycle.LABEL_SESSION) in ctx.sessions | {lifecycle.SESSION_ID}:
                try:
                    api.remove_container(c["Id"], force=True, v=True)
                except Exception:
                    pass
    return left
