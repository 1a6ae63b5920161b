"""Background commands and idle_timeout (issue 14), on every runtime: a server started in
the background is reachable on localhost from later commands; output, input, status, kill,
list; the pids limit counts them; closing the sandbox ends them."""

from __future__ import annotations

import time

import pytest

from pygent.errors import SandboxError
from pygent.sandbox import SandboxPolicy, open_sandbox
from sbhelpers import PS, wait_gone


def until(check, what, seconds=20.0):
    """Poll `check` until it returns something true (generous bound: the machine is shared)."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


#: image -> (a server on 127.0.0.1:8765 serving /workspace, a client fetching /hello.txt)
WEB = {
    "python": ("cd /workspace && exec python3 -u -m http.server 8765 --bind 127.0.0.1",
               "python3 -c \"import urllib.request as u; print(u.urlopen('http://127.0.0.1:8765/hello.txt').read().decode())\""),
    "minimal": ("exec busybox httpd -f -vv -p 127.0.0.1:8765 -h /workspace", "busybox wget -qO- http://127.0.0.1:8765/hello.txt"),
}


def test_a_background_server_answers_later_commands_on_localhost(sb):
    serve, fetch = WEB[sb.image.split("/")[-1].split(":")[0]]
    sb.exec("echo served > /workspace/hello.txt")
    handle = sb.exec_background(serve)
    assert sb.process_status(handle).running
    got = until(lambda: (r := sb.exec(fetch, timeout=10)).exit_code == 0 and r, "the server to answer")
    assert got.stdout.strip() == b"served"
    log = until(lambda: (o := sb.process_output(handle)).output and "hello.txt" in o.output and o, "the log")
    assert log.offset == log.status.output_bytes > 0
    assert sb.process_output(handle, since=log.offset).output == ""  # only what is new
    assert handle in [p.handle for p in sb.process_list()]
    killed = sb.process_kill(handle)
    assert not killed.running and killed.killed and killed.exit_code == 137
    assert sb.exec(fetch, timeout=10).exit_code != 0
    assert "8765" not in sb.exec(PS).stdout.decode()  # the server process is gone


def test_input_reaches_a_background_command_and_its_exit_code_is_kept(sb):
    handle = sb.exec_background("read -r line; echo got:$line; read -r rest; exit 3")
    sb.process_input(handle, "first\n")
    sb.process_input(handle, "", eof=True)
    status = until(lambda: (s := sb.process_status(handle)) and not s.running and s, "the command to end")
    assert status.exit_code == 3 and not status.killed
    assert sb.process_output(handle).output == "got:first\n"
    with pytest.raises(SandboxError, match="input is closed"):
        sb.process_input(handle, "late\n")


def test_kill_stops_the_whole_tree(sb):
    handle = sb.exec_background("sleep 301 & sleep 302 & (sleep 303 &) ; wait")
    until(lambda: sb.exec(PS).stdout.decode().count("sleep 30") >= 3, "the sleeps")
    sb.process_kill(handle)
    assert "sleep 30" not in sb.exec(PS).stdout.decode()


def test_output_is_bounded_head_and_tail(sb):
    handle = sb.exec_background("head -c 3000000 /dev/zero | tr '\\0' x; echo; echo THE-END")
    until(lambda: not sb.process_status(handle).running, "the command to end")
    out = sb.process_output(handle, max_bytes=4000)
    assert out.lost > 0 and out.output.endswith("THE-END\n") and len(out.output) < 4200


def test_an_unknown_handle_is_a_clear_error(sb):
    with pytest.raises(SandboxError, match="no background command '999'"):
        sb.process_status("999")


def test_idle_timeout_returns_partial_output_and_keeps_it_running(sb):
    r = sb.exec("echo started; sleep 2; echo finished", idle_timeout=0.5)
    assert r.handle is not None and r.exit_code == -1 and not r.ok and r.stdout == b"started\n"
    status = until(lambda: (s := sb.process_status(r.handle)) and not s.running and s, "the command to end")
    assert status.exit_code == 0
    assert sb.process_output(r.handle).output == "finished\n"


def test_a_command_that_keeps_printing_is_not_moved_by_idle_timeout(sb):
    r = sb.exec("for i in 1 2 3 4 5 6; do echo $i; sleep 0.2; done", idle_timeout=1.5)
    assert r.handle is None and r.exit_code == 0 and r.stdout.split() == [b"1", b"2", b"3", b"4", b"5", b"6"]


def test_background_processes_count_against_the_pids_limit_and_die_with_the_sandbox(docker_client):
    sb = open_sandbox("python", SandboxPolicy(pids=40), pool=False)
    try:
        handle = sb.exec_background("for i in $(seq 30); do sleep 300 & done; wait")
        until(lambda: sb.exec(PS).stdout.decode().count("sleep 300") >= 30, "30 sleeps")
        r = sb.exec("for i in $(seq 20); do sleep 1 & done; wait", timeout=20)
        assert b"Resource temporarily unavailable" in r.stderr or r.exit_code != 0
        assert sb.process_status(handle).running  # the limit did not take the background command down
    finally:
        sb.close()
    assert wait_gone(docker_client.api, sb.id)
