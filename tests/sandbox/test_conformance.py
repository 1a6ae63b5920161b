"""What every sandbox must do, whatever the image and runtime.

Run over {python (command server), minimal (plain docker-exec fallback)} x
{runc, runsc (gVisor)}. One sandbox per combination is shared by the module
(pytest groups the tests by combination, so only one is alive at a time);
tests leave it as they found it (cwd back to /workspace).
"""

from __future__ import annotations

import hashlib
import os
import time
import tracemalloc
import uuid
from pathlib import Path

import pytest

from pygent.errors import PathOutsideSandbox, SandboxClosed
from pygent.sandbox import SandboxPolicy, open_sandbox
from pygent.sandbox.result import cut_marker

from sbhelpers import container_exists, kill_processes, processes, volume_exists, volume_names

pytestmark = pytest.mark.docker


# -- commands ------------------------------------------------------------------------


def test_stdout_stderr_are_separate_and_exit_code_kept(sb):
    r = sb.exec("echo out; echo err >&2; echo out2; exit 3")
    assert r.stdout == b"out\nout2\n"
    assert r.stderr == b"err\n"
    assert r.exit_code == 3
    assert not r.ok and not r.timed_out and not r.truncated
    ok = sb.exec("true")
    assert ok.exit_code == 0 and ok.ok


def test_duration_is_measured(sb):
    r = sb.exec("sleep 0.3")
    assert r.exit_code == 0
    assert 0.25 <= r.duration < 5, r.duration


def test_timeout_kills_whole_tree_and_keeps_partial_output(sb):
    start = time.monotonic()
    r = sb.exec(
        "echo partial-out; echo partial-err >&2; sleep 101 & (sleep 102 &) ; setsid sleep 103 & sleep 104",
        timeout=1,
    )
    elapsed = time.monotonic() - start
    assert r.timed_out and r.exit_code == 124, r
    assert elapsed < 5, elapsed
    assert b"partial-out\n" in r.stdout
    assert b"partial-err\n" in r.stderr
    left = processes(sb)
    for n in (101, 102, 103, 104):
        assert f"sleep {n}" not in left, left


def test_non_positive_timeout_is_refused(sb):
    from pygent.errors import SandboxError

    with pytest.raises(SandboxError):
        sb.exec("true", timeout=0)


def test_output_cap_keeps_head_and_tail_with_marker(sb):
    expected = "".join(f"{i}\n" for i in range(1, 100001)).encode()
    r = sb.exec("seq 1 100000; seq 1 100000 >&2", max_output=4096)
    assert r.exit_code == 0
    for data, omitted in ((r.stdout, r.stdout_truncated), (r.stderr, r.stderr_truncated)):
        assert omitted == len(expected) - 4096
        assert data == expected[:2048] + cut_marker(omitted) + expected[-2048:]
        assert b"bytes truncated" in data
    assert r.truncated


def test_env_and_workdir(sb):
    r = sb.exec(
        'printf "%s|%s|%s" "$FOO" "${EMPTY-unset}" "$(pwd)"',
        env={"FOO": "bar baz $HOME 'q'", "EMPTY": ""},
        workdir="/tmp",
    )
    assert r.stdout == b"bar baz $HOME 'q'||/tmp"
    sb.exec("cd /workspace")


def test_stdin_bytes_with_control_and_nul_bytes(sb):
    data = b"a\x10b\x11c\x00\x00d\r\n\x1e\x1b[0m" + bytes(range(256)) + b"\x00"
    r = sb.exec("cat", stdin=data)
    assert r.exit_code == 0
    assert r.stdout == data


def test_stdin_5mb(sb):
    data = os.urandom(5 * 1024 * 1024)
    r = sb.exec("sha256sum; wc -c", stdin=data, timeout=60)
    assert r.exit_code == 0, r.stderr
    digest, count = r.stdout.split(b"\n")[0].split()[0], r.stdout.split()[-1]
    assert digest.decode() == hashlib.sha256(data).hexdigest()
    # sha256sum read it all, so wc got nothing left: stdin is one stream
    assert count == b"0"


def test_stdin_iterable(sb):
    r = sb.exec("cat", stdin=iter([b"one\n", b"", b"two\x00\n"]))
    assert r.stdout == b"one\ntwo\x00\n"


def test_no_stdin_reads_eof_immediately(sb):
    start = time.monotonic()
    r = sb.exec("cat; echo done", timeout=10)
    assert not r.timed_out and r.stdout == b"done\n"
    assert time.monotonic() - start < 5


def test_cd_persists_across_calls(sb):
    try:
        r = sb.exec("mkdir -p deep/er && cd deep/er && echo moved")
        assert r.stdout == b"moved\n" and r.cwd == "/workspace/deep/er"
        assert sb.exec("pwd").stdout == b"/workspace/deep/er\n"
        assert sb.exec("cd ..; pwd").stdout == b"/workspace/deep\n"
        assert sb.exec("pwd").stdout == b"/workspace/deep\n"
    finally:
        sb.exec("cd /workspace && rm -rf deep")
    assert sb.exec("pwd").stdout == b"/workspace\n"


