"""`pygent-runner ps` and `pygent-runner stop`: our live sandboxes, whatever process owns them.

Why over Backend.list_ours(): every sandbox carries our labels (owner pid and host,
created, purpose), so any process can list them all and tell whose they are, and
`stop` can refuse anything that is not ours. A sandbox taken from a warm pool is
labelled "pool" at creation; what it serves since is read from its owner's claims
file (sandbox/lifecycle.py).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import typer


def rows() -> list[dict[str, Any]]:
    """One dict per sandbox of ours on the engine (the --json form). Raises: EngineUnavailable."""
    from ..sandbox import lifecycle
    from ..sandbox.registry import get_backend

    backend = get_backend()
    found = backend.list_ours()
    claims = lifecycle.read_claims()
    running = [s.id for s in found if s.state in ("running", "paused")]
    usage = backend.usage(running) if running else {}
    now = time.time()
    out = []
    for s in found:
        labels = s.labels
        try:
            pid: int | None = int(labels.get(lifecycle.LABEL_OWNER_PID, ""))
        except ValueError:
            pid = None
        host = labels.get(lifecycle.LABEL_OWNER_HOST, "")
        alive = None if host != lifecycle.HOSTNAME or pid is None else lifecycle.pid_alive(pid)
        purpose = labels.get(lifecycle.LABEL_PURPOSE) or ("pool" if labels.get(lifecycle.LABEL_POOLED) else "sandbox")
        if purpose == "pool" and s.id in claims:
            purpose = claims[s.id]
        try:
            age = max(0.0, now - float(labels.get(lifecycle.LABEL_CREATED, "")))
        except ValueError:
            age = None
        used = usage.get(s.id, {})
        out.append({"id": s.id[:12], "image": s.image, "purpose": purpose, "owner_pid": pid, "owner_host": host,
                    "owner_alive": alive, "age_s": None if age is None else round(age, 1), "state": s.state,
                    "cpu_percent": round(used["cpu_percent"], 1) if "cpu_percent" in used else None,
                    "memory": int(used["memory"]) if "memory" in used else None})
    return out


def register(app: "typer.Typer") -> None:
    import typer

    @app.command("ps")
    def ps(as_json: bool = typer.Option(False, "--json", help="One JSON list instead of the table.")) -> None:
        """Our live sandboxes on the engine (any process's): id, image, purpose, owner, age, state, CPU, memory."""
        from ..errors import PygentError
        from .common import fail
        from .gc import _age

        try:
            found = rows()
        except PygentError as exc:
            fail(exc)
        if as_json:
            print(json.dumps(found))
            return
        head = f"{'ID':12}  {'IMAGE':28}  {'PURPOSE':8}  {'OWNER':18}  {'AGE':7}  {'STATE':8}  {'CPU%':>6}  {'MEMORY':>9}"
        print(head)
        for r in found:
            alive = {True: "alive", False: "gone", None: "?"}[r["owner_alive"]]
            cpu = "" if r["cpu_percent"] is None else f"{r['cpu_percent']:.1f}"
            mem = "" if r["memory"] is None else f"{r['memory'] / 1e6:.1f}MB"
            print(f"{r['id']:12}  {r['image'][:28]:28}  {r['purpose']:8}  {str(r['owner_pid']) + ' ' + alive:18}  "
                  f"{_age(r['age_s']) if r['age_s'] is not None else '?':7}  {r['state']:8}  {cpu:>6}  {mem:>9}")

    @app.command("stop")
    def stop(ids: list[str] = typer.Argument(..., help="Sandbox ids (or unique prefixes) as `ps` shows them.")) -> None:
        """Remove sandboxes of ours; refuses any container that is not (exit 1, nothing removed)."""
        from ..errors import ConfigError, PygentError
        from ..sandbox.registry import get_backend
        from .common import fail

        try:
            backend = get_backend()
            ours = [s.id for s in backend.list_ours()]
            chosen = []
            for wanted in ids:
                matches = [cid for cid in ours if cid.startswith(wanted)] if len(wanted) >= 4 else []
                if len(matches) != 1:
                    why = "matches several of our sandboxes" if matches else "is not one of our sandboxes (pygent only stops its own)"
                    raise ConfigError(f"{wanted!r} {why}; `pygent-runner ps` lists them")
                chosen.append(matches[0])
            for cid in chosen:
                backend.remove(cid)
                print(f"stopped {cid[:12]}", flush=True)
        except PygentError as exc:
            fail(exc)
