"""`pygent-runner run` and `pygent-runner chat`: an agent in the terminal.

Each step is shown as it happens (assistant text, tool call, output, duration),
delegated tasks in a live table; `--json` prints a machine-readable transcript
instead. Custom models load with `--custom-model path/to/file.py:Class` (or
`package.module:attr`), so a model needs no API key.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import time
import threading
from pathlib import Path
from typing import Any, Optional

import typer

from .common import PROG, report

EXIT_STOPPED, EXIT_ERROR, EXIT_LIMIT = 0, 1, 3


def load_custom_model(spec: str) -> Any:
    """'file.py:Name' or 'pkg.mod:Name' -> an instance (a class is instantiated, a factory called)."""
    from ..errors import ConfigError

    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise ConfigError(f"--custom-model {spec!r} must look like path/to/file.py:Class or package.module:Class")
    try:
        if target.endswith(".py") or "/" in target:
            path = Path(target).resolve()
            module_spec = importlib.util.spec_from_file_location(f"pygent_custom_{path.stem}", path)
            if module_spec is None or module_spec.loader is None:
                raise ConfigError(f"cannot load {path}")
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
        obj = getattr(module, attr)
    except (OSError, ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load custom model {spec!r}: {exc}") from None
    if isinstance(obj, type) or (callable(obj) and not hasattr(obj, "chat")):
        obj = obj()  # a class, or a factory function
    return obj


def _make_agent(
    custom_model: Optional[str], model: Optional[str], image: Optional[str], workspace: Optional[Path], on_event: Any,
    allow_hosts: Optional[list[str]] = None, log_dir: Optional[Path] = None,
) -> Any:
    from .. import models
    from ..agent import Agent
    from ..errors import ModelError
    from ..models import NO_MODEL_MESSAGE
    from ..settings import DEFAULT_BASE_URL, get_settings

    if custom_model:
        chosen = load_custom_model(custom_model)
        models.set_custom_model(chosen)  # delegated tasks use it too
    else:
        s = get_settings()
        if models.get_custom_model() is None and not s.openai_api_key and s.openai_base_url.rstrip("/") == DEFAULT_BASE_URL:
            raise ModelError(NO_MODEL_MESSAGE.replace("pass Agent(model=...)", "pass --custom-model file.py:Class"))
        chosen = models.default_model()
    from .common import cli_policy

    policy = cli_policy(allow_hosts=allow_hosts) if allow_hosts else None
    from ..agent.runlog import default_log_dir

    # Every run of the command line is recorded (crash-safe JSONL; `pygent-runner view` reads it).
    return Agent(model=chosen, model_name=model, image=image, workspace=workspace, policy=policy, on_event=on_event,
                 log_dir=log_dir or default_log_dir())


def _agent_or_exit(*args: Any) -> Any:
    """Configuration problems end the command with one line, never a traceback."""
    from ..errors import PygentError
    from .common import fail

    try:
        return _make_agent(*args)
    except PygentError as exc:
        fail(exc)


class _Display:
    """Renders agent events with rich; tasks in a live table under the scrolling log."""

    def __init__(self, console: Any) -> None:
        from rich.live import Live

        self.console = console
        self.tasks: dict[str, dict] = {}
        self.model_note = ""
        self.live = Live(self._table(), console=console, transient=False, auto_refresh=False)

    def _table(self) -> Any:
        from rich.table import Table

        table = Table(title="delegated tasks", expand=False, show_edge=False)
        for col in ("id", "status", "steps", "elapsed", "reason"):
            table.add_column(col)
        for t in self.tasks.values():
            colour = {"finished": "green", "failed": "red", "timeout": "red", "lost": "red", "cancelled": "yellow"}.get(t["status"], "cyan")
            table.add_row(t["task_id"], f"[{colour}]{t['status']}[/]", str(t["steps"]), f"{t['elapsed']:.1f}s", (t.get("reason") or "")[:60])
        return table if self.tasks else ""

    def __call__(self, event: Any) -> None:
        from rich.markup import escape as escape_markup
        from rich.panel import Panel

        from ..agent.format import clean_str

        def escape(text: str) -> str:  # no control character reaches the terminal, whoever wrote it
            return escape_markup(clean_str(text))

        if event.kind == "model":
            d = event.data
            tokens = (d.get("usage") or {}).get("total_tokens")
            self.model_note = (f", {tokens} tokens" if tokens is not None else "") + (f", {d['retries']} retries" if d.get("retries") else "")
        elif event.kind == "assistant":
            if event.content:
                self.console.print(Panel(escape(event.content), title=f"assistant ({event.duration:.2f}s{self.model_note})", border_style="cyan", title_align="left"))
        elif event.kind == "tool":
            args = event.arguments if isinstance(event.arguments, str) else json.dumps(event.arguments)
            self.console.print(f"[bold magenta]▶ {escape(event.tool or '')}[/] {escape(args[:500])}")
            style = "red" if event.content.startswith("error:") or not event.content.startswith("exit code: 0") and event.tool == "bash" else "green"
            self.console.print(Panel(escape(event.content[:4000]), title=f"{escape(event.tool or '')} ({event.duration * 1000:.0f} ms)", border_style=style, title_align="left"))
        elif event.kind == "task":
            self.tasks[event.data["task_id"]] = event.data
        elif event.kind == "output":  # a running command's output as it arrives (dim: the result follows)
            self.console.print(escape(event.content or ""), style="dim", end="", soft_wrap=True, highlight=False)
            return
        self.live.update(self._table(), refresh=True)


class _ModelCalls:
    """Keeps each model call's figures (latency, retries, token usage) and each tool call's
    (duration, what its commands cost) for the --json transcript."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.tools: list[dict[str, Any]] = []
        self.refused: list[dict[str, Any]] = []  #: the egress proxy's refusals, one per host per command

    def __call__(self, event: Any) -> None:
        if event.kind == "model":
            self.calls.append({"step": len(self.calls) + 1, **{k: v for k, v in event.data.items()}})
        elif event.kind == "egress_refused":
            self.refused.append({"step": len(self.calls), "note": event.content, **event.data})
        elif event.kind == "tool":
            self.tools.append({"step": len(self.calls), "tool": event.tool, "duration": round(event.duration, 6),
                               "cost": event.data.get("cost")})

    def usage(self) -> dict[str, int] | None:
        """Token counts summed over the run's calls; None when the provider reported none."""
        from ..call_stats import sum_usage

        return dict(sum_usage(self.calls) or {}) or None  # type: ignore[arg-type]