def test_utf8_and_binary_output_are_returned_intact(sb):
    r = sb.exec(r"printf 'h\xc3\xa9llo \xe2\x9c\x93\n'; printf '\xff\xfe\x00\x01\x80end' >&2")
    assert r.stdout == "héllo ✓\n".encode()
    assert r.stderr == b"\xff\xfe\x00\x01\x80end"
    assert r.text == "héllo ✓\n"
    blob = os.urandom(100_000)
    r = sb.exec("cat", stdin=blob, max_output=200_000)
    assert r.stdout == blob and not r.truncated


def test_large_output_returns_quickly_with_host_memory_bounded(sb):
    size = 20_000_000
    tracemalloc.start()
    try:
        start = time.monotonic()
        r = sb.exec(f"head -c {size} /dev/zero | tr '\\0' x", timeout=60, max_output=64_000)
        elapsed = time.monotonic() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.exit_code == 0 and not r.timed_out
    assert r.stdout_truncated == size - 64_000
    assert r.stdout.startswith(b"x" * 32_000) and r.stdout.endswith(b"x" * 32_000)
    assert elapsed < 15, elapsed
    assert peak < 8 * 1024 * 1024, f"host Python memory peaked at {peak} bytes for a capped 20 MB output"


def test_background_children_holding_output_do_not_hang_the_call(sb):
    start = time.monotonic()
    r = sb.exec("echo started; sleep 31 & (sleep 32 >&2 &); exit 7", timeout=25)
    elapsed = time.monotonic() - start
    try:
        assert not r.timed_out, r
        assert r.exit_code == 7
        assert r.stdout == b"started\n"
        # The server answers at once; docker exec (the plain fallback) waits up to 2 s
        # for pipes a background child still holds, then closes them.
        assert elapsed < 6, f"background children holding stdout/stderr kept the call open {elapsed:.1f}s"
    finally:
        left = kill_processes(sb, "sleep 31 ", "sleep 32 ")
    assert left == 2, "the background children should have kept running"


def test_streaming_callbacks_get_separate_streams(sb):
    out, err = [], []
    r = sb.exec("for i in 1 2 3; do echo o$i; echo e$i >&2; done", on_stdout=out.append, on_stderr=err.append)
    assert r.exit_code == 0
    assert b"".join(out) == b"o1\no2\no3\n"
    assert b"".join(err) == b"e1\ne2\ne3\n"


# -- files ---------------------------------------------------------------------------


def test_write_and_read_file_nested_owned_by_sandbox_user(sb):
    try:
        sb.write_file("nest/a/b/c.txt", "first\n")
        assert sb.read_file("nest/a/b/c.txt") == b"first\n"
        assert sb.read_file("/workspace/nest/a/b/c.txt") == b"first\n"
        r = sb.exec(
            "echo second >> nest/a/b/c.txt && touch nest/a/b/new && "
            "for p in nest nest/a nest/a/b nest/a/b/c.txt; do [ -O $p ] && echo mine; done"
        )
        assert r.exit_code == 0, r.stderr
        assert r.stdout == b"mine\n" * 4
        assert sb.read_file("nest/a/b/c.txt") == b"first\nsecond\n"
        sb.write_file("nest/bin.dat", bytes(range(256)) * 10, mode=0o600)
        assert sb.read_file("nest/bin.dat") == bytes(range(256)) * 10
    finally:
        sb.exec("rm -rf /workspace/nest")


def test_write_and_read_file_in_tmp(sb):
    # /tmp is writable for commands, so it must be for the file API too, and agree with it.
    sb.write_file("/tmp/from-host.txt", "hi\n")
    r = sb.exec("cat /tmp/from-host.txt && echo from-cmd > /tmp/from-cmd.txt")
    assert r.stdout == b"hi\n", r
    assert sb.read_file("/tmp/from-cmd.txt") == b"from-cmd\n"
    sb.exec("rm -f /tmp/from-host.txt /tmp/from-cmd.txt")


def test_read_missing_file_raises_file_not_found(sb):
    with pytest.raises(FileNotFoundError):
        sb.read_file("no/such/file")


def test_upload_and_download_directory(sb, tmp_path):
    src = tmp_path / "proj"
    (src / "pkg" / "sub").mkdir(parents=True)
    (src / "README").write_text("hello\n")
    (src / "pkg" / "sub" / "data.bin").write_bytes(bytes(range(256)) * 4)
    (src / "pkg" / "run.sh").write_text("#!/bin/sh\necho ran\n")
    (src / "pkg" / "run.sh").chmod(0o755)
    try:
        sb.upload(src, "/workspace/up")
        r = sb.exec("cat up/README && ./up/pkg/run.sh && echo more >> up/README && [ -O up/pkg/sub/data.bin ] && echo mine")
        assert r.stdout == b"hello\nran\nmine\n", r
        got = sb.download("/workspace/up", tmp_path / "back")
        assert got == tmp_path / "back" / "up"
        assert (got / "README").read_text() == "hello\nmore\n"
        assert (got / "pkg" / "sub" / "data.bin").read_bytes() == bytes(range(256)) * 4
        assert os.access(got / "pkg" / "run.sh", os.X_OK)
    finally:
        sb.exec("rm -rf /workspace/up")


def test_symlink_to_passwd_reads_the_containers_file(sb, tmp_path):
    host_secret = tmp_path / f"host-only-{uuid.uuid4().hex}"
    host_secret.write_text("host secret\n")
    try:
        r = sb.exec(f"ln -sf /etc/passwd pw-link && ln -sf {host_secret} secret-link")
        assert r.exit_code == 0, r.stderr
        content = sb.read_file("pw-link")
        assert b"sandbox:x:1000:1000" in content
        assert content != Path("/etc/passwd").read_bytes()
        with pytest.raises(FileNotFoundError):
            sb.read_file("secret-link")
        with pytest.raises(FileNotFoundError):
            sb.read_file(str(host_secret))
    finally:
        sb.exec("rm -f pw-link secret-link")


def test_download_of_hostile_entries_cannot_write_outside_dest(sb, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    depth = "../" * 12
    r = sb.exec(
        "mkdir -p hostile && cd hostile && echo ok > fine.txt && "
        f"ln -s {depth}{str(outside).lstrip('/')}/pwned rel-escape && "
        f"ln -s {outside}/pwned2 abs-escape && "
        "echo x > suid && chmod 4755 suid && cd /workspace"
    )
    assert r.exit_code == 0, r.stderr
    dest = tmp_path / "dest"
    try:
        with pytest.raises(PathOutsideSandbox):
            sb.download("hostile", dest)
        assert list(outside.iterdir()) == []
        for p in dest.rglob("*"):
            if p.is_symlink():
                assert p.resolve().is_relative_to(dest.resolve()), p
        # A tree without hostile entries still comes out (with setuid bits stripped).
        sb.exec("rm hostile/rel-escape hostile/abs-escape && ln -s fine.txt hostile/inner-link")
        got = sb.download("hostile", tmp_path / "dest2")
        assert (got / "fine.txt").read_text() == "ok\n"
        assert (got / "inner-link").resolve() == (got / "fine.txt").resolve()
        assert not (got / "suid").stat().st_mode & 0o4000
    finally:
        sb.exec("rm -rf /workspace/hostile")


def test_paths_with_nul_are_refused(sb):
    with pytest.raises(PathOutsideSandbox):
        sb.read_file("a\0b")


# -- closing -------------------------------------------------------------------------


def test_close_removes_container_and_volumes_and_is_idempotent(combo, docker_client):
    image, runtime = combo
    api = docker_client.api
    sb = open_sandbox(image, SandboxPolicy(runtime=runtime), pool=False)
    assert container_exists(api, sb.id)
    volumes = volume_names(api, sb.id)
    assert volumes, "expected the /workspace and /tmp volumes"
    sb.close()
    assert sb.closed
    assert not container_exists(api, sb.id)
    for v in volumes:
        assert not volume_exists(api, v), f"volume {v} outlived its sandbox"
    sb.close()  # idempotent
    with pytest.raises(SandboxClosed):
        sb.exec("true")
    with pytest.raises(SandboxClosed):
        sb.write_file("x", "y")
    with pytest.raises(SandboxClosed):
        sb.read_file("x")


def test_context_manager_closes(combo, docker_client):
    image, runtime = combo
    with open_sandbox(image, SandboxPolicy(runtime=runtime), pool=False) as sb:
        assert sb.exec("echo in").stdout == b"in\n"
    assert not container_exists(docker_client.api, sb.id)
    with pytest.raises(SandboxClosed):
        sb.exec("true")


def test_export_tree_of_an_empty_and_a_full_directory_matches_tar():
    """A task's workspace snapshot: an empty directory is described by the server (no
    process started), a full one packed by tar; both read back as tar itself packs them."""
    import io
    import tarfile

    def members(raw: bytes) -> list[tuple]:
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            return [(m.name, m.type, m.mode, m.uid, m.gid, m.size) for m in tar.getmembers()]

    with open_sandbox("python", SandboxPolicy(timeout=30), pool=False) as sb:
        sb.exec("mkdir -p /tmp/empty /tmp/full && echo data > /tmp/full/f && chmod 700 /tmp/empty")
        for path in ("/tmp/empty", "/tmp/full"):
            parent, name = path.rsplit("/", 1)
            by_tar = sb.exec(f"tar -C {parent} -cf - {name}", timeout=30).stdout
            assert members(sb.export_tree(path)) == members(by_tar), path
        assert members(sb.export_tree("/tmp/empty"))[0][:3] == ("empty", tarfile.DIRTYPE, 0o700)
