"""`pygent-runner shell -p PORT` (issue 25) under a real pseudo-terminal: a server started in
the shell is reachable from the host at the URL printed once it answers; the sandbox keeps no
network interface, and leaving the shell removes it with its listener."""

from __future__ import annotations

import os
import socket
import sys
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pexpect
import pytest

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]

CLI = str(Path(sys.executable).with_name("pygent-runner"))


def test_shell_publish_serves_what_the_person_starts_and_cleans_up():
    child = pexpect.spawn(CLI, ["shell", "-p", "8000"], encoding="utf-8", timeout=60, dimensions=(24, 200),
                          env=dict(os.environ, TERM="xterm"))
    try:
        child.expect(r"\$ ")
        child.sendline("tty; ls /sys/class/net; echo typed-in-shell > /tmp/i.html; "
                       "python3 -m http.server 8000 --bind 127.0.0.1 -d /tmp >/dev/null 2>&1 &")
        child.expect(r"/dev/pts/\d+\s+lo\s")
        child.expect(r"port 8000 is answering at (http://127\.0\.0\.1:\d+)")
        url = child.match.group(1)
        assert urllib.request.urlopen(f"{url}/i.html", timeout=10).read() == b"typed-in-shell\n"
        child.sendline("exit 4")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 4
    with pytest.raises(OSError):
        socket.create_connection((urlsplit(url).hostname, urlsplit(url).port), timeout=5)
