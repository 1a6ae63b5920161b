"""`pygent-runner shell`: an interactive terminal in a fresh, hardened sandbox (removed on exit).

Same options as `exec` (parsed by exec.parse_args, the policy by exec.build_policy),
so a person can try by hand exactly what an agent's commands get.
"""

from __future__ import annotations

import sys

from .common import EXIT_OK, EXIT_SANDBOX, PROG, report

HELP = f"""\
Usage: {PROG} shell [OPTIONS] [--] [CMD [ARGS...]]

  An interactive terminal (default: bash) in a fresh sandbox with the same
  hardening and options as `exec`: a real TTY (resize, Ctrl-C to the
  foreground command, job control). The sandbox is removed when the shell
  exits or the terminal goes away. Needs a terminal and the docker CLI.

Options: --image, -m/--memory, --cpus, --pids, --network/--no-network, -p/--publish, --bind,
  --runtime, -w/--workdir, -e/--env, -v/--mount, as for `{PROG} exec --help`.
"""


def run(argv: list[str]) -> int:
    from ..errors import PygentError
    from .exec import UsageError, build_policy, parse_args

    try:
        opts = parse_args(argv, cmd="shell", require_command=False)
        if opts.help:
            sys.stdout.write(HELP)
            return EXIT_OK
        if opts.timeout is not None:
            raise UsageError("--timeout does not apply to an interactive shell (exit it, or close the terminal)")
        if not sys.stdin.isatty():
            raise UsageError("shell needs a terminal on stdin (use `exec` to run commands without one)")
        policy = build_policy(opts)
        from ..sandbox.registry import get_backend
        from ..settings import get_settings

        image = opts.image or get_settings().pygent_image
        publish = None
        if opts.ports:
            from .exec import publish as expose_ports

            def publish(sandbox: object) -> None:
                expose_ports(sandbox, opts, None)
        return get_backend().interactive_shell(image, policy, opts.command or None, opts.workdir, opts.env or None, publish)
    except (UsageError, PygentError, OSError) as exc:
        report(exc)
        return EXIT_SANDBOX
