"""Section 5: host memory (and fds, threads) per live sandbox, in a fresh process.

The child opens one sandbox first and closes it (docker client, imports and
background threads are then loaded), then opens COUNT sandboxes with
pool=False, runs one command in each, and reports the RSS growth / COUNT.
"""

from __future__ import annotations

from ..context import Ctx
from ..core import Row, Section, Target


def run(ctx: Ctx, section: Section) -> None:
    count = ctx.n(20, 3)
    for image in ("python", "minimal"):
        rep = ctx.child("memory", image, str(count), timeout=240)
        per_kb = (rep["rss_after_kb"] - rep["rss_before_kb"]) / count
        section.add(Row(
            f"per_sandbox_{image}", f"{count} live sandboxes, {image} image (samples: open_sandbox ms)",
            rep["open_ms"],
            extra={
                "RSS Δ/sandbox MB": per_kb / 1024.0,
                "RSS Δ total MB": (rep["rss_after_kb"] - rep["rss_before_kb"]) / 1024.0,
                "fds/sandbox": (rep["fds_after"] - rep["fds_before"]) / count,
                "threads/sandbox": (rep["threads_after"] - rep["threads_before"]) / count,
                "close all s": rep["close_all_s"],
            },
            targets=[Target("RSS Δ/sandbox MB", "<=", 2, unit="MB")],
        ))
        ctx.log(f"{image} done")
    section.notes.append("RSS is the benchmark child's own VmRSS (the engine's and containers' memory is not counted).")
