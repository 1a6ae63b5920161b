"""Section 4: a command printing a lot (50 MB of zeros), end to end, and host memory during it.

Each figure comes from a fresh `python -m bench.child` process, so the RSS it
reports is that measurement's alone: 'RSS Δ' is VmRSS after the runs minus
before (result of the last run still held), 'peak Δ' is VmHWM (reset just
before the runs) minus the RSS before.
"""

from __future__ import annotations

from ..context import Ctx
from ..core import Row, Section

MB = 1_000_000


def _mb(kb: int | None) -> float | None:
    return None if kb is None else kb / 1024.0


def _row(key: str, name: str, rep: dict, nbytes: int, vs: dict[str, str] | None = None,
         scale: float | None = None, scale_label: str = "") -> Row:
    times = rep["times_ms"]
    best = min(times)
    extra = {
        "MB/s": (nbytes / MB) / (best / 1000.0) if best else None,
        "RSS Δ MB": _mb(rep["rss_after_kb"] - rep["rss_before_kb"]),
        "peak Δ MB": _mb(rep["peak_kb"] - rep["rss_before_kb"]) if rep.get("peak_kb") else None,
        "bytes kept": rep.get("kept_bytes"),
    }
    if scale:
        extra[f"est. {scale_label} s"] = sorted(times)[len(times) // 2] * scale / 1000.0
    note = "" if rep.get("complete", True) else "[red]output incomplete![/red]"
    if rep.get("exit_code") not in (None, 0) or rep.get("timed_out"):
        note = f"[red]exit {rep.get('exit_code')} timed_out={rep.get('timed_out')}[/red]"
    return Row(key, name, times, vs=vs or {}, extra=extra, note=note)


def run(ctx: Ctx, section: Section) -> None:
    big = 5 * MB if ctx.quick else 50 * MB
    small = 1 * MB if ctx.quick else 5 * MB
    reps = ctx.n(3, 1)
    label = f"{big // MB} MB"
    vs = {"÷ host": "host"}

    host = ctx.child("host", str(big), str(reps))
    section.add(_row("host", f"host: subprocess.run(capture_output) of {label}", host, big))
    ctx.log("host done")
    server = ctx.child("output", "python", str(big), str(reps))
    section.add(_row("server", f"sb.exec(head -c {label}) — python image, server", server, big, vs))
    ctx.log("server path done")
    plain = ctx.child("output", "minimal", str(big), str(reps))
    section.add(_row("plain", f"sb.exec(head -c {label}) — minimal image (server from the tooling volume)", plain, big, vs))
    ctx.log("plain path done")
    try:
        er = ctx.child("exec_run", str(small), str(reps), timeout=120)
        section.add(_row("exec_run", f"docker-py exec_run(demux=True) of {small // MB} MB", er, small, scale=big / small, scale_label=label))
    except RuntimeError as exc:
        section.add(Row("exec_run", f"docker-py exec_run(demux=True) of {small // MB} MB", na=str(exc)[:200]))
    cap = server.get("max_output")
    section.notes.append(
        f"pygent keeps head+tail of each stream (max_output={cap} bytes per stream), so 'bytes kept' is the "
        "capped result; the host and exec_run rows keep everything. exec_run is measured on "
        f"{small // MB} MB (it is slow) and scaled linearly to {label} in 'est. {label} s'."
    )
