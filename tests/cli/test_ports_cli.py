"""`pygent-runner exec -p PORT[:HOSTPORT]` (issue 25), run for real: the URL is printed on
stderr once the port answers, the host reaches the service through it, and bad values
are one clear line."""

from __future__ import annotations

import re
import socket
import time
import urllib.request

import pytest

from support.cli import popen, run

pytestmark = pytest.mark.docker

SERVE = "cd /tmp && echo served > index.html && exec python3 -m http.server 8000 --bind 127.0.0.1"


def _url_from(proc, seconds: float = 60.0) -> str:
    deadline = time.monotonic() + seconds
    line = b""
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        found = re.search(rb"port 8000 is answering at (http://\S+)", line)
        if found:
            return found.group(1).decode()
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"no URL on stderr (last line {line!r})")


def test_exec_publish_prints_the_url_once_the_port_answers_and_serves_through_it():
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    wanted = free.getsockname()[1]
    free.close()
    proc = popen("exec", "-p", f"8000:{wanted}", "--timeout", "60", "--", SERVE)
    try:
        url = _url_from(proc)
        assert url == f"http://127.0.0.1:{wanted}"
        assert urllib.request.urlopen(f"{url}/index.html", timeout=10).read() == b"served\n"
    finally:
        proc.terminate()
        proc.wait(30)
    with pytest.raises(OSError):  # the sandbox is gone, and its listener with it
        socket.create_connection(("127.0.0.1", wanted), timeout=5)


@pytest.mark.parametrize("value", ["0", "65536", "80:70000", "http", "80:"])
def test_a_bad_publish_value_is_one_clear_line(value):
    r = run("exec", "-p", value, "--", "true")
    if value == "80:":  # an empty host port is "any free one"
        assert r.returncode == 0, r.stderr
        return
    assert r.returncode == 125
    assert b"is not PORT[:HOSTPORT] with ports from 1 to 65535" in r.stderr


def test_binding_beyond_loopback_warns():
    r = run("exec", "-p", "8000", "--bind", "0.0.0.0", "--", "true")
    assert r.returncode == 0, r.stderr
    assert b"warning: --bind 0.0.0.0: the sandbox's ports are open" in r.stderr
