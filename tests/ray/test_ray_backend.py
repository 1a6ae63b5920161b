"""The Ray backend through its user entry points: PYGENT_BACKEND=ray with RAY_ADDRESS, the
shipped conformance suite, placement (spread, pins, impossible requests), and the Sandbox
API's results, errors and limits as they are locally."""

import json
import subprocess
import sys
import time

import pytest

from pygent.errors import FileTooLarge, PlacementError, SandboxClosed
from pygent.sandbox import SandboxPolicy
from pygent.sandbox.processes import ProcessStatus
from pygent.sandbox.result import ExecResult

pytestmark = [pytest.mark.docker, pytest.mark.ray]


def _zone(backend, node_id):
    import ray

    return next(n["Labels"].get("zone") for n in ray.nodes() if n["NodeID"] == node_id)


def test_importing_pygent_and_exec_never_import_ray(ray_env):
    """`python -X importtime` lists every module a process imports, exec's fast path included."""
    env = dict(ray_env)
    env.pop("PYGENT_BACKEND")  # exec on the local engine, with a Ray cluster around
    for argv in (["-c", "import pygent, pygent.sandbox, pygent.agent"], ["-m", "pygent.cli", "exec", "--", "echo", "hi"]):
        out = subprocess.run([sys.executable, "-X", "importtime", *argv], capture_output=True, text=True, env=env, timeout=120)
        modules = [line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")]
        assert out.returncode == 0 and "pygent" in modules, out.stderr[-500:]
        assert not [m for m in modules if m == "ray" or m.startswith("ray.")], argv
    assert out.stdout == "hi\n"


@pytest.mark.timeout(600)
def test_self_check_passes_through_ray(ray_env):
    out = subprocess.run([sys.executable, "-m", "pygent.sandbox.self_check", "--json"], capture_output=True,
                         text=True, env=ray_env, timeout=580)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["backend"] == "ray" and report["failed"] == {} and out.returncode == 0, report
    assert len(report["passed"]) >= 20


def test_sandboxes_spread_over_the_nodes(ray_backend):
    boxes = [ray_backend.create("python", SandboxPolicy()) for _ in range(3)]
    try:
        assert len({b.node_id for b in boxes}) == 3
        assert {_zone(ray_backend, b.node_id) for b in boxes} == {"a", "b", "c"}
    finally:
        for b in boxes:
            b.close()


def test_pin_by_label_and_by_node_id(ray_backend):
    with ray_backend.create("python", SandboxPolicy(), labels={"zone": "c"}) as by_label:
        assert _zone(ray_backend, by_label.node_id) == "c"
        node = by_label.node_id
    with ray_backend.create("python", SandboxPolicy(), node=node[:16]) as by_id:
        assert by_id.node_id == node


@pytest.mark.parametrize("ask, said", [
    (dict(policy=SandboxPolicy(memory="8g")), "memory 8.0 GiB"),
    (dict(policy=SandboxPolicy(cpus=16)), "CPU 16"),
    (dict(policy=SandboxPolicy(memory="2g"), labels={"zone": "c"}), "labels {'zone': 'c'}"),
    (dict(policy=SandboxPolicy(), labels={"zone": "nowhere"}), "nowhere"),
])
def test_an_impossible_request_is_refused_at_once(ray_backend, ask, said):
    started = time.monotonic()
    with pytest.raises(PlacementError) as err:
        ray_backend.create("python", ask["policy"], labels=ask.get("labels"))
    assert time.monotonic() - started < 10
    text = str(err.value)
    assert said in text and "The cluster offers" in text and "6.0 GiB" in text and "8 slots" in text, text


def test_memory_at_a_nodes_size_fits_and_just_above_does_not(ray_backend):
    with ray_backend.create("python", SandboxPolicy(memory="1g"), labels={"zone": "c"}) as sb:
        assert sb.exec("echo at").stdout == b"at\n"
    with pytest.raises(PlacementError):
        ray_backend.create("python", SandboxPolicy(memory="1025m"), labels={"zone": "c"})


def test_the_sandbox_api_answers_as_locally(ray_backend, tmp_path):
    with ray_backend.create("python", SandboxPolicy(max_output=4096)) as sb:
        r = sb.exec("x=41; echo $((x+1))", shell_state=True)
        assert isinstance(r, ExecResult) and r.stdout == b"42\n"
        assert sb.exec("echo $x", shell_state=True).stdout == b"41\n"
        assert sb.exec("head -c 100000 /dev/zero | tr '\\0' y").stdout_truncated > 90000
        seen = []
        assert sb.exec("echo streamed", on_chunk=lambda s, d: seen.append((s, d))).stdout == b"streamed\n"
        assert seen == [("stdout", b"streamed\n")]
        handle = sb.exec_background("read line; echo got $line")
        sb.process_input(handle, "hej\n", eof=True)
        deadline = time.monotonic() + 10
        while sb.process_status(handle).running and time.monotonic() < deadline:
            time.sleep(0.05)
        status = sb.process_status(handle)
        assert isinstance(status, ProcessStatus) and status.exit_code == 0
        assert sb.process_output(handle).output.strip() == "got hej"
        (tmp_path / "d").mkdir()
        (tmp_path / "d" / "f.txt").write_text("up")
        sb.upload(tmp_path / "d", "d")
        back = sb.download("d", tmp_path / "out")
        assert (back / "f.txt").read_text() == "up"
        sb.write_file("big", b"z" * 2048)
        with pytest.raises(FileTooLarge) as err:
            sb.read_file("big", max_bytes=2047)
        assert err.value.size >= 2048 and err.value.limit == 2047
        with pytest.raises(PermissionError):
            sb.write_file("/etc/passwd", "no")
    with pytest.raises(SandboxClosed):
        sb.exec("true")


def test_snapshot_and_fork_through_ray(ray_backend, monkeypatch):
    """snapshot() and fork() on a Ray sandbox: the node's server takes and restores the trees
    and shell state; the forks are Ray sandboxes too, independent of their original."""
    from pygent.sandbox.ray.sandbox import RaySandbox

    monkeypatch.setenv("PYGENT_BACKEND", "ray")
    with ray_backend.create("python", SandboxPolicy()) as sb:
        sb.exec("mkdir -p src && echo one > src/a.txt && ln -s a.txt src/link; export STAGE=1; cd src", shell_state=True)
        snap = sb.snapshot()
        forks = sb.fork(2)
        try:
            sb.exec("rm a.txt", shell_state=True)
            for fork in forks:
                assert isinstance(fork, RaySandbox)
                r = fork.exec('echo "$STAGE $PWD"; cat a.txt; readlink link', shell_state=True)
                assert r.stdout == b"1 /workspace/src\none\na.txt\n", r
            forks[0].exec("echo two > a.txt", shell_state=True)
            assert forks[1].exec("cat a.txt", shell_state=True).stdout == b"one\n"
            changes = sb.changes(since=snap)
            assert "/workspace/src/a.txt" in changes.deleted
        finally:
            for fork in forks:
                fork.close()


def test_pause_and_resume_through_ray(ray_backend, docker_client):
    """pause() freezes the container on its node (the engine says paused), a command timed
    across the pause does not count the paused time, and the next call wakes it, as locally."""
    from support.pausing import exec_across_a_pause

    with ray_backend.create("python", SandboxPolicy()) as sb:
        r = exec_across_a_pause(sb, docker_client, frozen=2.5, before=0.3)
        assert r.exit_code == 0 and r.text == "ok\n"
        sb.pause()
        assert docker_client.api.inspect_container(sb.id)["State"]["Status"] == "paused"
        assert sb.exec("echo awake").text == "awake\n" and not sb.paused
        assert docker_client.api.inspect_container(sb.id)["State"]["Status"] == "running"
        sb.pause()
    assert not sb.paused


def test_the_direct_channel_opens_only_with_the_agents_secret(ray_backend, tmp_path):
    """Calls go over the agent's own TCP channel (direct.py: Ray's actor call costs more than the
    whole overhead allowed); anyone on the network can connect to it, so nothing is read as a
    call before the 32-byte secret the driver got through Ray matched."""
    import pickle
    import socket

    with ray_backend.create("python", SandboxPolicy()) as sb:
        host, port, secret = ray_backend.call(sb.node_id, "hello")["direct"]
        assert sb.exec("echo hi").stdout == b"hi\n"
        assert ray_backend._direct[sb.node_id][1]._idle, "the exec did not go over the direct channel"
        marker = tmp_path / "unpickled"

        class Evil:
            def __reduce__(self):
                return (open, (str(marker), "w"))

        frame = pickle.dumps(Evil())
        for key in (b"\0" * 32, bytes.fromhex(secret)[::-1], bytes.fromhex(secret)[:31]):
            with socket.create_connection((host, int(port)), timeout=10) as s:
                s.sendall(key + len(frame).to_bytes(8, "big") + frame)
                try:
                    answer = s.recv(100)
                except ConnectionResetError:  # closed with our frame unread
                    answer = b""
                assert answer == b"", "a wrong secret got an answer"
        assert not marker.exists()
        # With the secret, a frame is a call: an unknown method is refused, the agent carries on.
        with socket.create_connection((host, int(port)), timeout=10) as s:
            body = pickle.dumps(("shutdown_everything", ()))
            s.sendall(bytes.fromhex(secret) + len(body).to_bytes(8, "big") + body)
            size = int.from_bytes(s.recv(8), "big")
            ok, err = pickle.loads(s.recv(size, socket.MSG_WAITALL))
            assert not ok and "refuses 'shutdown_everything'" in str(err[1][0])
        assert sb.exec("echo still").stdout == b"still\n"


def test_a_closed_sandboxs_slot_serves_the_next_one_then_goes_back_to_the_cluster(ray_backend):
    """Closing keeps the sandbox's placement for SPARE_LINGER s, for this driver's next
    sandbox of the same size (a new placement group cost up to seconds under load); after
    that the slot is the cluster's again: no reservation outlives its demand."""
    from ray._private.state import available_resources_per_node

    from pygent.sandbox.ray.backend import SPARE_LINGER
    from pygent.sandbox.ray.node import SLOT

    def free():
        return sum((r or {}).get(SLOT, 0) for r in available_resources_per_node().values())

    total = sum((n.get("Resources") or {}).get(SLOT, 0) for n in ray_backend.nodes())
    first = ray_backend.create("python", SandboxPolicy())
    kept = first._placement.id
    first.close()
    with ray_backend.create("python", SandboxPolicy()) as second:
        assert second._placement.id == kept  # the kept reservation, not a new group
        assert second.exec("echo hi").stdout == b"hi\n"
    deadline = time.monotonic() + SPARE_LINGER + 5
    while free() < total and time.monotonic() < deadline:
        time.sleep(0.1)
    assert free() == total, (free(), total)
    with ray_backend.create("python", SandboxPolicy(cpus=0.5)) as other:  # another size: a group of its own
        assert other._placement.id != kept
