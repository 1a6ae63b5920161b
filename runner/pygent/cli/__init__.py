"""The `pygent-runner` command line.

    pygent-runner exec [OPTIONS] -- CMD [ARGS...]   one command in a fresh sandbox
    pygent-runner shell [OPTIONS]                   an interactive terminal in a fresh sandbox
    pygent-runner mcp [--http HOST:PORT] [OPTIONS]  sandboxes for any agent over MCP (cli/mcp.py, pygent/mcp/)
    pygent-runner gc [--max-age SECONDS] [--all]    remove orphaned sandboxes
    pygent-runner doctor                            check the engine, runtimes, images, limits
    pygent-runner images build|list                 the bundled sandbox images
    pygent-runner run / chat                        the agent (when installed: cli/run.py)

Start-up time: `main()` sends `exec` straight to cli/exec.py without importing
typer/click/rich (~60-100 ms); the typer app is built only for the other
commands (and is reachable as `pygent.cli.app`, built on first access).
`mcp` is routed the same way (its options are exec's); the mcp SDK is imported
only when that command runs.
"""


import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import typer

__all__ = ["app", "build_app", "main"]

_app: "typer.Typer | None" = None


def build_app() -> "typer.Typer":
    """The typer app with every subcommand mounted (built once)."""
    global _app
    if _app is not None:
        return _app
    import typer

    from . import doctor, gc
    from .exec import HELP as EXEC_HELP
    from .images import app as images_app

    app = typer.Typer(
        name="pygent-runner",
        help="Run untrusted commands and agents in disposable, hardened Docker sandboxes.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    @app.callback(invoke_without_command=True)
    def _root(
        version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
    ) -> None:
        if version:
            print(_version())
            raise typer.Exit(0)

    @app.command(
        "exec",
        help=EXEC_HELP.split("\n\n", 2)[1].strip() + "\n\nOptions: see `pygent-runner exec --help`.",
        short_help="Run one command in a fresh sandbox (exit status passes through).",
        add_help_option=False,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "allow_interspersed_args": False},
    )
    def _exec(ctx: typer.Context) -> None:
        # main() routes `exec` to the fast path before typer is imported; this runs only
        # when the app is driven directly (e.g. CliRunner). Click drops a `--` here, so
        # a command that starts with '-' needs main().
        from .exec import run

        raise typer.Exit(run(list(ctx.args)))

    @app.command(
        "mcp",
        help="Serve sandboxes to any MCP client (stdio, or --http HOST:PORT). Options: see `pygent-runner mcp --help`.",
        short_help="Serve hardened sandboxes over the Model Context Protocol.",
        add_help_option=False,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )
    def _mcp(ctx: typer.Context) -> None:
        # main() routes `mcp` before typer is imported; this runs when the app is driven directly.
        from .mcp import run

        raise typer.Exit(run(list(ctx.args)))

    @app.command(
        "shell",
        help="An interactive terminal in a fresh, hardened sandbox (same options as exec; removed on exit).",
        add_help_option=False,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "allow_interspersed_args": False},
    )
    def _shell(ctx: typer.Context) -> None:
        from .shell import run

        raise typer.Exit(run(list(ctx.args)))

    gc.register(app)
    doctor.register(app)
    from . import ps, view

    ps.register(app)
    view.register(app)
    app.add_typer(images_app, name="images")
    _register_run(app)
    _app = app
    return app


def _register_run(app: "typer.Typer") -> None:
    """`run` and `chat` live in cli/run.py (another module's job); mount them when present."""
    try:
        from .run import register
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name == f"{__name__}.run":
            return  # not written yet: the other commands work without it
        from .common import report

        report(f"`run`/`chat` unavailable: {exc}", prefix="warning")
        return
    register(app)


def _version() -> str:
    from ..version import package_version

    return f"pygent-runner {package_version()}"


def main(argv: list[str] | None = None) -> None:
    """Console script entry point."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "exec":
        from .exec import main as exec_main

        exec_main(args[1:])  # never returns
    if args and args[0] == "shell":  # as exec: click would eat a `--` before the command
        from .shell import run as shell_run

        sys.exit(shell_run(args[1:]))
    if args and args[0] == "mcp":
        from .mcp import main as mcp_main

        mcp_main(args[1:])  # never returns
    from ..errors import PygentError
    from .common import EXIT_ERROR, report

    app = build_app()
    try:
        app(args=args, prog_name="pygent-runner")
    except PygentError as exc:  # a command that let one through: still one line, no traceback
        report(exc)
        sys.exit(EXIT_ERROR)


def __getattr__(name: str) -> Any:
    if name == "app":
        return build_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
