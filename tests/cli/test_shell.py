"""`pygent-runner shell` under a real pseudo-terminal (pexpect): a TTY with resize, Ctrl-C
to the foreground command, job control, the sandbox's hardening, and removal when the shell
exits or the terminal goes away."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pexpect
import pytest

from support.engine import wait_gone

CLI = str(Path(sys.executable).with_name("pygent-runner"))
PROMPT = r"\$ "


def shell_containers(api) -> set[str]:
    return {c["Id"] for c in api.containers(all=True, filters={"name": "pygent-shell-"})}


def spawn(*args: str) -> pexpect.spawn:
    child = pexpect.spawn(CLI, ["shell", *args], encoding="utf-8", timeout=30, dimensions=(24, 80),
                          env=dict(os.environ, TERM="xterm"))
    child.expect(PROMPT)
    return child


def new_container(api, before: set[str]) -> str:
    deadline = time.monotonic() + 10
    while not (found := shell_containers(api) - before):
        assert time.monotonic() < deadline, "no shell container appeared"
        time.sleep(0.1)
    return found.pop()


@pytest.mark.parametrize("image", ["python", "minimal"])
def test_a_tty_with_resize_ctrl_c_and_job_control_then_removed_on_exit(docker_client, image):
    api = docker_client.api
    before = shell_containers(api)
    child = spawn("--image", image, "--memory", "256m")
    cid = new_container(api, before)
    child.sendline("tty; id -u; grep CapEff /proc/self/status; ls /sys/class/net; stty size")
    child.expect(r"/dev/pts/\d+\s+1000\s+CapEff:\s+0+\s+lo\s+24 80")
    child.expect(PROMPT)
    assert api.inspect_container(cid)["HostConfig"]["Memory"] == 256 << 20
    child.setwinsize(40, 120)
    time.sleep(0.3)  # the CLI forwards the resize on SIGWINCH
    child.sendline("stty size")
    child.expect("40 120")
    child.expect(PROMPT)
    child.sendline("sleep 300")
    time.sleep(0.5)
    child.sendintr()  # Ctrl-C reaches the foreground command, not the shell
    child.expect(PROMPT)
    child.sendline("echo status-$?")
    child.expect("status-130")
    child.expect(PROMPT)
    child.sendline("sleep 301 & jobs")
    child.expect(r"\[1\]\+\s+Running\s+sleep 301")
    child.expect(PROMPT)
    child.sendline("kill %1; wait; exit 5")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 5
    assert wait_gone(api, cid)


def test_the_sandbox_goes_when_the_terminal_goes_away(docker_client):
    api = docker_client.api
    before = shell_containers(api)
    child = spawn()
    cid = new_container(api, before)
    child.close(force=True)  # hang up the terminal (SIGHUP, then SIGKILL if it lingers)
    assert wait_gone(api, cid, timeout=20)


def test_no_terminal_is_a_clear_error():
    import subprocess

    done = subprocess.run([CLI, "shell"], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert done.returncode == 125 and "needs a terminal" in done.stderr
    done = subprocess.run([CLI, "shell", "--timeout", "5"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 125 and "--timeout does not apply" in done.stderr
