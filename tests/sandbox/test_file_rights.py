"""The file API acts with the sandbox user's rights, in every image and runtime.

Each case is checked against what the user's own commands see in the same
sandbox: the file tools may do exactly what `cat`/`>` may do, no more, no less.
"""

from __future__ import annotations

import pytest

from pygent.errors import FileTooLarge, PygentError


def sh(sb, cmd: str) -> str:
    r = sb.exec(cmd, timeout=30)
    assert r.exit_code == 0, r
    return r.stdout.decode()


def stats(sb, *paths: str) -> list[tuple[str, str, int]]:
    """("uid gid", octal mode, mtime) per path. GNU find where there is one (coreutils'
    statx-based stat and ls fail under gVisor), else busybox stat (the minimal image)."""
    out = []
    for p in paths:
        line = sh(sb, f"find {p} -maxdepth 0 -printf '%U %G %m %T@\\n' 2>/dev/null || stat -c '%u %g %a %Y' {p}").split()
        out.append((f"{line[0]} {line[1]}", line[2], int(float(line[3]))))
    return out


def owner(sb) -> str:
    return " ".join(sh(sb, "id -u; id -g").split())


@pytest.fixture
def tmpdir_in(sb):
    """A fresh directory in /workspace, removed after the test (whatever its modes)."""
    path = "/workspace/rights"
    sh(sb, f"chmod -R u+rwx {path} 2>/dev/null; rm -rf {path}; mkdir {path}")
    yield path
    sb.exec(f"chmod -R u+rwx {path} 2>/dev/null; rm -rf {path}", timeout=30)


def test_reading_what_the_user_cannot_read_is_permission_error(sb, tmpdir_in):
    if sb.exec("test -e /etc/shadow").exit_code == 0:  # not in every image
        assert sb.exec("cat /etc/shadow").exit_code != 0  # the user's own view
        with pytest.raises(PermissionError, match="/etc/shadow"):
            sb.read_file("/etc/shadow")
    sh(sb, f"echo secret > {tmpdir_in}/mine && chmod 000 {tmpdir_in}/mine && ln -s mine {tmpdir_in}/link")
    with pytest.raises(PermissionError, match="mine"):
        sb.read_file(f"{tmpdir_in}/mine")
    with pytest.raises(PermissionError):  # a link resolves as the user, to what the user may not read
        sb.read_file(f"{tmpdir_in}/link")


def test_writing_where_the_user_cannot_write_is_permission_error_and_changes_nothing(sb, tmpdir_in):
    sh(sb, f"echo keep > {tmpdir_in}/ro && chmod 444 {tmpdir_in}/ro && mkdir {tmpdir_in}/lockeddir && chmod 555 {tmpdir_in}/lockeddir")
    with pytest.raises(PermissionError, match="ro"):
        sb.write_file(f"{tmpdir_in}/ro", "overwritten")
    assert sh(sb, f"cat {tmpdir_in}/ro") == "keep\n" and stats(sb, f"{tmpdir_in}/ro")[0][1] == "444"
    with pytest.raises(PermissionError):
        sb.write_file(f"{tmpdir_in}/lockeddir/new", "x")
    with pytest.raises(PermissionError):
        sb.write_file(f"{tmpdir_in}/lockeddir/deeper/new", "x")  # parents only where the user may write
    with pytest.raises(PermissionError):
        sb.write_file("/etc/passwd", "root::0:0::/:/bin/sh\n")
    with pytest.raises(PermissionError):
        sb.write_file("/usr/new-dir/file", "x")  # read-only root filesystem
    assert sh(sb, f"ls -A {tmpdir_in}/lockeddir; test ! -e /usr/new-dir && echo absent") == "absent\n"


def test_writing_onto_a_directory_is_is_a_directory_error_and_nothing_is_lost(sb, tmpdir_in):
    sh(sb, f"mkdir -p {tmpdir_in}/d /tmp/rights-d && echo inside > {tmpdir_in}/d/f && echo inside > /tmp/rights-d/f")
    try:
        for d in (f"{tmpdir_in}/d", "/tmp/rights-d"):
            with pytest.raises(IsADirectoryError, match="directory"):
                sb.write_file(d, "a file where a directory is")
            assert sh(sb, f"cat {d}/f") == "inside\n"
        with pytest.raises(IsADirectoryError, match="directory"):
            sb.read_file(f"{tmpdir_in}/d")
        sh(sb, f"echo x > {tmpdir_in}/plain")
        with pytest.raises(NotADirectoryError):
            sb.write_file(f"{tmpdir_in}/plain/child", "x")
    finally:
        sb.exec("rm -rf /tmp/rights-d")


def test_missing_parents_are_created_anywhere_the_user_may_write(sb, tmpdir_in):
    try:
        sb.write_file("/tmp/rights-a/b/c", "deep\n")
        sb.write_file(f"{tmpdir_in}/x/y/z.txt", "deep\n")
        assert sh(sb, "cat /tmp/rights-a/b/c") == "deep\n"
        got = [(who, mode) for who, mode, _ in stats(sb, "/tmp/rights-a", "/tmp/rights-a/b", f"{tmpdir_in}/x/y")]
        assert got == [(owner(sb), "755")] * 3
    finally:
        sb.exec("rm -rf /tmp/rights-a")


def test_new_files_are_the_users_with_0644_or_the_mode_given_existing_keep_theirs_mtime_is_now(sb, tmpdir_in):
    me = owner(sb)
    sh(sb, f"echo old > {tmpdir_in}/kept && chmod 640 {tmpdir_in}/kept && touch -d @1000000000 {tmpdir_in}/kept")
    before = int(sh(sb, "date +%s"))
    sb.write_file(f"{tmpdir_in}/new", "n")
    sb.write_file(f"{tmpdir_in}/private", "p", mode=0o600)
    sb.write_file(f"{tmpdir_in}/tool", "#!/bin/sh\necho ran\n", mode=0o755)
    sb.write_file(f"{tmpdir_in}/kept", "new content\n", mode=0o600)  # mode is for new files only
    names = ("new", "private", "tool", "kept")
    got = dict(zip(names, stats(sb, *(f"{tmpdir_in}/{n}" for n in names))))
    for name, mode in (("new", "644"), ("private", "600"), ("tool", "755"), ("kept", "640")):
        who, got_mode, mtime = got[name]
        assert (who, got_mode) == (me, mode), name
        assert mtime >= before, f"{name}: modification time {mtime} is not now ({before})"
    lines = sh(sb, f"{tmpdir_in}/tool && cat {tmpdir_in}/kept").splitlines()
    assert lines == ["ran", "new content"]


def test_zero_length_write_still_sets_mtime_now(sb, tmpdir_in):
    sh(sb, f": > {tmpdir_in}/empty && touch -d @1000000000 {tmpdir_in}/empty")
    before = int(sh(sb, "date +%s"))
    sb.write_file(f"{tmpdir_in}/empty", b"")
    assert stats(sb, f"{tmpdir_in}/empty")[0][2] >= before


def test_read_over_the_limit_is_its_own_error_and_returns_nothing(sb, tmpdir_in):
    sb.write_file(f"{tmpdir_in}/big", b"a" * 5000)
    with pytest.raises(FileTooLarge, match="5000 bytes, over the 4096 byte read limit") as info:
        sb.read_file(f"{tmpdir_in}/big", max_bytes=4096)
    assert isinstance(info.value, PygentError) and (info.value.size, info.value.limit) == (5000, 4096)
    assert sb.read_file(f"{tmpdir_in}/big", max_bytes=5000) == b"a" * 5000


def test_a_fifo_is_refused_not_waited_on(sb, tmpdir_in):
    sh(sb, f"mkfifo {tmpdir_in}/fifo")
    with pytest.raises(OSError, match="regular file"):
        sb.read_file(f"{tmpdir_in}/fifo")
    assert sb.exec("echo still-answering").stdout == b"still-answering\n"


def test_big_files_round_trip_in_chunks(sb, tmpdir_in):
    data = bytes(range(256)) * (12 << 12)  # 12 MiB: many frames each way
    sb.write_file(f"{tmpdir_in}/big.bin", data)
    assert sh(sb, f"wc -c < {tmpdir_in}/big.bin").strip() == str(len(data))
    assert sb.read_file(f"{tmpdir_in}/big.bin") == data


def test_upload_and_download_follow_the_same_rules(sb, tmpdir_in, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f.txt").write_text("f\n")
    sh(sb, f"mkdir {tmpdir_in}/locked && chmod 555 {tmpdir_in}/locked")
    with pytest.raises(PermissionError):
        sb.upload(src, f"{tmpdir_in}/locked/src")
    sb.upload(src, "/tmp/rights-up/deeper/src")  # parents created, as for write_file
    try:
        assert stats(sb, "/tmp/rights-up/deeper/src/sub/f.txt")[0][0] == owner(sb)
        sh(sb, f"echo s > {tmpdir_in}/secret && chmod 000 {tmpdir_in}/secret && mkdir {tmpdir_in}/tree && "
               f"echo ok > {tmpdir_in}/tree/ok && echo no > {tmpdir_in}/tree/no && chmod 000 {tmpdir_in}/tree/no")
        with pytest.raises(PermissionError):
            sb.download(f"{tmpdir_in}/secret", tmp_path / "out")
        with pytest.raises(PermissionError):
            sb.download(f"{tmpdir_in}/tree", tmp_path / "out")
        assert list((tmp_path / "out").iterdir()) == []  # nothing half-copied is left on the host
        got = sb.download("/tmp/rights-up/deeper/src", tmp_path / "back")
        assert (got / "sub" / "f.txt").read_text() == "f\n"
    finally:
        sb.exec("rm -rf /tmp/rights-up")


def test_agent_file_tools_have_the_users_rights():
    from pygent import Runtime

    rt = Runtime()  # what the agent's read_file/write_file tools call
    try:
        with pytest.raises(PermissionError):
            rt.read_file("/etc/shadow")
        rt.bash("mkdir d && echo inside > d/f")
        with pytest.raises(IsADirectoryError):
            rt.write_file("d", "x")
        assert rt.read_file("d/f") == "inside\n"
        assert rt.write_file("/tmp/new/dir/f", "ok").startswith("Wrote 2 bytes")
    finally:
        rt.cleanup()


# -- commands of any length ------------------------------------------------------------


def test_a_10_mib_script_runs_and_stdin_stays_the_commands(sb):
    line = "x" * 1023 + "\n"
    body = line * (10 << 10)  # 10 MiB in one heredoc: far over Linux's 128 KiB cap on one argument
    script = f"cat > /dev/null; wc -c <<'EOF'\n{body}EOF\necho $0"
    r = sb.exec(script, stdin=b"the command's own stdin\n", timeout=120)
    assert r.exit_code == 0, r.stderr[-500:]
    assert r.stdout.split() == [str(len(body)).encode(), b"/opt/pygent/bin/bash"]  # $0: the shell, as for bash -c
    r = sb.exec("cat; echo\n" + "true\n" * 40000, stdin=b"piped")  # 200 KiB of commands, stdin intact
    assert r.exit_code == 0 and r.stdout == b"piped\n", r


def test_a_command_that_cannot_start_is_a_result_not_an_exception(sb):
    r = sb.exec("echo never", workdir="/no/such/dir")
    assert r.exit_code == 126
    assert b"/no/such/dir" in r.stderr and b"No such file or directory" in r.stderr
    r = sb.exec("no-such-program-here")
    assert r.exit_code == 127 and b"command not found" in r.stderr
    assert sb.exec("echo fine").stdout == b"fine\n"  # the sandbox still runs commands
