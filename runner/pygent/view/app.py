"""`pygent-runner view`: a Starlette app over a log directory, served by uvicorn.

Why Starlette and uvicorn: the `mcp` SDK already brings both, so the viewer adds no
dependency. Every response carries a Content-Security-Policy allowing only our own
script and style (no inline script, no other origin): even a mistake in escaping
could not run a log's script. Live runs stream finished steps as server-rendered
HTML over SSE (`/run/ID/stream`), which view.js appends.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from . import pages, reader

__all__ = ["make_app", "CSP"]

CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'"
RUNS_PER_PAGE = 200
_POLL = 0.25


def _headers() -> dict[str, str]:
    return {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def _int(value: str | None, default: int) -> int:
    try:
        return max(1, int(value or default))
    except ValueError:
        return default


def make_app(log_dir: Path) -> Starlette:
    """The viewer of `log_dir`'s run logs."""
    log_dir = Path(log_dir)

    async def runs(request: Request) -> Response:
        q = request.query_params.get("q", "")
        status = request.query_params.get("status", "")
        page = _int(request.query_params.get("page"), 1)
        found = reader.list_runs(log_dir)
        if q:
            found = [r for r in found if q.lower() in r.task.lower() or q in r.id]
        if status:
            found = [r for r in found if r.status == status]
        shown = found[(page - 1) * RUNS_PER_PAGE: page * RUNS_PER_PAGE]
        return HTMLResponse(pages.runs_page(shown, q, status, page, RUNS_PER_PAGE, len(found)), headers=_headers())

    def _load(request: Request) -> tuple[Path, list[str], list[dict[str, Any]]] | Response:
        path = reader.run_path(log_dir, request.path_params["run_id"])
        if path is None:
            return PlainTextResponse("no such run", status_code=404, headers=_headers())
        task_path = [p for p in request.query_params.get("task", "").split("/") if p]
        return path, task_path, reader.read_events(path)

    async def run(request: Request) -> Response:
        loaded = _load(request)
        if isinstance(loaded, Response):
            return loaded
        path, task_path, events = loaded
        summary = reader.summary(path)
        mine = reader.task_events(events, task_path)
        steps = reader.steps_of(mine)
        page = _int(request.query_params.get("page"), 1)
        last_page = max(1, (len(steps) + pages.PAGE_STEPS - 1) // pages.PAGE_STEPS)
        live = None
        if summary.status == "running" and page >= last_page:
            task_q = f"&task={'/'.join(task_path)}" if task_path else ""
            live = f"/run/{summary.id}/stream?after={sum(1 for s in steps if s.done)}{task_q}"
        html = pages.run_page(summary, steps, reader.tasks_of(mine), task_path, min(page, last_page), live)
        return HTMLResponse(html, headers=_headers())

    async def stream(request: Request) -> Response:
        loaded = _load(request)
        if isinstance(loaded, Response):
            return loaded
        path, task_path, _ = loaded
        sent = _int(request.query_params.get("after"), 0) if request.query_params.get("after") != "0" else 0

        async def events() -> AsyncIterator[bytes]:
            nonlocal sent
            while True:
                all_events = reader.read_events(path)
                done = [s for s in reader.steps_of(reader.task_events(all_events, task_path)) if s.done]
                for step in done[sent:]:
                    yield b"event: step\n" + b"".join(b"data: " + line.encode() + b"\n" for line in pages.step_html(step).split("\n")) + b"\n"
                sent = max(sent, len(done))
                if all_events and all_events[-1].get("kind") == "log_end":
                    yield b"event: end\ndata: ended\n\n"
                    return
                if await request.is_disconnected():
                    return
                await asyncio.sleep(_POLL)

        return StreamingResponse(events(), media_type="text/event-stream", headers={**_headers(), "Cache-Control": "no-cache"})

    static = StaticFiles(directory=str(Path(__file__).parent / "static"))
    return Starlette(routes=[
        Route("/", runs),
        Route("/run/{run_id}", run),
        Route("/run/{run_id}/stream", stream),
        Mount("/static", app=static),
    ])


def serve(log_dir: Path, host: str = "127.0.0.1", port: int = 7777) -> None:
    """Serve the viewer until interrupted (uvicorn)."""
    import uvicorn

    uvicorn.run(make_app(log_dir), host=host, port=port, log_level="warning")
