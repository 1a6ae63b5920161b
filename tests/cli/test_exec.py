"""`pygent-runner exec`, run for real as a subprocess against the engine."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from support.cli import cli_env, containers_of, one_error_line, popen, run, wait_gone, wait_started

pytestmark = pytest.mark.docker


# --------------------------------------------------------------------------- exit codes and streams


@pytest.mark.parametrize("script, code", [("true", 0), ("exit 3", 3), ("kill -9 $$", 137)])
def test_exit_code_passes_through(script, code):
    r = run("exec", "--", script)
    assert r.returncode == code, r.stderr
    assert r.stdout == b""


def test_stdout_and_stderr_are_separate_and_nothing_of_ours_on_stdout():
    r = run("exec", "--", "echo out; echo err >&2; printf 'no newline'")
    assert r.returncode == 0
    assert r.stdout == b"out\nno newline"
    assert r.stderr == b"err\n"


def test_arguments_are_quoted_and_a_single_argument_is_a_script():
    r = run("exec", "--", "printf", "%s|", "a b", "$HOME", "it's")
    assert r.stdout == b"a b|$HOME|it's|"
    r = run("exec", "--timeout", "20", "echo abc | wc -c")  # no `--`: the first word starts the command
    assert r.stdout.strip() == b"4"


def test_timeout_exits_124():
    start = time.monotonic()
    r = run("exec", "--timeout", "1", "--", "echo started; sleep 30")
    assert r.returncode == 124
    assert r.stdout == b"started\n"
    assert time.monotonic() - start < 15


def test_oom_kill_is_reported_and_exits_137():
    r = run("exec", "--memory", "48m", "--", "python3 -c 'x = bytearray(400 << 20)'")
    assert r.returncode == 137
    assert b"out of memory" in r.stderr.splitlines()[-1]
    assert r.stdout == b""


# --------------------------------------------------------------------------- errors: one line, 125


def test_engine_down_is_125_and_one_line():
    r = run("exec", "--", "true", env=cli_env(DOCKER_HOST="unix:///nonexistent.sock"))
    assert r.returncode == 125
    assert "no Docker engine answers" in one_error_line(r.stderr)
    assert r.stdout == b""


def test_unknown_image_is_125_and_one_line():
    r = run("exec", "--image", "no-such-image-pygent:nope", "--", "true")
    assert r.returncode == 125
    assert "no-such-image-pygent:nope" in one_error_line(r.stderr)
    assert r.stdout == b""


_BAD = [
    (["--memory", "lots", "--", "true"], "--memory"),
    (["--env", "NOEQUALS", "--", "true"], "--env"),
    (["--mount", "bad", "--", "true"], "--mount"),
    (["--mount", "/no/such/dir/pygent:/data", "--", "true"], "not a directory"),
    (["--mount", "/tmp:relative", "--", "true"], "--mount"),
    (["--cpus", "many", "--", "true"], "--cpus"),
    (["--pids", "1", "--", "true"], "--pids"),
    (["--timeout", "-1", "--", "true"], "--timeout"),
    (["--frobnicate", "--", "true"], "no such option"),
    (["--timeout"], "needs a value"),
    ([], "no command"),
]


def test_bad_option_values_are_125_and_one_line():
    # DOCKER_HOST points nowhere: bad values must be rejected before any engine call.
    env = cli_env(DOCKER_HOST="unix:///nonexistent.sock")
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda case: run("exec", *case[0], env=env), _BAD))
    for (args, needle), r in zip(_BAD, results):
        assert r.returncode == 125, (args, r.stderr)
        assert needle in one_error_line(r.stderr), args
        assert r.stdout == b"", args


def test_help_goes_to_stdout_and_exits_0():
    r = run("exec", "--help")
    assert r.returncode == 0
    assert b"Usage: pygent-runner exec" in r.stdout and b"125" in r.stdout


# --------------------------------------------------------------------------- stdin


def test_stdin_passes_through():
    r = run("exec", "--", "cat", input=b"abc")
    assert (r.returncode, r.stdout) == (0, b"abc")


@pytest.mark.parametrize("image", ["python", "minimal"])
def test_binary_stdin_and_stdout_are_intact(image):
    data = os.urandom(300_000) + bytes(range(256))
    r = run("exec", "--image", image, "--", "cat", input=data)
    assert r.returncode == 0, r.stderr
    assert r.stdout == data


def test_no_stdin_when_ours_is_devnull():
    r = run("exec", "--", "cat; echo done")  # stdin=/dev/null: cat sees EOF at once
    assert (r.returncode, r.stdout) == (0, b"done\n")


# --------------------------------------------------------------------------- live streaming


@pytest.mark.parametrize("image", ["python", "minimal"])
def test_output_streams_live(image):
    proc = popen("exec", "--image", image, "--", "echo first; echo err-first >&2; sleep 2; echo second")
    try:
        first = proc.stdout.readline()
        got_first = time.monotonic()
        err_first = proc.stderr.readline()
        rest = proc.stdout.read()
        proc.wait(timeout=30)
        ended = time.monotonic()
    finally:
        proc.kill()
        proc.wait()
    assert first == b"first\n" and err_first == b"err-first\n" and rest == b"second\n"
    assert ended - got_first > 1.5, "the first line arrived only when the command ended"


def test_reader_closing_our_stdout_stops_the_command():
    proc = popen("exec", "--timeout", "60", "--", "yes")
    assert proc.stdout.read(100).startswith(b"y\ny\n")
    proc.stdout.close()
    assert proc.wait(timeout=20) == 141
    assert proc.stderr.read() == b""


# --------------------------------------------------------------------------- options


def test_env_and_workdir():
    r = run("exec", "-e", "A=1", "--env", "B=x y=z", "-e", "EMPTY=", "--workdir", "/tmp", "--",
            'echo "$A|$B|${EMPTY-unset}"; pwd')
    assert r.stdout == b"1|x y=z|\n/tmp\n"
    r = run("exec", "-w", "sub", "--", "pwd")  # relative: under /workspace (must exist)
    # A command that cannot start is its result, as a shell reports it (126), not a sandbox error (125).
    assert r.returncode == 126 and b"/workspace/sub: No such file or directory" in r.stderr


def test_mounts_read_only_and_read_write(tmp_path):
    ro = tmp_path / "ro"
    rw = tmp_path / "rw"
    ro.mkdir()
    rw.mkdir()
    (ro / "in.txt").write_text("hello from the host\n")
    rw.chmod(0o777)  # the sandbox user is 1000:1000
    r = run(
        "exec", "--mount", f"{ro}:/data:ro", "-v", f"{rw}:/out", "--",
        "cat /data/in.txt; touch /data/new 2>/dev/null && echo WROTE-RO; echo made > /out/made.txt",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"hello from the host\n"
    assert not (ro / "new").exists()
    assert (rw / "made.txt").read_text() == "made\n"


def test_network_is_off_by_default_and_on_when_asked():
    r = run("exec", "--", "ls /sys/class/net")
    assert r.stdout.split() == [b"lo"]
    r = run("exec", "--network", "--", "ls /sys/class/net")
    if r.returncode == 125 and b"bridge" in r.stderr:  # this engine has no docker0 bridge to attach to
        one_error_line(r.stderr)
        return
    assert b"lo" in r.stdout.split() and len(r.stdout.split()) > 1


_LIMITS = (
    "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes; "
    "cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max; "
    "cat /sys/fs/cgroup/cpu.max 2>/dev/null || echo $(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us)"
)


def test_memory_pids_and_cpus_are_applied():
    r = run("exec", "--memory", "64m", "--pids", "50", "--cpus", "0.5", "--", _LIMITS)
    assert r.returncode == 0, r.stderr
    memory, pids, cpu = r.stdout.decode().splitlines()
    assert int(memory) == 64 << 20
    assert int(pids) == 50
    quota, period = map(int, cpu.split())
    assert quota / period == pytest.approx(0.5)


@pytest.mark.runsc
def test_runtime_runsc_runs_under_gvisor():
    r = run("exec", "--image", "minimal", "--runtime", "runsc", "--", "uname -r; dmesg | head -n 3")
    assert r.returncode == 0, r.stderr
    kernel = r.stdout.decode().splitlines()[0]
    assert b"gVisor" in r.stdout or kernel != os.uname().release


def test_unknown_runtime_is_125():
    r = run("exec", "--runtime", "nosuchruntime", "--", "true")
    assert r.returncode == 125
    assert "nosuchruntime" in one_error_line(r.stderr)


# --------------------------------------------------------------------------- clean-up


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_removes_the_sandbox(signum, code):
    proc = popen("exec", "--", "echo ready; sleep 60")
    try:
        assert proc.stdout.readline() == b"ready\n"
        assert wait_started(proc.pid)
        proc.send_signal(signum)
        assert proc.wait(timeout=20) == code
    finally:
        proc.kill()
        proc.wait()
    assert wait_gone(proc.pid, timeout=5) == []


def test_sigterm_while_the_sandbox_starts_leaves_nothing():
    proc = popen("exec", "--", "sleep 60")
    deadline = time.monotonic() + 30
    while not containers_of(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(timeout=20) == 143
    finally:
        proc.kill()
        proc.wait()
    assert wait_gone(proc.pid, timeout=10) == []


# --------------------------------------------------------------------------- an open stdin never blocks


def test_minimal_image_with_open_stdin_still_times_out():
    proc = popen("exec", "--image", "minimal", "--timeout", "2", "--", "echo hi", stdin=subprocess.PIPE)
    try:  # stdin stays open: we never write to it or close it (communicate() would close it)
        proc.wait(timeout=6)
        timed_out = False
    except subprocess.TimeoutExpired:
        timed_out = True
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out = proc.stdout.read()
        proc.stdin.close()
    assert not timed_out, "exec hung past its --timeout 2"
    assert out == b"hi\n"