def _transcript(task: str, result: Any, agent: Any, started: float, model_calls: _ModelCalls | None = None) -> dict[str, Any]:
    return {
        "task": task,
        "reason": result.reason,
        "steps": result.steps,
        "error": result.error,
        "duration": round(time.monotonic() - started, 3),
        "model_calls": model_calls.calls if model_calls is not None else [],
        "usage": model_calls.usage() if model_calls is not None else None,
        "tool_calls": model_calls.tools if model_calls is not None else [],
        "egress_refused": model_calls.refused if model_calls is not None else [],
        "log": str(agent.run_log.path) if agent.run_log is not None else None,
        "tasks": agent.tasks.wait(timeout=0),
        "history": _clean_history(agent.history),
    }


def _clean_history(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The history with every string cleaned (format.clean_str): the model's own text may carry escapes."""
    from ..agent.format import clean_str

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return clean_str(value)
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return [clean(m) for m in history]


def _baseline(agent: Any) -> Any:
    """--diff: the workspace as the run starts (the sandbox starts now). Exits 2 when it cannot be taken."""
    from ..errors import PygentError

    try:
        return agent.runtime.sandbox.snapshot()
    except PygentError as exc:
        typer.echo(f"error: --diff: {exc}", err=True)
        agent.close()
        raise typer.Exit(2) from None


def _changes(agent: Any, baseline: Any) -> Any:
    """--diff: what the run changed; emitted as a "changes" StepEvent too (for run logs)."""
    from ..agent.events import StepEvent

    changes = agent.runtime.changes(baseline)
    agent._emit(StepEvent("changes", data=changes.as_dict()))
    return changes


def _exit_code(reason: str) -> int:
    return {"stop": EXIT_STOPPED, "ask_user": EXIT_STOPPED, "error": EXIT_ERROR}.get(reason, EXIT_LIMIT)


def _port_specs(values: list[str]) -> list[tuple[int, int]]:
    """--expose values, checked as exec's -p (one error line, exit 2)."""
    from .exec import _port_spec
    from .exec_options import UsageError

    try:
        return [_port_spec("--expose", v) for v in values]
    except UsageError as exc:
        report(exc)
        raise typer.Exit(2) from None


def _expose_when_started(agent: Any, ports: list[tuple[int, int]]) -> None:
    """Start the agent's sandbox now and expose `ports` on it; each URL goes to stderr once it answers.

    Why now: the agent starts its sandbox at its first command anyway, and a URL the user can
    open must exist before the agent's server does. A sandbox the agent loses (and replaces)
    takes its ports with it.
    """
    from ..errors import PygentError

    def work() -> None:
        try:
            sandbox = agent.runtime.sandbox
            forwards = [sandbox.forward(port, host_port) for port, host_port in ports]
        except (PygentError, OSError) as exc:
            report(exc, prefix="warning")
            return
        for fwd in forwards:
            threading.Thread(target=announce, args=(fwd,), name=f"pygent-announce-{fwd.port}", daemon=True).start()

    def announce(fwd: Any) -> None:
        if fwd.wait_answering(1e9):
            sys.stderr.write(f"{PROG}: port {fwd.port} is answering at {fwd.url}\n")
            sys.stderr.flush()

    threading.Thread(target=work, name="pygent-expose", daemon=True).start()


def register(app: typer.Typer) -> None:
    from .common import allow_host_option

    @app.command()
    def run(
        task: str = typer.Argument(..., help="What the agent should do."),
        model: Optional[str] = typer.Option(None, help="Model name sent to the provider (PYGENT_MODEL)."),
        custom_model: Optional[str] = typer.Option(None, "--custom-model", help="A Model to use: path/to/file.py:Class or package.module:Class."),
        image: Optional[str] = typer.Option(None, help="Sandbox image (PYGENT_IMAGE; default: bundled python)."),
        max_steps: int = typer.Option(20, "--max-steps", min=1, help="Steps before giving up."),
        max_time: Optional[float] = typer.Option(None, "--max-time", min=0.1, help="Seconds for the whole run."),
        workspace: Optional[Path] = typer.Option(None, help="Host directory mounted as /workspace (explicit loosening)."),
        as_json: bool = typer.Option(False, "--json", help="Print a machine-readable transcript instead of the live view."),
        allow_host: Optional[list[str]] = allow_host_option(),
        log_dir: Optional[Path] = typer.Option(None, "--log-dir", help="Where this run's log goes (PYGENT_LOG_DIR; default $XDG_STATE_HOME/pygent-runner/runs)."),
        diff: bool = typer.Option(False, "--diff", help="At the end, print what the run changed in /workspace (files added, modified, deleted, and diffs); with --json, the transcript's \"changes\"."),
        expose: Optional[list[str]] = typer.Option(
            None, "--expose", metavar="PORT[:HOSTPORT]",
            help="Reach the agent's server on PORT inside its sandbox at http://127.0.0.1:HOSTPORT (any free port "
                 "if left out), over the sandbox's channel; the URL is printed on stderr once it answers (repeatable)."),
    ) -> None:
        """Run an agent on TASK until it calls stop; every command runs in a sandbox.

        Exit code: 0 stopped (or asked the user), 1 model/API error, 3 a limit was reached.
        """
        from rich.console import Console

        console = Console(stderr=as_json)
        model_calls = _ModelCalls() if as_json else None
        display = None if as_json else _Display(console)
        started = time.monotonic()
        ports = _port_specs(expose or [])
        agent = _agent_or_exit(custom_model, model, image, workspace, display or model_calls, allow_host, log_dir)
        if ports:
            _expose_when_started(agent, ports)
        try:
            baseline = _baseline(agent) if diff else None
            if display is not None:
                with display.live:
                    result = agent.run_until_stop(task, max_steps=max_steps, max_time=max_time)
                    agent.tasks.wait(timeout=max_time or 600)
                console.print(f"\n[bold]{'done' if result.reason in ('stop', 'ask_user') else 'ended'}:[/] {result}")
                if baseline is not None:
                    sys.stdout.write(_changes(agent, baseline).render())
            else:
                result = agent.run_until_stop(task, max_steps=max_steps, max_time=max_time)
                agent.tasks.wait(timeout=max_time or 600)
                record = _transcript(task, result, agent, started, model_calls)
                if baseline is not None:
                    record["changes"] = _changes(agent, baseline).as_dict()
                sys.stdout.write(json.dumps(record, default=str) + "\n")
        finally:
            agent.close()
        raise typer.Exit(_exit_code(result.reason))

    @app.command()
    def chat(
        model: Optional[str] = typer.Option(None, help="Model name sent to the provider (PYGENT_MODEL)."),
        custom_model: Optional[str] = typer.Option(None, "--custom-model", help="A Model to use: path/to/file.py:Class."),
        image: Optional[str] = typer.Option(None, help="Sandbox image (PYGENT_IMAGE)."),
        workspace: Optional[Path] = typer.Option(None, help="Host directory mounted as /workspace."),
        allow_host: Optional[list[str]] = allow_host_option(),
        log_dir: Optional[Path] = typer.Option(None, "--log-dir", help="Where this session's log goes (PYGENT_LOG_DIR; default $XDG_STATE_HOME/pygent-runner/runs)."),
    ) -> None:
        """Interactive session: each message runs the agent until it stops. /exit quits, /tasks lists tasks."""
        from rich.console import Console

        console = Console()
        display = _Display(console)
        agent = _agent_or_exit(custom_model, model, image, workspace, display, allow_host, log_dir)
        console.print("[bold green]pygent[/] in a sandbox. /exit to quit, /tasks for delegated tasks.")
        try:
            while True:
                try:
                    line = console.input("[cyan]> [/]")
                except EOFError:
                    break
                cmd = line.strip()
                if cmd in ("/exit", "/quit"):
                    break
                if cmd == "/tasks":
                    console.print_json(json.dumps(agent.tasks.list()))
                    continue
                if not cmd:
                    continue
                with display.live:
                    result = agent.run_until_stop(cmd)
                console.print(f"[dim]{result}[/]")
        except KeyboardInterrupt:
            pass
        finally:
            agent.close()
