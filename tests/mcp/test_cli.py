"""`pygent-runner mcp`'s options are exec's (same parser, same policy), and the CLI stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mcphelpers import REPO, SERVER, server_env


def test_the_sandbox_options_mean_what_they_mean_for_exec(tmp_path):
    from pygent.cli.exec import build_policy, parse_args
    from pygent.cli.mcp import _config, parse

    args = ["--image", "minimal", "-m", "1g", "--cpus", "0.5", "--pids", "64", "--network", "--timeout", "5",
            "-e", "A=B", "-v", f"{tmp_path}:/data:ro", "--idle-timeout", "7"]
    config = _config(parse(args))
    exec_policy = build_policy(parse_args([a for a in args if a not in ("--idle-timeout", "7")] + ["--", "true"]))
    assert config.policy == exec_policy
    assert (config.policy.memory, config.policy.cpus, config.policy.pids, config.policy.network) == ("1g", 0.5, 64, True)
    assert (config.image, config.timeout, config.env, config.idle_timeout) == ("minimal", 5.0, {"A": "B"}, 7.0)
    assert _config(parse(["--idle-timeout", "0"])).idle_timeout is None  # 0 = never
    assert _config(parse([])).policy.network is False  # secure by default, as exec


@pytest.mark.parametrize(
    "args, message",
    [
        (["--memory", "lots"], "memory"),
        (["--http", "127.0.0.1"], "is not HOST:PORT"),
        (["--http", "10.0.0.1:8000"], "--allow-remote"),
        (["--allow-remote"], "only applies to --http"),
        (["--token", "short"], "at least 16 characters"),
        (["--idle-timeout", "-1"], ">= 0"),
        (["--workdir", "/x"], "no such option"),
        (["stray"], "unexpected argument"),
    ],
)
def test_bad_options_are_one_clear_line_and_exit_2(args, message):
    r = subprocess.run([*SERVER, *args], capture_output=True, text=True, env=server_env(), cwd=REPO, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pygent-runner: error: ") and message in lines[0], r.stderr


def test_the_cli_does_not_import_the_mcp_sdk_at_start_up():
    probe = "import sys, pygent.cli, pygent.cli.exec; print(sorted(m for m in ('mcp', 'starlette', 'uvicorn', 'typer') if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr
