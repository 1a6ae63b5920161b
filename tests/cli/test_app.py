"""The command line as a whole: help, mounting, errors, start-up imports."""

from __future__ import annotations

import subprocess
import sys

from support.cli import REPO, cli_env, run


def test_help_lists_every_command():
    r = run("--help")
    assert r.returncode == 0
    for name in ("exec", "gc", "doctor", "images"):
        assert name in r.stdout.decode()


def test_no_arguments_shows_help():
    r = run()
    assert b"Usage" in r.stdout + r.stderr
    assert r.returncode in (0, 2)


def test_images_sub_app_is_mounted():
    r = run("images", "--help")
    assert r.returncode == 0
    assert b"build" in r.stdout and b"list" in r.stdout


def test_version():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith(b"pygent-runner ")


def test_unknown_command_is_a_usage_error_without_traceback():
    r = run("frobnicate")
    assert r.returncode == 2
    assert b"Traceback" not in r.stderr


def test_gc_bad_value_is_a_usage_error():
    r = run("gc", "--max-age", "soon")
    assert r.returncode == 2
    assert b"Traceback" not in r.stderr


def test_exec_start_up_imports_no_cli_framework():
    """`exec` must not pay for typer/click/rich: main() routes it before they are imported."""
    code = (
        "import sys\n"
        "from pygent.cli import exec as e\n"
        "e.parse_args(['--memory', '1g', '--', 'true'])\n"
        "bad = sorted(m for m in ('typer', 'click', 'rich', 'docker', 'pydantic') if m in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=REPO, env=cli_env())
    assert r.returncode == 0, r.stderr
    heavy = set(filter(None, r.stdout.decode().strip().split(",")))
    assert not heavy & {"typer", "click", "rich"}, heavy


def test_app_is_reachable_and_drives_exec(capfd):
    """pygent.cli.app (built lazily) also runs exec, through the same parser."""
    from typer.testing import CliRunner

    from pygent.cli import app

    r = CliRunner().invoke(app, ["exec", "--memory", "lots", "--", "true"])
    assert r.exit_code == 125


def test_exec_start_up_does_not_import_the_agent_stack():
    """The package root must stay lazy: exec needs no httpx/tenacity/agent."""
    code = (
        "import sys\n"
        "import pygent.cli.exec\n"
        "print(','.join(sorted(m for m in ('httpx', 'tenacity', 'pygent.agent', 'pygent.models', 'pygent.openai_compat') if m in sys.modules)))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=REPO, env=cli_env())
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().strip() == ""
