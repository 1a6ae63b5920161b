"""`pygent-runner gc`: remove sandboxes whose owner is gone (or that are too old)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    import typer


def register(app: "typer.Typer") -> None:
    import typer

    @app.command("gc")
    def gc(
        max_age: Optional[float] = typer.Option(
            None, "--max-age", metavar="SECONDS", min=0,
            help="Also remove sandboxes older than this, even if their owner lives (default: PYGENT_GC_MAX_AGE, 6 h).",
        ),
        everything: bool = typer.Option(
            False, "--all", help="Remove every pygent sandbox on the engine, including live processes' ones.",
        ),
    ) -> None:
        """Remove orphaned sandboxes; print each one removed (id, reason) and a summary line."""
        from ..errors import PygentError
        from .common import fail

        try:
            from ..sandbox.gc import collect

            removed = collect(max_age, everything=everything)
        except PygentError as exc:
            fail(exc)
        for r in removed:
            owner = f"owner pid {r.owner_pid}" if r.owner_pid is not None else "owner unknown"
            print(f"removed {r.id[:12]}  {r.reason}  ({owner}, age {_age(r.age)})", flush=True)
        n = len(removed)
        print(f"gc: removed {n} sandbox container{'s' if n != 1 else ''}" if n else "gc: nothing to remove", flush=True)


def _age(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"
