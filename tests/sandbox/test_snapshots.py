"""Snapshots, forks, changes and pause on the real engine, in each bundled image (issue 24)."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from pygent.errors import SandboxClosed, SandboxGone, SnapshotInvalid, SnapshotTooLarge, SnapshotUnsupported
from pygent.sandbox import SandboxPolicy, Snapshot, open_sandbox
from pygent.sandbox.base import Sandbox
from sbhelpers import IMAGES
from support.pausing import exec_across_a_pause

# 100 dirs x 100 files = 10,000 files, plus modes, symlinks (relative, absolute, dangling), empty dirs.
TREE = r"""
set -e
mkdir -p t
for d in {0..99}; do
  mkdir t/$d
  for f in {0..99}; do printf '%s-%s\n' $d $f > t/$d/$f; done
done
chmod 600 t/0/0; chmod 755 t/0/1; chmod 700 t/1; chmod 444 t/2/2
ln -s 0/0 t/rel; ln -s /workspace/t/3 t/abs; ln -s /nowhere t/dangling; ln -s .. t/up
mkdir -p e/f/g empty; chmod 750 e/f
printf 'no newline' > 'sp ace'; : > zero
"""
#: Every entry's path, kind, mode, size, mtime (s), link target; then every file's checksum.
LISTING = "cd /workspace && { find . -exec stat -c '%N|%F|%a|%s|%Y' {} + ; find . -type f -exec md5sum {} + ; } | sort"
BIG = 1 << 24


@pytest.fixture(scope="module", params=IMAGES)
def image(request):
    return request.param


@pytest.fixture(scope="module")
def tree(image):
    """A sandbox holding the 10,000-file tree, its shell state set, and its listing."""
    sb = open_sandbox(image, SandboxPolicy(timeout=120), pool=False)
    r = sb.exec(TREE, timeout=120)
    assert r.exit_code == 0, r.stderr
    listing = sb.exec(LISTING, timeout=120, max_output=BIG)
    assert listing.exit_code == 0 and listing.text.count("\n") > 20000, listing.stderr
    r = sb.exec("export GREETING='hi there'; shout() { echo \"${1^^}\"; }; alias ll='echo aliased'; set -o pipefail; cd t/5",
                shell_state=True)
    assert r.exit_code == 0, r.stderr
    yield sb, listing.text
    sb.close()


def test_fork_of_a_10000_file_tree_compares_equal_and_keeps_shell_state(tree):
    sb, listing = tree
    (fork,) = sb.fork(1)
    with fork:
        r = fork.exec('echo "$PWD|$GREETING|$(shout x)|$(ll)"; [[ -o pipefail ]] && echo pipefail', shell_state=True)
        assert r.text == "/workspace/t/5|hi there|X|aliased\npipefail\n", r.stderr
        assert fork.exec(LISTING, timeout=120, max_output=BIG).text == listing
        assert fork.id != sb.id and fork.image == sb.image and fork.policy == sb.policy


SMALL_TREE = ("mkdir -p a/b empty && for i in $(seq 200); do echo $i > a/$i; done && head -c 5000000 /dev/urandom > a/b/big"
              " && chmod 640 a/7 && ln -s a/b link && ln -s /nowhere dangling")


@pytest.mark.parametrize("runtime, via", [(None, "socket"), ("runsc", "channel")])
def test_a_fork_is_the_same_whichever_way_its_stream_goes(image, runtime, via):
    """On an engine on this machine the restore's stream goes on a socket the server hands over
    (off the engine's attach stream); under gVisor it cannot, and goes on the channel."""
    with open_sandbox(image, SandboxPolicy(runtime=runtime, timeout=60), pool=False) as sb:
        assert sb.exec(f"cd /workspace && {SMALL_TREE}").exit_code == 0
        listing = sb.exec(LISTING, max_output=BIG).text  # (its cd moves the sandbox's cwd: before the state's)
        sb.exec("export LEFT=here; cd /workspace/a/b", shell_state=True)
        (fork,) = sb.fork(1)
        with fork:
            assert fork.restored_via == via
            assert fork.exec('echo "$PWD $LEFT"', shell_state=True).text == "/workspace/a/b here\n"
            assert fork.exec(LISTING, max_output=BIG).text == listing


def test_forks_are_independent_and_concurrent(tree):
    sb, _ = tree
    forks = sb.fork(3)
    try:
        assert len({f.id for f in forks}) == 3
        threads = [threading.Thread(target=f.exec, args=(f"echo {i} > /workspace/t/0/mine; rm /workspace/t/1/{i}",))
                   for i, f in enumerate(forks)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i, f in enumerate(forks):
            assert f.exec("cat /workspace/t/0/mine; ls /workspace/t/1 | wc -l").text.split() == [str(i), "99"]
        assert sb.exec("test -e /workspace/t/0/mine || echo absent; ls /workspace/t/1 | wc -l").text.split() == ["absent", "100"]
    finally:
        for f in forks:
            f.close()


def test_saved_file_restores_and_bad_files_restore_nothing(tree, tmp_path):
    sb, listing = tree
    snap = sb.snapshot()
    path = snap.save(tmp_path / "ws.snap")
    loaded = Snapshot.load(path)
    assert loaded.image == snap.image and loaded.stream == snap.stream and loaded.state == snap.state
    with open_sandbox(snapshot=loaded) as restored:
        assert restored.exec(LISTING, timeout=120, max_output=BIG).text == listing
    raw = path.read_bytes()
    bad = {
        "truncated": raw[: len(raw) // 2],
        "tampered": raw[:5000] + bytes([raw[5000] ^ 1]) + raw[5001:],
        "foreign": b"PK\x03\x04 a zip file" + raw[20:],
        "empty": b"",
    }
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(SnapshotInvalid):
            Snapshot.load(tmp_path / name)


def test_changes_lists_added_modified_deleted_with_text_diffs(tree):
    sb, _ = tree
    snap = sb.snapshot()
    with open_sandbox(snapshot=snap) as fork:
        r = fork.exec("cd /workspace/t && for i in {0..97}; do echo changed >> 7/$i; done; echo new > 8/new; "
                      "rm 9/1 rel; touch 9/2; printf '\\0bin' > 6/6")
        assert r.exit_code == 0, r.stderr
        ch = fork.changes(snap)
    assert ch.added == ["/workspace/t/8/new"]
    assert sorted(ch.deleted) == ["/workspace/t/9/1", "/workspace/t/rel"]
    assert len(ch.modified) == 99 and "/workspace/t/6/6" in ch.modified and "/workspace/t/9/2" not in ch.modified
    assert "+changed" in ch.diffs["/workspace/t/7/0"] and "-7-0" not in ch.diffs["/workspace/t/7/0"]
    assert "/workspace/t/6/6" in ch.diffs_omitted  # binary: listed, no diff
    assert "A /workspace/t/8/new" in ch.render()


def test_snapshot_limit_just_below_at_and_above(image):
    with open_sandbox(image, pool=False) as sb:
        sb.exec("head -c 100000 /dev/zero > /workspace/blob")
        size = sb.snapshot().size
        assert sb.snapshot(max_bytes=size).size == size
        with pytest.raises(SnapshotTooLarge, match="max_bytes"):
            sb.snapshot(max_bytes=size - 1)


def test_configurable_paths_are_kept_and_bad_ones_refused(image):
    with open_sandbox(image, pool=False) as sb:
        sb.exec("echo w > /workspace/w; mkdir /tmp/cache; echo c > /tmp/cache/c")
        snap = sb.snapshot(paths=["/workspace", "/tmp"])
        assert snap.paths == ("/workspace", "/tmp")
        with open_sandbox(snapshot=snap, pool=False) as restored:
            assert restored.exec("cat /workspace/w /tmp/cache/c").text == "w\nc\n"
        for bad in (["workspace"], ["/workspace", "/workspace/sub"], ["/"], ["/workspace/../etc"]):
            with pytest.raises(SnapshotInvalid):
                sb.snapshot(paths=bad)


def test_special_files_and_hostile_entries_stay_inside(image, tmp_path):
    with open_sandbox(image, pool=False) as sb:
        sb.exec("mkfifo /workspace/fifo; mkdir /workspace/d; echo x > /workspace/d/f")
        snap = sb.snapshot()
        assert snap.skipped == ["/workspace/fifo"] and "/workspace/fifo" not in snap.files()
        # A crafted stream (valid hash: made by someone, not tampered) with a path outside the workspace.
        from pygent.sandbox import protocol as proto

        evil = snap.stream + proto.ENTRY.pack(ord("f"), 0o644, 1, 0, 9) + b"/etc/evil" + b"x"
        with pytest.raises(SnapshotInvalid, match="outside"):
            Snapshot(evil, image=snap.image, policy=snap.policy_data, paths=snap.paths)
        dotdot = snap.stream + proto.ENTRY.pack(ord("f"), 0o644, 1, 0, 19) + b"/workspace/d/../../x" + b"x"
        with pytest.raises(SnapshotInvalid, match="bad path"):
            Snapshot(dotdot[:-1], image=snap.image, policy=snap.policy_data, paths=snap.paths)


def test_snapshot_of_a_dead_or_closed_sandbox_is_a_clear_error(image, docker_client):
    sb = open_sandbox(image, pool=False)
    docker_client.api.remove_container(sb.id, force=True)
    with pytest.raises(SandboxGone, match="create a new one"):
        sb.snapshot()
    sb.close()
    with pytest.raises(SandboxClosed):
        sb.snapshot()


class ForwardingSandbox(Sandbox):
    """A backend's sandbox that forwards the base API (commands, files) but not the snapshot frames."""

    def __init__(self, inner):
        self.inner, self.id = inner, inner.id

    def exec(self, cmd, **kw):
        return self.inner.exec(cmd, **kw)

    def put_archive(self, dest_dir, tar_bytes):
        return self.inner.put_archive(dest_dir, tar_bytes)

    def get_archive(self, path, max_bytes=256 << 20):
        return self.inner.get_archive(path, max_bytes)

    def close(self, wait=True):
        self.inner.close(wait)

    @property
    def closed(self):
        return self.inner.closed

    def _put_file(self, spec, chunks):
        return self.inner._put_file(spec, chunks)

    def _get_file(self, path, max_bytes, on_chunk):
        return self.inner._get_file(path, max_bytes, on_chunk)

    def _tree_tar(self, path, max_bytes):
        return self.inner._tree_tar(path, max_bytes)


def test_a_backend_without_snapshots_says_so(image, monkeypatch):
    from pygent.sandbox import registry
    from pygent.sandbox.docker.backend import DockerBackend

    class Plain(DockerBackend):
        name = "plain-test"

        def create(self, image, policy, *, pooled=False):
            return ForwardingSandbox(super().create(image, policy, pooled=pooled))

    with open_sandbox(image, pool=False) as real:
        real.exec("echo kept > /workspace/f")
        snap = real.snapshot()
    registry.backend("plain-test")(Plain)
    monkeypatch.setenv("PYGENT_BACKEND", "plain-test")
    registry.reset()
    try:
        with pytest.raises(SnapshotUnsupported, match="cannot restore snapshots"):
            open_sandbox(snapshot=snap, pool=False)
        if True:
            with open_sandbox(image, pool=False) as plain:
                with pytest.raises(SnapshotUnsupported, match="cannot take snapshots"):
                    plain.snapshot()
                with pytest.raises(SnapshotUnsupported, match="cannot pause"):
                    plain.pause()
    finally:
        monkeypatch.delenv("PYGENT_BACKEND")
        registry.reset()


def test_pause_freezes_resume_is_transparent_and_timeouts_skip_paused_time(image, docker_client):
    with open_sandbox(image, pool=False) as sb:
        handle = sb.exec_background("while :; do echo tick >> /workspace/ticks; sleep 0.05; done")
        time.sleep(0.3)
        r = exec_across_a_pause(sb, docker_client, frozen=3)
        assert r.exit_code == 0 and r.text == "ok\n" and not r.timed_out
        sb.pause()
        before = docker_client.api.inspect_container(sb.id)["State"]["Status"]
        r = sb.exec("wc -l < /workspace/ticks")  # resumes by itself
        assert before == "paused" and r.exit_code == 0 and int(r.text) > 3 and not sb.paused
        sb.process_kill(handle)


def test_an_agents_idle_sandbox_pauses_itself_and_wakes(image, monkeypatch, docker_client):
    from pygent.agent.runtime import Runtime

    monkeypatch.setenv("PYGENT_IDLE_PAUSE", "0.5")
    rt = Runtime(image=image)
    events = []
    rt.on_sandbox = lambda what, data: events.append((what, data.get("id")))  # what the run log records
    try:
        rt.exec("echo hi")
        sb = rt.sandbox
        deadline = time.monotonic() + 10
        while not sb.paused and time.monotonic() < deadline:
            time.sleep(0.1)
        assert docker_client.api.inspect_container(sb.id)["State"]["Status"] == "paused"
        while ("paused", sb.id[:12]) not in events and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ("paused", sb.id[:12]) in events
        assert rt.exec("echo awake").text == "awake\n"
    finally:
        rt.cleanup()


OWNER = """
import sys, time
from pygent.sandbox import open_sandbox
sb = open_sandbox(sys.argv[1], pool=False)
sb.pause()
print(sb.id, flush=True)
time.sleep(600)
"""


def test_a_paused_sandbox_goes_when_its_owner_is_killed(image, docker_client):
    owner = subprocess.Popen([sys.executable, "-c", OWNER, image], stdout=subprocess.PIPE, text=True)
    try:
        cid = owner.stdout.readline().strip()
        assert docker_client.api.inspect_container(cid)["State"]["Status"] == "paused"
    finally:
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait()
    deadline = time.monotonic() + 30
    while docker_client.api.containers(all=True, filters={"id": cid}) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not docker_client.api.containers(all=True, filters={"id": cid})
