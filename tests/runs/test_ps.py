"""`pygent-runner ps` / `stop` (issue 26): another process's sandboxes, what they are for,
whose they are, state, CPU and memory; stop removes ours and refuses other containers."""

import json
import subprocess
import sys
import textwrap
import time

import pytest

from support import cli

pytestmark = pytest.mark.timeout(120)

OWNER = textwrap.dedent('''
    import json, shlex, sys, time
    from pygent.agent import Runtime
    from pygent.sandbox import open_sandbox

    agent = Runtime()                      # an agent's sandbox (from the warm pool)
    agent.start_background("while :; do :; done")            # ~100% of a core
    task = Runtime(task_depth=1)           # a delegated task's
    held = task.start_background("bash -c " + shlex.quote('printf -v x "%*s" 100000000 ""; echo $((40+2))-held; sleep 600; : kept'))  # ~100 MB
    while "42-held" not in task.process_output(held):  # (the output, not the command line it also shows)
        time.sleep(0.1)
    plain = open_sandbox(pool=False)       # the library used directly
    print(json.dumps({"agent": agent.sandbox.id[:12], "task": task.sandbox.id[:12], "plain": plain.id[:12]}), flush=True)
    sys.stdin.read()                       # until the test closes our stdin
    agent.cleanup(); task.cleanup(); plain.close()
''')


@pytest.fixture(scope="module")
def owner():
    proc = subprocess.Popen([sys.executable, "-c", OWNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=cli.REPO,
                            env=cli.cli_env())
    cli._pids.append(proc.pid)
    ids = json.loads(proc.stdout.readline())
    yield proc, ids
    proc.stdin.close()
    proc.wait(30)


def _ps():
    out = cli.run("ps", "--json", timeout=60)
    assert out.returncode == 0, out.stderr
    return {r["id"]: r for r in json.loads(out.stdout)}


def test_ps_shows_another_process_sandboxes_with_purpose_owner_and_usage(owner):
    proc, ids = owner
    time.sleep(0.5)  # the spinner spins
    rows = _ps()
    for what, cid in ids.items():
        row = rows[cid]
        assert row["purpose"] == {"agent": "agent", "task": "task", "plain": "sandbox"}[what]
        assert row["owner_pid"] == proc.pid and row["owner_alive"] is True
        assert row["state"] == "running" and row["image"].startswith("pygent/python") and row["age_s"] >= 0
    # The spinner gets what the shared 2-core machine leaves it (8-100% seen); an idle sandbox ~0.
    assert rows[ids["agent"]]["cpu_percent"] > 2, rows[ids["agent"]]
    assert rows[ids["plain"]]["cpu_percent"] < 1, rows[ids["plain"]]
    assert rows[ids["task"]]["memory"] > 90_000_000, rows[ids["task"]]
    assert rows[ids["plain"]]["memory"] < 50_000_000
    table = cli.run("ps", timeout=60)
    assert table.returncode == 0 and ids["agent"] in table.stdout.decode() and "PURPOSE" in table.stdout.decode()


def test_ps_shows_a_paused_sandbox(owner, docker_client):
    _, ids = owner
    docker_client.api.pause(ids["plain"])
    try:
        assert _ps()[ids["plain"]]["state"] == "paused"
    finally:
        docker_client.api.unpause(ids["plain"])


def test_stop_refuses_what_is_not_ours_and_removes_ours(owner, docker_client):
    _, ids = owner
    image = docker_client.api.inspect_container(ids["plain"])["Config"]["Image"]
    other = docker_client.api.create_container(image, command=["true"], labels={"someone.else": "1"})["Id"]
    try:
        out = cli.run("stop", other[:12], ids["plain"], timeout=60)
        assert out.returncode == 1
        assert "not one of our sandboxes" in out.stderr.decode()
        assert ids["plain"] in _ps()  # nothing was removed: the whole request was refused
        docker_client.api.inspect_container(other)  # still there
    finally:
        docker_client.api.remove_container(other, force=True)
    out = cli.run("stop", ids["plain"], timeout=60)
    assert out.returncode == 0 and f"stopped {ids['plain']}" in out.stdout.decode()
    assert ids["plain"] not in _ps()
