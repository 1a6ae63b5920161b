#!/usr/bin/env python3
"""The in-container command server: the container's main process in bundled images.

Why it exists: `docker exec` costs ~50 ms a call here; this server is started
once per container and runs each command in ~2 ms, spoken to over the
container's attach stream (stdin/stdout), which works on every runtime (runc,
runsc) without a network or a host socket.

It keeps every guarantee of the exec path, from inside the container:
each command runs in its own session; the wall-clock limit kills the whole
tree (session, process group, and anything carrying the command's marker);
stdout/stderr stay separate and are capped head+tail here, so a 50 MB print
never crosses the stream; a background child holding stdout open does not
hang the call (its output is drained and discarded). When stdin closes (the
owner went away, even by SIGKILL) everything is killed and the server exits,
so the container (auto-remove) disappears with its owner.

Stdlib only, Python >= 3.8. Imported on the host too, for `HeadTail` and the
frame format: keep module import free of side effects.

The frames it speaks are defined in protocol.py (beside it in the tooling volume).
"""

import _signal as signal  # the C module: `signal` imports enum (+2 ms at every start)
import errno
import fcntl
import marshal
import os
import select
import stat  # imported by os already: free
import sys
import time

if __package__:  # imported on the host (tests)
    from .protocol import *  # noqa: F401,F403
else:  # the container's main process: protocol.pyc sits beside server.pyc (isolated mode adds no path)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from protocol import *  # noqa: F401,F403

def script_prefix(script_fd):
    """Bash prepended on the script's first line (line numbers stay right): closes the fd
    the script came on (bash reads it through its own fd) and names the shell after its
    executable again ($0), as with `bash -c`."""
    return "builtin exec %d<&-; BASH_ARGV0=$BASH; " % script_fd


def shell_prefix(cwd_fd, script_fd):
    """script_prefix, then: makes the command the first OOM victim (never the server), and
    reports the final working directory so `cd` persists across calls like in a terminal."""
    return script_prefix(script_fd) + (
        "builtin echo 1000 >/proc/self/oom_score_adj 2>/dev/null; "
        "trap 'builtin printf %%s \"$PWD\" >&%d 2>/dev/null' EXIT; " % cwd_fd
    )


def cgroup_counter(paths, name):
    """The counter `name` in the first readable of these cgroup files (v2 first, then v1), or None."""
    prefix = name + " "
    for path in paths:
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith(prefix):
                        return int(line.split()[1])
        except (OSError, ValueError):
            continue
    return None


def cost(usage, tree_peak=0):
    """What a command used (protocol.Done's cpu_user/cpu_sys/max_rss): its wait4 rusage and
    the peak of its process tree's memory that the server sampled (`tree_rss`).

    Why not the cgroup: the cgroup is the whole sandbox (the server, background jobs,
    other commands), its peak cannot be reset per command (cgroup v1 here; v2's reset
    needs a writable cgroupfs, and a sandbox's is read-only). rusage covers the
    command's tree (every descendant that was waited for), but its ru_maxrss (KiB) is
    the largest single process; four workers of 100 MB each read as 100 MB. So the peak
    is the larger of that and the sampled sum (issue 26)."""
    if usage is None:
        return {}
    return {"cpu_user": round(usage.ru_utime, 6), "cpu_sys": round(usage.ru_stime, 6),
            "max_rss": max(usage.ru_maxrss * 1024, tree_peak)}


#: Sampling of a command's process tree for its peak memory: first after SAMPLE_FIRST s, then
#: every elapsed/SAMPLE_SHARE s, within [SAMPLE_FIRST, SAMPLE_MAX]. Why growing: a quick command
#: costs no scan (ru_maxrss covers it), a long one a scan of /proc (~0.1 ms) at most every 0.1 s.
SAMPLE_FIRST, SAMPLE_MAX, SAMPLE_SHARE = 0.01, 0.1, 20
PAGE = os.sysconf("SC_PAGE_SIZE")


def tree_rss(sessions):
    """{session: bytes resident} summed over the processes of each of `sessions`, one scan of /proc.

    A command runs in its own session (spawn's setsid), so its tree is its session:
    children, pipelines, subshells and background jobs. Shared pages count in each
    process that maps them (RSS), which errs on the high side, as `ps` sums do."""
    total = dict.fromkeys(sessions, 0)
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as f:
                data = f.read()
            fields = data[data.rindex(b")") + 2 :].split()
            session = int(fields[3])
            if session in total:
                total[session] += int(fields[21]) * PAGE
        except (OSError, ValueError, IndexError):
            continue
    return total


def oom_kills():
    """OOM kills counted by this container's memory cgroup, or None."""
    return cgroup_counter(("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"), "oom_kill")


def look(path):
    """A directory's stat and whether it is empty, without starting a process: a task's
    workspace snapshot needs no `tar` when nothing was written."""
    try:
        st = os.stat(path)
        with os.scandir(path) as entries:
            empty = next(entries, None) is None
        return {"empty": empty, "mode": st.st_mode & 0o7777, "uid": st.st_uid, "gid": st.st_gid, "mtime": int(st.st_mtime)}
    except OSError as exc:
        return {"error": "%s: %s" % (type(exc).__name__, exc)}


def pids_usage():
    """(current, max) of this container's pids cgroup (v2 or v1); max is None when unlimited."""
    for base in ("/sys/fs/cgroup/", "/sys/fs/cgroup/pids/"):
        try:
            with open(base + "pids.current") as f:
                current = int(f.read())
            with open(base + "pids.max") as f:
                limit = f.read().strip()
        except (OSError, ValueError):
            continue
        return current, (int(limit) if limit.isdigit() else None)
    return None


def pids_limit_hits():
    """How many forks failed at this container's pids limit so far (pids.events), or None."""
    return cgroup_counter(("/sys/fs/cgroup/pids.events", "/sys/fs/cgroup/pids/pids.events"), "max")


#: The RLIMIT_NPROC bound_processes set (None: the pids cgroup bounds the sandbox).
NPROC_LIMIT = None


def near_pids_limit():
    """At 90% of the pids cgroup's limit, or, where RLIMIT_NPROC is the bound (gVisor, rootless
    on cgroup v1: no pids cgroup to read), of that limit by a count of /proc."""
    usage = pids_usage()
    if usage is not None and usage[1] is not None:
        return usage[0] * 10 >= usage[1] * 9
    if NPROC_LIMIT is None:
        return False
    count = sum(1 for name in os.listdir("/proc") if name.isdigit())
    return count * 10 >= NPROC_LIMIT * 9


def proc_stat(pid):
    """(pgrp, session) of a process, or None if it is gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read()
        fields = data[data.rindex(b")") + 2 :].split()
        return int(fields[2]), int(fields[3])
    except (OSError, ValueError, IndexError):
        return None


def has_marker(pid, marker):
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            return marker in f.read().split(b"\0")
    except OSError:
        return False


#: Seconds a command's fork is retried after a reclaim (Server.spawn_after_reclaim). 3 s
#: was not enough once in CI (gVisor under Podman, with the machine's 2 cores busy).
FORK_RETRY = 10.0


def freeze_and_kill(match):
    """SIGKILL every process `match(pid, (pgrp, session))` selects, fork bombs included.

    Processes are stopped first (SIGSTOP) until a scan finds no new one: a
    stopped process cannot fork, so the set stops growing; then all are killed.
    Killing directly races a bomb that forks faster than we scan. Returns the
    number of processes killed.
    """
    me = os.getpid()
    stopped = set()
    for _ in range(200):
        new = False
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            pid = int(name)
            if pid in (me, 1) or pid in stopped:
                continue
            st = proc_stat(pid)
            if st is None or not match(pid, st):
                continue
            try:
                os.kill(pid, signal.SIGSTOP)
                stopped.add(pid)
                new = True
            except OSError:
                pass
        if not new:
            break
    for pid in stopped:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    # Until init has reaped them they still hold pids (the limit counts zombies): wait, briefly.
    # Our own children are reaped by us right after, so their zombies count as gone.
    deadline = time.monotonic() + 2.0
    left = set(stopped)
    while left and time.monotonic() < deadline:
        left = {pid for pid in left if not _gone_or_ours_to_reap(pid, me)}
        if left:
            time.sleep(0.005)
    return len(stopped)


def _gone_or_ours_to_reap(pid, me):
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read()
    except OSError:
        return True
    fields = data[data.rindex(b")") + 2 :].split()
    return fields[0] == b"Z" and int(fields[1]) == me


def kill_tree(leader, marker):
    """SIGKILL everything the command started: its session, its group, its marker."""
    freeze_and_kill(lambda pid, st: leader in st or has_marker(pid, marker))
    try:
        os.killpg(leader, signal.SIGKILL)
    except OSError:
        pass


# -- shell state (issue 14) -------------------------------------------------
# Each command's bash loads the previous state from a file the server writes
# (BASH_ENV, so aliases and line numbers work as typed) and dumps its own state
# at EXIT to a pipe only the server reads. No sentinel ever crosses stdout or
# stderr; a dump is kept only when it is complete (its per-command nonce ends
# it), the command was not killed or timed out, and it fits the cap.

#: The fd the loader (BASH_ENV) is read from, and the one the dump is written to.
LOADER_FD, STATE_FD = 104, 103
SCRIPT_FD = 105
#: Largest state kept, in bytes (the dump of variables, functions, aliases, options).
STATE_MAX = 256 << 10
#: Variables a shell sets itself, or the mechanism's own: never saved.
STATE_SKIP = (
    "BASH* SHELLOPTS EUID UID PPID RANDOM SRANDOM LINENO SECONDS EPOCHSECONDS EPOCHREALTIME FUNCNAME "
    "PIPESTATUS GROUPS HISTCMD DIRSTACK COMP_* COLUMNS LINES SHLVL PWD _ POSIXLY_CORRECT HOSTTYPE MACHTYPE "
    "OSTYPE OPTIND OPTERR __pygent_* " + MARKER_ENV
).replace(" ", "|")
#: `set -o` options a later command restores (the interactive-only ones and noexec/onecmd are left out).
STATE_SET_OPTIONS = (
    "allexport braceexpand errexit errtrace functrace hashall keyword noclobber noglob nolog notify "
    "nounset physical pipefail posix verbose xtrace"
).split()
#: `shopt` options a later command restores (login_shell, restricted_shell cannot be set).
STATE_SHOPT = (
    "autocd assoc_expand_once cdable_vars cdspell checkhash checkjobs checkwinsize cmdhist compat31 compat32 "
    "compat40 compat41 compat42 compat43 compat44 complete_fullquote direxpand dirspell dotglob execfail "
    "expand_aliases extdebug extglob extquote failglob force_fignore globasciiranges globskipdots globstar "
    "gnu_errfmt histappend histreedit histverify hostcomplete huponexit inherit_errexit interactive_comments "
    "lastpipe lithist localvar_inherit localvar_unset mailwarn no_empty_cmd_completion nocaseglob nocasematch "
    "noexpand_translation nullglob patsub_replacement progcomp progcomp_alias promptvars shift_verbose "
    "sourcepath varredir_close xpg_echo"
).split()
_NAME_PREFIXES = " ".join('"${!%s@}"' % c for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
#: Removes functions that would shadow what the mechanism calls. In posix mode `unset`
#: (a special builtin) is found before any function, so this works whatever was defined.
_UNSHADOW = "POSIXLY_CORRECT=y; unset -f builtin unset; unset POSIXLY_CORRECT"


def state_dump_trap(nonce):
    """The EXIT trap that writes the shell's state to STATE_FD, in sections ended by the nonce.

    Options are read from variables first (no command is looked up), then the
    shadowing functions are removed and errexit/xtrace turned off, and every
    command after that is `builtin ...`: what the user's command defined cannot
    take the dump over. Everything goes to STATE_FD, never stdout/stderr.
    """
    n = nonce.decode()
    body = (
        "{ __pygent_so=$SHELLOPTS __pygent_bo=$BASHOPTS __pygent_cwd=$PWD; "
        "POSIXLY_CORRECT=y; unset -f builtin unset; set +euvx +o pipefail; unset POSIXLY_CORRECT; "
        "builtin enable declare printf umask alias shopt; builtin shopt -u nocasematch extglob; "
        'builtin printf "\\n%s cwd\\n%s\\n%s opts\\n%s\\n%s\\n%s umask\\n" ' + n + ' "$__pygent_cwd" ' + n
        + ' "$__pygent_so" "$__pygent_bo" ' + n + "; builtin umask; "
        'builtin printf "\\n%s vars\\n" ' + n + "; "
        # The names first, then one `declare -p` for all of them: one write instead of one per variable.
        "__pygent_n=(); for __pygent_v in " + _NAME_PREFIXES + "; do case $__pygent_v in " + STATE_SKIP + ") ;; "
        '*) __pygent_n+=("$__pygent_v");; esac; done; '
        '(( ${#__pygent_n[@]} )) && builtin declare -p -- "${__pygent_n[@]}"; '
        'builtin printf "\\n%s funcs\\n" ' + n + "; builtin declare -f; "
        'builtin printf "\\n%s alias\\n" ' + n + "; builtin alias -p; "
        # Ended only when every builtin the dump needs worked (`enable -n` can disable them).
        "builtin declare -p __pygent_cwd >/dev/null && builtin alias -p >/dev/null && builtin umask >/dev/null && "
        'builtin printf "\\n%s end\\n" ' + n + "; } >&%d 2>/dev/null" % STATE_FD
    )
    return body


def parse_state_dump(data, nonce):
    """The sections of a complete dump {name: bytes}, or None (incomplete: killed, exec'd, trap replaced)."""
    parts = data.split(b"\n" + nonce + b" ")
    if len(parts) < 2 or parts[0]:
        return None
    sections = {}
    for part in parts[1:]:
        name, _, body = part.partition(b"\n")
        sections[name.decode("ascii", "replace")] = body
    if set(sections) != {"cwd", "opts", "umask", "vars", "funcs", "alias", "end"} or sections["end"]:
        return None
    return sections


def state_script(sections):
    """The bash that restores a parsed dump (kept by the server as the sandbox's state)."""
    opts = sections["opts"].decode("utf-8", "replace").split("\n")
    so = set((opts[0] if opts else "").split(":"))
    bo = set((opts[1] if len(opts) > 1 else "").split(":"))
    umask = sections["umask"].strip()
    if not umask.isdigit():
        umask = b"0022"
    # `declare -f` ends an exported function with `declare -fx NAME`: through `builtin`, so that a
    # function named declare is not what runs (none named builtin is ever dumped: _UNSHADOW ran first).
    funcs = sections["funcs"].replace(b"\ndeclare -fx ", b"\nbuiltin declare -fx ")
    on = [o for o in STATE_SHOPT if o in bo]
    off = [o for o in STATE_SHOPT if o not in bo]
    tail = "builtin set %s\n" % " ".join(("-o " if o in so else "+o ") + o for o in STATE_SET_OPTIONS)
    if on:
        tail += "builtin shopt -s %s\n" % " ".join(on)
    if off:
        tail += "builtin shopt -u %s\n" % " ".join(off)
    return b"".join((
        b"{\n", sections["vars"], b"\n} 2>/dev/null\n",
        funcs, b"\n", sections["alias"], b"\n",
        _UNSHADOW.encode(), b"\n", b"builtin umask " + umask + b"\n", tail.encode(),
    ))


def _quote(value):
    return "'" + value.replace("'", "'\\''") + "'"


def state_loader(state, env, nonce, background):
    """What BASH_ENV runs before the command: the saved state (split so that the
    options, errexit above all, apply only once the loader is done), the call's
    own env on top, and the dump trap (none for a background command: its state is not kept)."""
    head = b"builtin echo 1000 >|/proc/self/oom_score_adj 2>/dev/null\nbuiltin shopt -s expand_aliases\n"
    body = state or b""
    cut = body.rfind(b"\nbuiltin umask ")
    script, options = (body[: cut + 1], body[cut + 1 :]) if cut >= 0 else (body, b"")
    own = "".join(
        "builtin export %s=%s\n" % (k, _quote(v)) for k, v in env.items() if k.isidentifier() and k.isascii()
    ).encode()
    trap = b"" if background else ("builtin trap %s EXIT\n" % _quote(state_dump_trap(nonce))).encode()
    close = ("builtin exec %d<&-\n" % LOADER_FD).encode()
    return b"".join((head, script, own, b"builtin unset BASH_ENV\n", trap, close, options))


def memory_fd(data):
    """An fd to read `data` from (a state loader, a command's script): an in-memory file,
    else an unnamed file in /tmp, else a pipe (64 KiB at most). Close-on-exec."""
    try:
        fd = os.memfd_create("pygent", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        try:
            fd = os.open("/tmp", os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
        except (AttributeError, OSError):
            r, w = os.pipe()
            try:
                os.write(w, data[:65536])  # what a fresh pipe holds
            finally:
                os.close(w)
            return r
    try:
        write_all(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_all(fd, data):
    """os.write until all of `data` is written (a write may take only part of it)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class OutputRing:
    """A background command's output (stdout and stderr interleaved, as a terminal shows it):
    the last `cap` bytes, addressed by their offset since the command started."""

    def __init__(self, cap):
        self.cap = cap
        self.buf = bytearray()
        self.total = 0

    def add(self, data):
        self.total += len(data)
        self.buf += data
        if len(self.buf) > self.cap:
            del self.buf[: len(self.buf) - self.cap]

    def since(self, offset, limit):
        """(bytes from offset on, head+tail within limit; bytes lost before them; the next offset)."""
        first = self.total - len(self.buf)
        offset = max(0, min(int(offset), self.total))
        lost = max(0, first - offset)
        data = bytes(self.buf[max(offset, first) - first :])
        if len(data) > limit:
            cut = HeadTail(limit)
            cut.add(data)
            data = cut.value()
        return data, lost, self.total


#: Bytes of a background command's output the server keeps (the newest).
RING_CAP = 1 << 20
#: Background commands (running and finished) one sandbox keeps track of.
MAX_HANDLES = 64
#: Bytes of live output (output as it arrives, for displays) sent per command.
LIVE_MAX = 1 << 20


class Command:
    """One running command and everything the server tracks for it."""

    def __init__(self, cid, spec, default_cwd, state=None):
        self.cid = cid
        self.stream = bool(spec.get("stream"))
        cap = int(spec.get("max_output") or 64000)
        self.out = HeadTail(cap)
        self.err = HeadTail(cap)
        self.timeout = spec.get("timeout")
        self.started = time.monotonic()
        self.deadline = self.started + float(self.timeout) if self.timeout else None
        self.timed_out = False
        self.killed = False
        self.marker = ("%s=%d.%d" % (MARKER_ENV, os.getpid(), cid)).encode()
        self.stdin_buf = bytearray()
        self.stdin_eof = False
        self.returncode = None
        self.cwd_bytes = b""
        self.dump_size = 0  # bytes the shell wrote to its cwd/state fd, kept or not
        self.oom_before = oom_kills()
        self.cmdline = spec["cmd"]
        #: shell state (issue 14): the key of the state this command loads and saves, its dump's nonce
        self.state_key = spec.get("state") if isinstance(spec.get("state"), str) else None
        self.nonce = os.urandom(8).hex().encode() if self.state_key is not None else b""
        self.state_max = int(spec.get("state_max") or STATE_MAX)
        #: background (issue 14): started as one, or moved there by idle_timeout; output goes to a ring
        self.background = bool(spec.get("background"))
        self.ring = OutputRing(RING_CAP) if self.background else None
        self.idle = float(spec["idle_timeout"]) if spec.get("idle_timeout") else None
        self.last_output = self.started
        self.live = bool(spec.get("live"))
        self.live_left = LIVE_MAX
        self.finished_at = None
        self.usage = None  #: the main process's wait4 rusage once it ended
        self.tree_peak = 0  #: bytes: the largest sum of the tree's RSS sampled so far (issue 26)
        self.next_sample = self.started + SAMPLE_FIRST
        env = dict(os.environ)
        env.update(spec.get("env") or {})
        env[MARKER_ENV] = self.marker.decode().split("=", 1)[1]
        cwd_r, cwd_w = os.pipe()
        self.cwd_r = cwd_r
        ours = [cwd_w]  # the child's ends, closed here once it runs
        mine = []  # our ends, closed again if the command cannot start
        extra = {}
        if self.state_key is not None:
            loader = state_loader(state, spec.get("env") or {}, self.nonce, self.background)
            extra[LOADER_FD] = memory_fd(loader)
            ours.append(extra[LOADER_FD])
            env["BASH_ENV"] = "/dev/fd/%d" % LOADER_FD
            script = script_prefix(SCRIPT_FD) + spec["cmd"]
        else:
            script = shell_prefix(CWD_FD, SCRIPT_FD) + spec["cmd"]
        # The script is read from a file (fd SCRIPT_FD), not passed as `bash -c` argv: Linux
        # caps one argv string at 128 KiB (E2BIG), so a big heredoc or generated script failed.
        argv = [BASH, "/dev/fd/%d" % SCRIPT_FD]
        try:
            stdin = None
            if spec.get("stdin") or self.background:
                in_r, in_w = os.pipe()
                ours.append(in_r)
                stdin = Pipe(in_w)
                mine.append(stdin)
            else:
                in_r = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
                ours.append(in_r)
            out_r, out_w = os.pipe()
            ours.append(out_w)
            mine.append(Pipe(out_r))
            err_r, err_w = os.pipe()
            ours.append(err_w)
            mine.append(Pipe(err_r))
            self.proc = Proc(stdin, mine[-2], mine[-1])
            fds = [in_r, out_w, err_w, cwd_w]
            if self.state_key is not None:  # the dump goes to a high fd: scripts use 3-9 themselves
                fds[3] = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
                ours.append(fds[3])
                extra[STATE_FD] = cwd_w
            extra[SCRIPT_FD] = memory_fd(script.encode("utf-8", "surrogateescape"))
            ours.append(extra[SCRIPT_FD])
            self.proc.pid = spawn(argv, env, spec.get("cwd") or default_cwd, fds, extra)
        except BaseException:
            os.close(cwd_r)
            for pipe in mine:
                pipe.close()
            raise
        finally:
            for fd in ours:
                os.close(fd)
        for pipe in self.proc.pipes():
            os.set_blocking(pipe.fileno(), False)
        os.set_blocking(cwd_r, False)

    def take_dump(self, data):
        """Count what the shell wrote on its cwd/state fd; keep it up to the cap.

        Why the count is kept apart from the bytes: a dump over the cap is not
        stored, yet its note must say how big it was (issue 21).
        """
        self.dump_size += len(data)
        if len(self.cwd_bytes) <= self.state_max:  # past the cap: counted, not kept
            self.cwd_bytes += data

    def drain_dump(self):
        """Read what is left in the cwd/state pipe once the shell has exited.

        Why a loop: the shell writes its dump at EXIT, so when its exit is
        reaped up to a whole pipe buffer (64 KiB) may still be unread; a single
        read cut a dump of 192-320 kB short, and the state was dropped without
        a note (issue 21). Never blocks: a background child may hold the pipe
        open, and what it writes after the shell's exit is bounded by the cap.
        """
        limit = self.state_max + (1 << 20)
        while self.dump_size <= limit:
            try:
                data = os.read(self.cwd_r, CHUNK)
            except OSError:  # BlockingIOError: nothing more now
                return
            if not data:
                return
            self.take_dump(data)


def too_large(size, cap):
    """The state result for a dump or stored state over the cap: how big, and the limit."""
    return "too_large: the state is %d bytes (%d KiB), over the %d byte (%d KiB) limit" % (
        size, size >> 10, cap, cap >> 10)


#: The fd the command's shell reports its final working directory on.
CWD_FD = 3


def find_bash():
    """pygent's static bash from the tooling volume beside this file, in every image.

    Why not the image's: the command line, the cwd report and the shell-state
    mechanism rely on bash 5 (`${!prefix@}`, `declare -p` formats, BASH_ENV
    semantics), and an image may carry an older bash, a patched one or none; the
    same static bash everywhere gives every image the same guarantees, and it
    starts ~0.5 ms faster than a dynamically linked one (no loader, no libtinfo).
    Programs that run `bash` by name still get the image's own from PATH.
    Outside the tooling volume (the host's tests import this module): /bin/bash.
    """
    for path in (os.path.join(os.path.dirname(os.path.abspath(__file__)), "bin", "bash"), "/bin/bash", "/usr/bin/bash"):
        if os.access(path, os.X_OK):
            return path
    return "/bin/bash"


BASH = find_bash()


#: Signals a command starts with at their defaults: the server's interpreter ignores SIGPIPE
#: and SIGXFSZ, and an exec keeps ignored signals ignored (`yes | head -1` then printed
#: "Broken pipe" and failed instead of ending quietly, as in any shell).
DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)


def spawn(argv, env, cwd, fds, extra=None):
    """Start argv in its own session in `cwd`, with fds as its 0, 1, 2, 3 (and extra
    {target: fd}); return the pid.

    Why posix_spawn and not fork: forking the server (a python process) costs ~0.7 ms
    a command here (its page tables, cgroup accounting); posix_spawn (vfork + exec in
    glibc) a fraction of that. It has no chdir action, so the server, which is single
    threaded, changes into `cwd` itself around the call: a bad cwd raises as os.chdir
    does (FileNotFoundError, NotADirectoryError, PermissionError with the cwd as
    filename), a missing program as posix_spawn does, a full process table
    BlockingIOError. Why not subprocess: importing it costs ~5 ms of CPU at every start.
    """
    moved = {}
    try:
        # Out of the way of every target first: a source may sit on a high target.
        for target, fd in (extra or {}).items():
            moved[target] = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 256)
        actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(fds)]
        actions += [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in moved.items()]
        here = os.open(".", os.O_RDONLY | os.O_CLOEXEC)  # relative cwds keep meaning what they meant
        try:
            os.chdir(cwd)
            try:
                return os.posix_spawn(argv[0], argv, env, file_actions=actions, setsid=True, setsigdef=DEFAULT_SIGNALS)
            except OSError as exc:
                if exc.filename is None:
                    exc.filename = argv[0]
                raise
            finally:
                os.fchdir(here)
        finally:
            os.close(here)
    finally:
        for fd in moved.values():
            os.close(fd)


class Pipe:
    """Our end of a pipe to a command (the subset of a file object the server uses)."""

    __slots__ = ("fd", "closed")

    def __init__(self, fd):
        self.fd = fd
        self.closed = False

    def fileno(self):
        return self.fd

    def close(self):
        if not self.closed:
            self.closed = True
            os.close(self.fd)


class Proc:
    """A started command: pid, its pipes, and its exit code once reaped."""

    __slots__ = ("pid", "stdin", "stdout", "stderr", "returncode")

    def __init__(self, stdin, stdout, stderr):
        self.pid = None
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.returncode = None

    def pipes(self):
        return [p for p in (self.stdin, self.stdout, self.stderr) if p is not None]


EVENT_READ, EVENT_WRITE = select.EPOLLIN, select.EPOLLOUT


class Key:
    __slots__ = ("fileobj", "fd", "data")

    def __init__(self, fileobj, fd, data):
        self.fileobj, self.fd, self.data = fileobj, fd, data


class Poller:
    """The part of selectors.DefaultSelector the server uses, on epoll (selectors: +1.5 ms a start)."""

    def __init__(self):
        self.epoll = select.epoll()
        self.keys = {}

    @staticmethod
    def _fd(fileobj):
        return fileobj if isinstance(fileobj, int) else fileobj.fileno()

    def register(self, fileobj, events, data):
        fd = self._fd(fileobj)
        if fd in self.keys:
            raise KeyError("%r is already registered" % (fileobj,))
        self.epoll.register(fd, events)
        self.keys[fd] = Key(fileobj, fd, data)

    def modify(self, fileobj, events, data):
        fd = self._fd(fileobj)
        key = self.keys[fd]
        self.epoll.modify(fd, events)
        key.data = data

    def unregister(self, fileobj):
        key = self.keys.pop(self._fd(fileobj))
        try:
            self.epoll.unregister(key.fd)
        except (OSError, ValueError):
            pass

    def select(self, timeout):
        while True:
            try:
                ready = self.epoll.poll(-1 if timeout is None else timeout)
                break
            except InterruptedError:
                continue
        return [(self.keys[fd], ev) for fd, ev in ready if fd in self.keys]


# -- FileOps: the file API as the sandbox user ------------------------------------
#
# Why here: the server runs as the sandbox user, so open()/makedirs() here get
# exactly the rights the user's commands have (an unreadable file stays
# unreadable, a read-only one unwritable), new files are the user's, and
# nothing on the host checks a path that a hostile command could swap meanwhile.

FILE_FRAMES = (WRITE, BYTES, CLOSE, GET)
_FILE_FLAGS = os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0)


def file_error(exc):
    return {"errno": getattr(exc, "errno", 0) or 0, "error": getattr(exc, "strerror", None) or str(exc)}


def regular(fd, path):
    """Refuse what is not a regular file (a FIFO would block the server, a device is not a file)."""
    mode = os.fstat(fd).st_mode
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "Is a directory", path)
    if not stat.S_ISREG(mode):
        raise OSError(errno.EINVAL, "Not a regular file (a device, FIFO or socket)", path)
    os.set_blocking(fd, True)


def open_for_write(spec):
    """Open (creating parents and the file as needed) for writing; (fd or None, created)."""
    path, kind = spec["path"], spec.get("kind") or "file"
    if kind == "dir":
        os.makedirs(path, 0o755, exist_ok=True)
        return None, False
    parent = os.path.dirname(path)
    if parent and not os.path.isdir(parent):
        try:
            os.makedirs(parent, 0o755, exist_ok=True)
        except FileExistsError:  # a file where a directory should be: open() says ENOTDIR
            pass
    if kind == "symlink":
        if os.path.islink(path):  # copied again: the new link replaces the old one
            os.unlink(path)
        os.symlink(spec["target"], path)
        return None, True
    mode = int(spec.get("mode", 0o644)) & 0o7777
    for _ in range(3):  # an existing file keeps its owner and mode; a new one gets `mode` exactly
        try:
            fd = os.open(path, os.O_WRONLY | _FILE_FLAGS)
            created = False
        except FileNotFoundError:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _FILE_FLAGS, 0o600)
            except FileExistsError:  # created meanwhile (or a dangling symlink): look again
                continue
            created = True
        try:
            regular(fd, path)
            if created:
                os.fchmod(fd, mode)
            else:
                os.ftruncate(fd, 0)
        except BaseException:
            os.close(fd)
            raise
        return fd, created
    raise FileExistsError(errno.EEXIST, "File exists (a dangling symbolic link?)", path)


class FileWrite:
    """One W..C write in progress: the open file, or the error that stopped it."""

    __slots__ = ("fd", "created", "size", "error")

    def __init__(self, spec):
        self.fd, self.created, self.size, self.error = None, False, 0, None
        try:
            self.fd, self.created = open_for_write(spec)
        except (OSError, KeyError, TypeError, ValueError) as exc:
            self.error = file_error(exc)

    def write(self, data):
        if self.fd is None or self.error:
            return
        try:
            write_all(self.fd, data)
            self.size += len(data)
        except OSError as exc:  # no space left, file size limit
            self.error = file_error(exc)

    def close(self):
        if self.fd is not None:
            try:
                if not self.error:
                    os.utime(self.fd)  # modified now, also when nothing changed in size
                os.close(self.fd)
            except OSError as exc:
                self.error = self.error or file_error(exc)
            self.fd = None
        return self.error or {"size": self.size, "created": self.created}


class FileOps:
    """The W/B/C (write) and G (get) frames. Writes are fed frame by frame, so a big
    file never sits whole in memory; a get streams B frames of CHUNK bytes."""

    def __init__(self, send, send_json):
        self.send, self.send_json = send, send_json
        self.writes = {}

    def on_frame(self, kind, cid, payload):
        if kind == WRITE:
            spec = self.spec(cid, payload, ("path",))
            if spec is not None:
                self.writes[cid] = FileWrite(spec)
        elif kind == BYTES:
            w = self.writes.get(cid)
            if w is not None:
                w.write(payload)
        elif kind == CLOSE:
            w = self.writes.pop(cid, None)
            if w is not None:
                self.send_json(ANSWER, cid, w.close())
        elif kind == GET:
            spec = self.spec(cid, payload, ("path", "max"))
            if spec is not None:
                self.send_json(ANSWER, cid, self.get(cid, spec["path"], int(spec["max"])))

    def spec(self, cid, payload, keys):
        try:
            spec = marshal.loads(payload)
        except (EOFError, ValueError, TypeError):
            spec = None
        if not isinstance(spec, dict) or not all(isinstance(spec.get(k), (str, int)) for k in keys):
            self.send_json(FAILED, cid, {"error": "malformed file request"})
            return None
        return spec

    def get(self, cid, path, limit):
        try:
            fd = os.open(path, os.O_RDONLY | _FILE_FLAGS)
        except OSError as exc:
            return file_error(exc)
        try:
            regular(fd, path)
            st = os.fstat(fd)
            size = st.st_size
            if size > limit:
                return {"errno": errno.EFBIG, "error": "File too large", "too_large": size}
            total = 0
            while True:  # the file may grow meanwhile: never send more than the limit
                data = os.read(fd, min(CHUNK, limit + 1 - total))
                if not data:
                    return {"size": total, "mode": st.st_mode & 0o7777}
                total += len(data)
                if total > limit:
                    return {"errno": errno.EFBIG, "error": "File too large", "too_large": total}
                self.send(BYTES, cid, data)
        except OSError as exc:
            return file_error(exc)
        finally:
            os.close(fd)



# -- snapshots (issue 24) ------------------------------------------------------
#
# Why here: the server runs as the sandbox user, so a snapshot holds exactly what
# that user sees (an unreadable file is an error, not a silent hole) and a restore
# creates files the user owns, inside the container: nothing on the host is
# touched. The stream is protocol.ENTRY records (parsed with struct on the host:
# never marshal on bytes a sandbox made).

#: While a command has a deadline the server wakes at least this often (seconds), and a wake
#: later than PAUSE_LATE past its timeout means it was frozen (paused) meanwhile.
PAUSE_TICK, PAUSE_LATE = 0.25, 0.5
#: Bytes of entry stream sent per Y frame while snapshotting.
SNAP_FRAME = CHUNK
SNAP_KINDS = {"d": b"d"[0], "f": b"f"[0], "l": b"l"[0], "s": b"s"[0], "c": b"c"[0]}


#: fcntl's F_SETPIPE_SZ (Linux), and the size asked for: an unprivileged process may go to
#: /proc/sys/fs/pipe-max-size (1 MiB by default).
F_SETPIPE_SZ, PIPE_WIDE = 1031, 1 << 20


def widen_pipe(fd):
    """A snapshot is made while it is sent, a port's bytes are read while they are sent:
    with the default 64 KiB pipe to the engine each write waited for the engine to drain
    it, so reading and sending took turns; with 1 MiB they overlap. Not a pipe, or not
    allowed: nothing changes."""
    try:
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_WIDE)
    except OSError:
        pass


class SnapTooLarge(Exception):
    pass


def snapshot_entries(roots, files=None):
    """(kind, path, lstat) for each root and everything under it, parents first; or, given
    `files`, for those of them that are regular files (changes() reads what it compares in
    one request). Special files (FIFOs, sockets, devices) are skipped and listed; links are
    never followed."""
    skipped = []
    if files is not None:
        for path in files:
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                yield "f", path, st
        yield "skipped", skipped, None
        return
    for root in roots:
        stack = [root]
        while stack:
            path = stack.pop()
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode):
                yield "d", path, st
                with os.scandir(path) as it:
                    names = sorted((e.name for e in it), reverse=True)
                stack.extend(os.path.join(path, n) for n in names)
            elif stat.S_ISREG(st.st_mode):
                yield "f", path, st
            elif stat.S_ISLNK(st.st_mode):
                yield "l", path, st
            else:
                skipped.append(path)
    yield "skipped", skipped, None


def snapshot(send, cid, spec, state, cwd):
    """The S frame: stream the entries of spec["paths"] as Y frames, then the answer (A)."""
    widen_pipe(1)
    roots = [os.path.normpath(p) for p in spec.get("paths") or ["/workspace"]]
    limit = int(spec.get("max") or (256 << 20))
    contents = spec.get("contents", True)
    buf = bytearray()
    total = count = 0

    def put(kind, path, mode, mtime_ns, data, size=None):
        nonlocal total
        raw = os.fsencode(path)
        n = len(data) if size is None else size
        buf.extend(ENTRY.pack(SNAP_KINDS[kind], mode, n, mtime_ns, len(raw)))
        buf.extend(raw)
        buf.extend(data)
        total += len(raw) + len(data) + ENTRY.size
        flush()

    def flush():
        if total > limit:
            raise SnapTooLarge()
        if len(buf) >= SNAP_FRAME:
            send(BYTES, cid, bytes(buf))
            del buf[:]

    try:
        if state is not None:
            put("s", "", 0, 0, state)
        put("c", "", 0, 0, os.fsencode(cwd))
        skipped = []
        files = spec.get("files")
        if files is not None and not all(isinstance(p, str) and any(p.startswith(r + "/") for r in roots) for p in files):
            return {"errno": errno.EINVAL, "error": "files to read must lie under the snapshot's paths"}
        for kind, path, st in snapshot_entries(roots, files):
            if kind == "skipped":
                skipped = path
                break
            count += 1
            mode = st.st_mode & 0o7777
            if kind == "d":
                put("d", path, mode, st.st_mtime_ns, b"")
            elif kind == "l":
                put("l", path, 0o777, st.st_mtime_ns, os.fsencode(os.readlink(path)))
            elif not contents:
                put("f", path, mode, st.st_mtime_ns, b"", size=st.st_size)
            else:
                try:
                    fd = os.open(path, os.O_RDONLY | _FILE_FLAGS | os.O_NOFOLLOW)
                except OSError:
                    if files is not None:
                        continue  # changes(): not readable now, so counted as modified
                    raise
                try:
                    regular(fd, path)
                    if total + st.st_size > limit:
                        raise SnapTooLarge()
                    put("f", path, mode, st.st_mtime_ns, b"", size=st.st_size)
                    left = st.st_size
                    while left:  # exactly the size announced: a file changing meanwhile is an error
                        data = os.read(fd, min(left, 1 << 20))
                        if not data:
                            raise OSError(errno.EAGAIN, "it shrank while the snapshot was taken", path)
                        buf.extend(data)
                        left -= len(data)
                        total += len(data)
                        flush()
                finally:
                    os.close(fd)
        if buf:
            send(BYTES, cid, bytes(buf))
        return {"entries": count, "size": total, "skipped": skipped[:20], "skipped_count": len(skipped)}
    except SnapTooLarge:
        return {"errno": errno.EFBIG, "error": "over the snapshot limit", "too_large": total, "max": limit}
    except OSError as exc:
        answer = file_error(exc)
        answer["path"] = getattr(exc, "filename", None) or ""
        return answer


class Restore:
    """A T frame's restore: the entry stream arrives in Y frames; entries are created as they
    complete, file data is written as it comes (a big file never sits whole in memory).

    Nothing escapes the roots: every path must be normalised and under a root; a parent
    must be a directory this restore made (or a root itself, checked once to be no
    link); files are created O_EXCL|O_NOFOLLOW; symlinks are made last, so no entry is
    ever written through one; special files are never made."""

    def __init__(self, spec):
        self.roots = [os.path.normpath(p) for p in spec.get("paths") or ["/workspace"]]
        self.buf = bytearray()
        self.made = set()
        self.links = []
        self.dirs = []
        self.fd = None
        self.left = 0
        self.pending = None  # (path, mode, mtime_ns) of the file being written
        self.state = None
        self.cwd = None
        self.entries = 0
        self.error = None
        for root in self.roots:
            if os.path.realpath(root) != root or not os.path.isdir(root):
                self.error = {"errno": errno.EINVAL, "error": "cannot restore into %s: not a plain directory" % root}

    def inside(self, path):
        if os.path.normpath(path) != path or not path.startswith("/"):
            return False
        return any(path == r or path.startswith(r.rstrip("/") + "/") for r in self.roots)

    def parent_ok(self, path):
        parent = os.path.dirname(path)
        return parent in self.made or (parent in self.roots and path not in self.roots)

    def feed(self, data):
        """More of the entry stream (bytes or a view lent for this call only)."""
        if self.error:
            return
        try:
            if self.fd is not None and not self.buf:  # inside a file's data: written from the frame itself
                n = min(self.left, len(data))
                write_all(self.fd, data[:n])
                self.left -= n
                data = data[n:]
                if self.left == 0:
                    self.end_file()
            self.buf += data
            while True:
                if self.fd is not None:
                    if not self.buf:
                        return
                    with memoryview(self.buf) as view:
                        n = min(self.left, len(view))
                        write_all(self.fd, view[:n])
                    del self.buf[:n]
                    self.left -= n
                    if self.left == 0:
                        self.end_file()
                    continue
                if len(self.buf) < ENTRY.size:
                    return
                kind, mode, size, mtime_ns, plen = ENTRY.unpack_from(self.buf)
                kind = bytes([kind])
                if kind != b"f" and len(self.buf) < ENTRY.size + plen + size:
                    if size > STATE_MAX + 4096 and kind != b"f":
                        raise ValueError("an entry of %d bytes" % size)
                    return
                if kind == b"f" and len(self.buf) < ENTRY.size + plen:
                    return
                path = os.fsdecode(bytes(self.buf[ENTRY.size : ENTRY.size + plen]))
                del self.buf[: ENTRY.size + plen]
                self.entry(kind, path, mode, size, mtime_ns)
        except (OSError, ValueError) as exc:
            self.error = file_error(exc)
            self.error["path"] = getattr(exc, "filename", None) or ""
            self.close_file()

    def take(self, size):
        data = bytes(self.buf[:size])
        del self.buf[:size]
        return data

    def entry(self, kind, path, mode, size, mtime_ns):
        if kind in (b"s", b"c"):
            data = self.take(size)
            if kind == b"s":
                self.state = data
            else:
                self.cwd = os.fsdecode(data)
            return
        if not self.inside(path):
            raise ValueError("the entry %r lies outside %s" % (path, ", ".join(self.roots)))
        self.entries += 1
        mode &= 0o7777
        if kind == b"d":
            if path in self.roots:
                self.dirs.append((path, mode, mtime_ns))
                self.made.add(path)
                return
            if not self.parent_ok(path):
                raise ValueError("the entry %r comes before its directory" % path)
            os.mkdir(path, 0o700)
            self.made.add(path)
            self.dirs.append((path, mode, mtime_ns))
        elif kind == b"l":
            if not self.parent_ok(path):
                raise ValueError("the entry %r comes before its directory" % path)
            self.links.append((path, os.fsdecode(self.take(size)), mtime_ns))
        elif kind == b"f":
            if not self.parent_ok(path):
                raise ValueError("the entry %r comes before its directory" % path)
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            self.left = size
            self.pending = (path, mode, mtime_ns)
            if size == 0:
                self.end_file()
        else:
            raise ValueError("an entry of unknown kind %r" % kind)

    def end_file(self):
        path, mode, mtime_ns = self.pending
        fd, self.fd, self.pending = self.fd, None, None
        try:
            os.fchmod(fd, mode)
            os.utime(fd, ns=(mtime_ns, mtime_ns))
        finally:
            os.close(fd)

    def close_file(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def finish(self):
        """The empty Y: make the links, then set the directories' modes and times, deepest first."""
        if self.error is None and (self.fd is not None or self.buf):
            self.error = {"errno": errno.EIO, "error": "the snapshot's stream ended inside an entry"}
        if self.error is None:
            try:
                for path, target, mtime_ns in self.links:
                    os.symlink(target, path)
                    os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
                for path, mode, mtime_ns in sorted(self.dirs, key=lambda d: -d[0].count("/")):
                    try:
                        os.chmod(path, mode)
                        os.utime(path, ns=(mtime_ns, mtime_ns))
                    except PermissionError:
                        if path not in self.roots:  # a root the user does not own (/tmp) keeps its own
                            raise
            except OSError as exc:
                self.error = file_error(exc)
                self.error["path"] = getattr(exc, "filename", None) or ""
        self.close_file()
        return self.error or {"entries": self.entries}

# -- Handing an fd to the host (handoff.py) ------------------------------------------

#: Seconds a restore's socket from the host may stay silent before the restore is given up.
FILE_STREAM_TIMEOUT = 300


def handoff_target(name, token_hex):
    """(the host's socket path in HANDOFF_DIR, the token) from what the host asked. Raises ValueError."""
    if not isinstance(name, str) or "/" in name or name.startswith(".") or not name:
        raise ValueError("a handoff socket's name")
    return HANDOFF_DIR + "/" + name, bytes.fromhex(token_hex)


def hand_to_host(target, fd):
    """Pass fd to the host's socket (SCM_RIGHTS) with the token. True once sent; False when that
    cannot be done here (gVisor, a sandbox without the mount, a host gone): use the channel."""
    import _socket as m  # the C module: socket.py imports enum (+ms)

    path, token = target
    try:
        u = m.socket(m.AF_UNIX, m.SOCK_STREAM | m.SOCK_CLOEXEC)
    except OSError:
        return False
    try:
        u.settimeout(2.0)
        u.connect(path)
        u.sendmsg([token], [(m.SOL_SOCKET, m.SCM_RIGHTS, fd.to_bytes(4, sys.byteorder))])
        return True
    except OSError:
        return False
    finally:
        u.close()


# -- Ports: connections forwarded from the host (issue 25) -------------------------
#
# Why in the server: a sandbox has no network interface, only loopback. Each
# connection to a port the host exposes arrives as a stream on this channel and
# is connected here to 127.0.0.1:PORT, so it works in every image and runtime
# and the sandbox still needs no network. Credit (M/m) bounds what either side
# buffers to WINDOW per stream.

PORT_FRAMES = (PORT_OPEN, PORT_BYTES, PORT_END, PORT_CREDIT)
_ACK_AT = WINDOW // 4
#: Most bytes one read from a service takes (one j frame): a bulk download costs a loop
#: turn, a frame and a write per 256 KiB, not per 64 KiB.
PORT_READ = 4 * CHUNK


class PortStream:
    __slots__ = ("sid", "sock", "out", "credit", "connecting", "eof_in", "eof_out", "shut", "acked", "events",
                 "handoff")

    def __init__(self, sid, sock, handoff=None):
        self.sid, self.sock = sid, sock
        self.handoff = handoff  # (socket path, token): hand the connected socket to the host
        self.out = bytearray()  # host bytes not yet written to the service
        self.credit = WINDOW  # bytes we may still send the host
        self.connecting = True
        self.eof_in = self.eof_out = self.shut = False  # host said EOF / service said EOF / we shut its write side
        self.acked = 0  # written to the service, not yet credited back
        self.events = 0


class Ports:
    """The V/J/Z/M frames: one non-blocking loopback socket per stream, on the server's poller."""

    def __init__(self, sel, send, send_json):
        self.sel, self.send, self.send_json = sel, send, send_json
        self.streams = {}
        self.sock_mod = None

    def on_frame(self, kind, sid, payload):
        if kind == PORT_OPEN:
            self.open(sid, payload)
            return
        st = self.streams.get(sid)
        if st is None:
            return
        if kind == PORT_BYTES:
            if st.out or st.connecting:
                st.out += payload
            else:  # nothing queued: straight to the service, only what it does not take is kept
                try:
                    n = st.sock.send(payload)
                except BlockingIOError:
                    n = 0
                except OSError:
                    self.drop(st)
                    return
                st.acked += n
                if n < len(payload):
                    st.out += payload[n:]
            self.flush(st)
        elif kind == PORT_END:
            if payload:
                self.drop(st)
                return
            st.eof_in = True
            self.flush(st)
        elif kind == PORT_CREDIT and len(payload) == 4:
            st.credit += int.from_bytes(payload, "big")
            self.update(st)

    def open(self, sid, payload):
        if self.sock_mod is None:
            import _socket  # the C module: socket.py imports enum (+ms); only paid when a port is used

            self.sock_mod = _socket
            widen_pipe(1)  # a download's frames queue for the engine while we read on (see widen_pipe)
        m = self.sock_mod
        try:
            parts = bytes(payload).split()
            port = int(parts[0])
            if not 0 < port < 65536 or len(parts) not in (1, 3):
                raise ValueError
            handoff = None
            if len(parts) == 3:  # the host's socket (a name in HANDOFF_DIR) and this connection's token
                handoff = handoff_target(parts[1].decode("ascii"), parts[2].decode("ascii"))
        except (ValueError, IndexError, UnicodeDecodeError):
            self.send_json(PORT_OPENED, sid, {"error": "malformed port", "errno": errno.EINVAL})
            return
        try:
            sock = m.socket(m.AF_INET, m.SOCK_STREAM | m.SOCK_NONBLOCK | m.SOCK_CLOEXEC)
        except OSError as exc:
            self.send_json(PORT_OPENED, sid, file_error(exc))
            return
        err = sock.connect_ex(("127.0.0.1", port))
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self.send_json(PORT_OPENED, sid, {"error": os.strerror(err), "errno": err})
            return
        st = self.streams[sid] = PortStream(sid, sock, handoff)
        self.update(st)

    def on_event(self, st, ev):
        if self.streams.get(st.sid) is not st:
            return  # forgotten earlier in this same batch of events
        if st.connecting:
            err = st.sock.getsockopt(self.sock_mod.SOL_SOCKET, self.sock_mod.SO_ERROR)
            if err:
                self.send_json(PORT_OPENED, st.sid, {"error": os.strerror(err), "errno": err})
                self.forget(st)
                return
            st.connecting = False
            st.sock.setsockopt(self.sock_mod.IPPROTO_TCP, self.sock_mod.TCP_NODELAY, 1)
            if st.handoff is not None and self.hand_over(st):
                return
            self.send_json(PORT_OPENED, st.sid, {"ok": True})
        if ev & EVENT_WRITE or st.out:
            self.flush(st)
            if st.sid not in self.streams:
                return
        if ev & (EVENT_READ | select.EPOLLHUP | select.EPOLLERR) and st.credit > 0 and not st.eof_out:
            try:
                data = st.sock.recv(min(st.credit, PORT_READ))
            except BlockingIOError:
                data = None
            except OSError:
                self.drop(st)
                return
            if data:
                st.credit -= len(data)
                self.send(PORT_DATA, st.sid, data)
            elif data is not None:
                st.eof_out = True
                self.send(PORT_EOF, st.sid)
        self.update(st)

    def hand_over(self, st):
        """Pass the connected socket to the host and forget it: the bytes then go between the
        host and the service directly, off this channel. False when that cannot be done here
        (gVisor, a sandbox without the mount): the stream carries them."""
        if not hand_to_host(st.handoff, st.sock.fileno()):
            return False
        self.send_json(PORT_OPENED, st.sid, {"ok": True, "direct": True})
        self.forget(st)  # closes our copy: the host's keeps the connection
        return True

    def flush(self, st):
        if st.connecting:
            return
        while st.out:
            try:
                with memoryview(st.out) as view:
                    n = st.sock.send(view)
            except BlockingIOError:
                break
            except OSError:
                self.drop(st)
                return
            del st.out[:n]
            st.acked += n
        if st.acked >= _ACK_AT:  # not per write: a small request would cost the host a frame more
            self.send(PORT_ACK, st.sid, st.acked.to_bytes(4, "big"))
            st.acked = 0
        if st.eof_in and not st.out and not st.shut:
            st.shut = True
            try:
                st.sock.shutdown(self.sock_mod.SHUT_WR)
            except OSError:
                pass
        self.update(st)

    def update(self, st):
        """Both directions done: forget the stream; else watch what it is waiting for."""
        if st.sid not in self.streams:
            return
        if st.eof_out and st.shut:
            self.forget(st)
            return
        want = 0
        if st.connecting or st.out:
            want |= EVENT_WRITE
        if not st.connecting and st.credit > 0 and not st.eof_out:
            want |= EVENT_READ
        if want == st.events:
            return
        if not want:
            self.sel.unregister(st.sock)
        elif not st.events:
            self.sel.register(st.sock, want, ("port", st))
        else:
            self.sel.modify(st.sock, want, ("port", st))
        st.events = want

    def drop(self, st):
        """A reset (either side): tell the host, forget the stream."""
        if st.sid in self.streams:
            self.send(PORT_EOF, st.sid, b"x")
            self.forget(st)

    def forget(self, st):
        self.streams.pop(st.sid, None)
        if st.events:
            self.sel.unregister(st.sock)
            st.events = 0
        st.sock.close()


class EgressNotes:
    """The egress proxy's refusals, as the sandbox's relay reports them on a pipe (issue 25).

    Why a pipe from the relay: only the relay (which execs this server) sees the proxy's
    answers, and it writes each refusal there before the client gets its 403, so a
    command's refusals are all in the pipe when the command ends. A refusal belongs to
    every command that was running when it was made (by time: the relay and we share
    the monotonic clock). Read only when a command ends; a sandbox without an allowlist
    has no pipe and pays nothing.
    """

    KEEP = 256  # records held for the running commands, at most
    PER_COMMAND = 5  # notes a command's result carries, at most (distinct host:port)

    def __init__(self, fd):
        os.set_blocking(fd, False)
        os.set_inheritable(fd, False)  # commands never see it
        self.fd = fd
        self.partial = b""
        self.records = []  # (monotonic time, JSON text)

    @classmethod
    def from_env(cls):
        fd = os.environ.pop(EGRESS_NOTES_ENV, None)  # popped: commands inherit our environment
        try:
            return cls(int(fd)) if fd else None
        except (ValueError, OSError):
            return None

    def drain(self):
        while True:
            try:
                data = os.read(self.fd, CHUNK)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                break
            lines = (self.partial + data).split(b"\n")
            self.partial = lines.pop()[-4096:]
            for line in lines:
                t, _, record = line.partition(b"\t")
                try:
                    self.records.append((float(t), record.decode("ascii")))
                except ValueError:
                    pass
        del self.records[: -self.KEEP]

    @staticmethod
    def checked(record):
        """Only the fields the host reads, with their types: a process of the sandbox's user
        could write to the relay's pipe too (the worst it can do is a wrong note)."""
        strs = lambda v: [str(x)[:253] for x in v[:8]] if isinstance(v, list) else []  # noqa: E731
        return {"host": str(record["host"])[:253], "port": int(record["port"]), "reason": str(record.get("reason"))[:20],
                "allowed": strs(record.get("allowed")), "more": int(record.get("more") or 0),
                "addresses": strs(record.get("addresses"))}

    def since(self, started, oldest_running):
        """The refusals made since `started`, one per host:port (with a count); then forget
        those no running command (the oldest started at `oldest_running`) can claim."""
        self.drain()
        notes = {}
        extra = 0
        mine = [r for t, r in self.records if t >= started]
        if mine:
            import json  # only when there is something to report: ~7 ms we do not pay at start

            for text in mine:
                try:
                    note = self.checked(json.loads(text))
                except (ValueError, TypeError, KeyError, AttributeError):
                    continue
                key = "%s:%s" % (note["host"], note["port"])
                if key in notes:
                    notes[key]["count"] += 1
                elif len(notes) < self.PER_COMMAND:
                    notes[key] = dict(note, count=1)
                else:
                    extra += 1
        self.records = [(t, r) for t, r in self.records if oldest_running is not None and t >= oldest_running]
        out = list(notes.values())
        if extra and out:
            out[-1]["others"] = extra  # refusals of further hosts, not listed
        return out


class Server:
    def __init__(self):
        self.sel = Poller()
        self.cmds = {}
        self.inbuf = bytearray()
        self.cwd = self.home = os.getcwd()
        self.drains = set()  # pipes a finished command's background children still hold
        self.pids_hits = pids_limit_hits()
        self.states = {}  # state key -> the bash that restores it (issue 14)
        self.handles = {}  # handle -> background Command, running or finished (issue 14)
        self.restores = {}  # cid -> Restore in progress (issue 24)
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        self.sig_r = r
        signal.set_wakeup_fd(w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: self.shutdown())
        self.sel.register(0, EVENT_READ, ("ctl", None))
        self.sel.register(r, EVENT_READ, ("sig", None))
        self.files = FileOps(self.send, self.send_json)
        self.ports = Ports(self.sel, self.send, self.send_json)
        self.egress = EgressNotes.from_env()

    # -- output to the host -------------------------------------------------
    def send(self, kind, cid, payload=b""):
        if len(payload) < 16384:  # small: one buffer
            parts = [frame(kind, cid, payload)]
        else:  # bulk (a port's bytes, a snapshot): header and payload by one writev, not joined (a copy less)
            parts = [HEADER.pack(kind, cid, len(payload)), payload]
        while parts:
            try:
                n = os.writev(1, parts)
            except BlockingIOError:
                time.sleep(0.001)
                continue
            except OSError:
                self.shutdown()
            while parts and n >= len(parts[0]):
                n -= len(parts.pop(0))
            if n:
                parts[0] = memoryview(parts[0])[n:]

    def send_json(self, kind, cid, obj):
        self.send(kind, cid, to_json(obj).encode("ascii"))

    # -- control stream -----------------------------------------------------
    def on_control(self):
        try:
            data = os.read(0, 4 * CHUNK)  # forwarded ports move bulk bytes here: fewer reads
        except OSError:
            data = b""
        if not data:
            self.shutdown()
        inbuf = self.inbuf
        inbuf += data
        while len(inbuf) >= HEADER.size:
            kind, cid, size = HEADER.unpack_from(inbuf)
            end = HEADER.size + size
            if len(inbuf) < end:
                break
            with memoryview(inbuf) as view, view[HEADER.size : end] as part:
                if kind == BYTES and cid in self.restores:
                    self.on_snapshot_frame(kind, cid, part)  # lent: Restore copies only what it keeps
                    payload = None
                else:
                    payload = bytes(part)  # one copy, not a slice and then bytes()
            del inbuf[:end]
            if payload is not None:
                self.dispatch(kind, cid, payload)

    def dispatch(self, kind, cid, payload):
        if cid in self.restores or kind in (SNAPSHOT, RESTORE):
            self.on_snapshot_frame(kind, cid, payload)
            return
        if kind in FILE_FRAMES:
            self.files.on_frame(kind, cid, payload)
            return
        if kind in PORT_FRAMES:
            self.ports.on_frame(kind, cid, payload)
            return
        if kind == LOOK:
            self.send_json(LOOKED, cid, look(os.fsdecode(payload)))
            return
        if kind == RUN:
            try:
                spec = marshal.loads(payload)
            except (EOFError, ValueError, TypeError):
                spec = None
            if not isinstance(spec, dict) or not isinstance(spec.get("cmd"), str):
                self.send_json(FAILED, cid, {"error": "malformed run request"})
                return
            self.start(cid, spec)
            return
        if kind == PROC:
            self.on_process_op(cid, payload)
            return
        cmd = self.cmds.get(cid)
        if cmd is None:
            return
        if kind == STDIN:
            cmd.stdin_buf += payload
            self.want_stdin(cmd)
        elif kind == STDIN_EOF:
            cmd.stdin_eof = True
            self.want_stdin(cmd)
        elif kind == KILL:
            cmd.killed = True
            kill_tree(cmd.proc.pid, cmd.marker)

    def on_snapshot_frame(self, kind, cid, payload):
        """S (snapshot) and T + Y... (restore), issue 24."""
        if kind == BYTES and cid in self.restores:
            if payload:
                self.restores[cid].feed(payload)
                return
            self.send_json(ANSWER, cid, self.restored(self.restores.pop(cid)))
            return
        try:
            spec = marshal.loads(payload)
        except (EOFError, ValueError, TypeError):
            spec = None
        if not isinstance(spec, dict):
            self.send_json(FAILED, cid, {"error": "malformed snapshot request"})
            return
        if kind == SNAPSHOT:
            self.send_json(ANSWER, cid, snapshot(self.send, cid, spec, self.states.get("default"), self.cwd))
        elif kind == RESTORE:
            restore = Restore(spec)
            if spec.get("handoff") is not None:
                # The host asked for the stream off the channel: it is told which way it comes first.
                sock = self.restore_socket(spec["handoff"])
                self.send_json(ANSWER, cid, {"via": "stream" if sock is None else "socket"})
                if sock is not None:
                    self.send_json(ANSWER, cid, self.restored(restore, sock))
                    return
            widen_pipe(0)  # the stream comes in fewer, larger reads (see widen_pipe)
            self.restores[cid] = restore

    def restore_socket(self, handoff):
        """Our end of a socket pair whose other end the host now holds, to send the restore's
        stream on (not through the engine's copy of the attach stream); None: use the channel."""
        import _socket as m

        try:
            target = handoff_target(*handoff)
            ours, theirs = m.socketpair(m.AF_UNIX, m.SOCK_STREAM)
        except (OSError, TypeError, ValueError):
            return None
        try:
            if not hand_to_host(target, theirs.fileno()):
                ours.close()
                return None
        finally:
            theirs.close()
        return ours

    def restored(self, restore, sock=None):
        """The restore's answer once its stream has ended (read here from sock, until the host's
        end, when it came that way); the shell state and cwd it carried become the sandbox's.
        Blocks the server meanwhile: a restore is a fresh sandbox's first request, nothing else runs."""
        if sock is not None:
            buf = bytearray(1 << 20)
            try:
                sock.settimeout(FILE_STREAM_TIMEOUT)
                with memoryview(buf) as view:
                    while True:
                        n = sock.recv_into(buf)
                        if not n:
                            break
                        restore.feed(view[:n])
            except OSError as exc:
                restore.error = restore.error or file_error(exc)
            finally:
                sock.close()
        answer = restore.finish()
        if "entries" in answer:
            if restore.state is not None:
                self.states["default"] = restore.state
            if restore.cwd:
                self.cwd = restore.cwd
        return answer

    def skip_frozen(self, late):
        """A wait that ended `late` seconds after its timeout: the sandbox was paused (the
        engine's freezer stops us, the monotonic clock goes on). Frozen time is not a
        command's time: every deadline and idle timer moves on by it (issue 24)."""
        if late < PAUSE_LATE:
            return
        for cmd in self.cmds.values():
            if cmd.deadline is not None:
                cmd.deadline += late
            cmd.last_output += late

    def start(self, cid, spec):
        note = b""
        hits = pids_limit_hits()
        if near_pids_limit() or (hits or 0) > (self.pids_hits or 0):
            # The limit was hit since the last command started (a fork bomb, even one
            # that is between bursts right now) or is about to be.
            note = self.reclaim()
            if not note and (hits or 0) > (self.pids_hits or 0):
                # A bash fork bomb often dies out by itself at the limit: still say it was met.
                note = (b"[pygent] the sandbox reached its process limit since the last command started "
                        b"(forks failed); nothing earlier commands started is left running\n")
            hits = pids_limit_hits()
        self.pids_hits = hits
        if not spec.get("cwd") and self.cwd != self.home and not os.path.isdir(self.cwd):
            # The directory the last command ended in was removed: a shell would stay in
            # a deleted directory; we start the next command where sandboxes start.
            note += ("[pygent] the working directory %s is gone: running in %s\n" % (self.cwd, self.home)).encode(
                "utf-8", "replace"
            )
            self.cwd = self.home
        try:
            try:
                if spec.get("background"):
                    self.make_room_for_handle()
                cmd = Command(cid, spec, self.cwd, self.states.get(spec.get("state")))
            except BlockingIOError:  # fork failed (EAGAIN): the process limit is reached
                note = self.reclaim()
                self.pids_hits = pids_limit_hits()
                cmd = self.spawn_after_reclaim(cid, spec)
        except Exception as exc:  # bad cwd, bash missing, no memory: a result, as a shell reports it
            if spec.get("background"):  # the host waits for B or F: no result to give
                self.send_json(FAILED, cid, {"error": "%s: %s" % (type(exc).__name__, exc)})
            else:
                self.cannot_start(cid, exc)
            return
        self.cmds[cid] = cmd
        if note:
            self.keep("err", cmd, note)
        self.sel.register(cmd.proc.stdout, EVENT_READ, ("out", cmd))
        self.sel.register(cmd.proc.stderr, EVENT_READ, ("err", cmd))
        self.sel.register(cmd.cwd_r, EVENT_READ, ("cwd", cmd))
        if cmd.background:
            self.handles[str(cid)] = cmd
            self.send_json(STARTED, cid, {"handle": str(cid), "pid": cmd.proc.pid})

    def spawn_after_reclaim(self, cid, spec):
        """The command, forked again after a reclaim. Killed processes hold their pids until
        init has reaped them, and under load (gVisor's RLIMIT_NPROC too) that outlasted
        freeze_and_kill's wait: `echo` after a fork bomb failed 1 time in 25 with EAGAIN.
        So the fork is retried for up to FORK_RETRY s, or the command's own timeout if that
        is shorter. Raises BlockingIOError after that."""
        deadline = time.monotonic() + min(FORK_RETRY, spec.get("timeout") or FORK_RETRY)
        while True:
            try:
                return Command(cid, spec, self.cwd, self.states.get(spec.get("state")))
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.02)

    def cannot_start(self, cid, exc):
        """A command that could not start is its result, not a broken sandbox:
        127 when bash itself is missing, 126 otherwise (bad cwd, no fork), with the reason."""
        where = getattr(exc, "filename", None)
        missing = isinstance(exc, FileNotFoundError) and where == BASH
        if where and getattr(exc, "strerror", None):
            reason = "%s%s: %s" % ("" if where == BASH else "working directory ", where, exc.strerror)
        else:
            reason = "%s: %s" % (type(exc).__name__, exc)
        self.send(ERR, cid, ("pygent: cannot start the command: %s\n" % reason).encode("utf-8", "replace"))
        self.send_done(cid, 127 if missing else 126, 0.0)

    def send_done(self, cid, exit_code, duration, out_omitted=0, err_omitted=0, timed_out=False, oom_killed=False, **more):
        """The D frame that ends a command (protocol.Done)."""
        done = {
            "exit_code": exit_code,
            "timed_out": timed_out,
            "duration": duration,
            "cwd": self.cwd,
            "stdout_truncated": out_omitted,
            "stderr_truncated": err_omitted,
            "oom_killed": oom_killed,
        }
        done.update(more)
        self.send_json(DONE, cid, done)

    def reclaim(self):
        """Near the pids limit (a fork bomb, runaway background jobs): kill every process
        that earlier, finished commands left running, so the sandbox stays usable.
        Background jobs are otherwise left alone. Returns a note for the next command."""
        running = [(c.proc.pid, c.marker) for c in self.cmds.values()]
        killed = freeze_and_kill(
            lambda pid, st: not any(leader in st or has_marker(pid, marker) for leader, marker in running)
        )
        if not killed:
            return b""
        return (
            "[pygent] the sandbox was at its process limit: killed %d processes that earlier commands left running\n"
            % killed
        ).encode()

    def want_stdin(self, cmd):
        pipe = cmd.proc.stdin
        if pipe is None or pipe.closed:
            return
        try:
            self.sel.register(pipe, EVENT_WRITE, ("in", cmd))
        except KeyError:
            pass

    def on_stdin_writable(self, cmd):
        pipe = cmd.proc.stdin
        try:
            if cmd.stdin_buf:
                n = os.write(pipe.fileno(), cmd.stdin_buf[:CHUNK])
                del cmd.stdin_buf[:n]
        except BlockingIOError:
            return
        except OSError:  # the command closed its stdin: drop the rest
            cmd.stdin_buf.clear()
            cmd.stdin_eof = True
        if not cmd.stdin_buf:
            self.sel.unregister(pipe)
            if cmd.stdin_eof:
                pipe.close()

    # -- command output -----------------------------------------------------
    def read_pipe(self, pipe):
        """One chunk from a pipe; None if nothing is ready; b"" at EOF (then it is closed)."""
        try:
            data = os.read(pipe.fileno(), CHUNK)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        if not data:
            self.sel.unregister(pipe)
            pipe.close()
            self.drains.discard(pipe)
        return data

    def on_output(self, which, cmd, pipe):
        data = self.read_pipe(pipe)
        if data:
            self.keep(which, cmd, data)

    def keep(self, which, cmd, data):
        cmd.last_output = time.monotonic()
        if cmd.ring is not None:
            cmd.ring.add(data)
            return
        if cmd.live and cmd.live_left > 0:
            chunk = data[: cmd.live_left]
            cmd.live_left -= len(chunk)
            self.send(LIVE_OUT if which == "out" else LIVE_ERR, cmd.cid, chunk)
        if cmd.stream:
            self.send(OUT if which == "out" else ERR, cmd.cid, data)
        else:
            (cmd.out if which == "out" else cmd.err).add(data)

    def on_cwd(self, cmd):
        try:
            data = os.read(cmd.cwd_r, CHUNK)
        except OSError:
            data = b""
        if data:
            cmd.take_dump(data)
        else:
            self.sel.unregister(cmd.cwd_r)

    # -- completion ---------------------------------------------------------
    def reap(self):
        for cmd in list(self.cmds.values()):
            try:
                # wait4, not waitpid: the rusage is the command's cost (issue 26), its bash plus every
                # descendant that was waited for (bash waits for its children, they for theirs).
                pid, status, usage = os.wait4(cmd.proc.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status, usage = cmd.proc.pid, 0, None
            if pid:
                code = os.waitstatus_to_exitcode(status)
                cmd.proc.returncode = code
                cmd.usage = usage
                self.finish(cmd, 128 - code if code < 0 else code)

    def finish(self, cmd, code):
        """The command's main process ended: collect what is buffered and report."""
        del self.cmds[cmd.cid]
        if cmd.background:
            self.finish_background(cmd, code)
            return
        for which, pipe in (("out", cmd.proc.stdout), ("err", cmd.proc.stderr)):
            while not pipe.closed:
                try:
                    data = os.read(pipe.fileno(), CHUNK)
                except BlockingIOError:
                    # A background child still holds the pipe: drain it, never wait on it.
                    self.sel.modify(pipe, EVENT_READ, ("drain", None))
                    self.drains.add(pipe)
                    break
                except OSError:
                    data = b""
                if not data:
                    self.sel.unregister(pipe)
                    pipe.close()
                    break
                self.keep(which, cmd, data)
        self.close_stdin(cmd)
        cmd.drain_dump()
        try:
            self.sel.unregister(cmd.cwd_r)
        except KeyError:
            pass
        os.close(cmd.cwd_r)
        state = None
        if cmd.state_key is not None:
            state, cwd = self.keep_state(cmd)
        else:
            cwd = cmd.cwd_bytes.decode("utf-8", "replace") or None
        if cwd and not cmd.timed_out:
            self.cwd = cwd
        oom_after = oom_kills()
        oom = code == 137 and not cmd.killed and not cmd.timed_out and (
            cmd.oom_before is not None and oom_after is not None and oom_after > cmd.oom_before
        )
        if not cmd.stream:
            self.send(OUT, cmd.cid, cmd.out.value())
            self.send(ERR, cmd.cid, cmd.err.value())
        more_done = cost(cmd.usage, cmd.tree_peak)
        if self.egress is not None:
            running = [c.started for c in self.cmds.values()]
            refused = self.egress.since(cmd.started, min(running) if running else None)
            if refused:
                more_done["egress_refused"] = refused
        self.send_done(cmd.cid, 124 if cmd.timed_out else code, time.monotonic() - cmd.started,
                       cmd.out.omitted, cmd.err.omitted, timed_out=cmd.timed_out, oom_killed=oom, state=state,
                       **more_done)

    def close_stdin(self, cmd):
        if cmd.proc.stdin is not None and not cmd.proc.stdin.closed:
            try:
                self.sel.unregister(cmd.proc.stdin)
            except KeyError:
                pass
            cmd.proc.stdin.close()

    def on_drain(self, pipe):
        self.read_pipe(pipe)  # a background child's output after its command ended: discarded

    def check_deadlines(self):
        now = time.monotonic()
        for cmd in list(self.cmds.values()):
            if cmd.deadline is not None and now >= cmd.deadline and not cmd.timed_out:
                cmd.timed_out = True
                kill_tree(cmd.proc.pid, cmd.marker)
            elif cmd.idle is not None and not cmd.background and now - cmd.last_output >= cmd.idle:
                self.to_background(cmd)

    def sample_memory(self):
        """Add a sample of each due foreground command's tree memory to its peak (see `cost`)."""
        now = time.monotonic()
        due = {c.proc.pid: c for c in self.cmds.values() if not c.background and now >= c.next_sample}
        if not due:
            return
        for pid, rss in tree_rss(due).items():
            cmd = due[pid]
            cmd.tree_peak = max(cmd.tree_peak, rss)
            step = min(SAMPLE_MAX, max(SAMPLE_FIRST, (now - cmd.started) / SAMPLE_SHARE))
            cmd.next_sample = now + step

    def next_timeout(self):
        deadlines = [c.deadline for c in self.cmds.values() if c.deadline is not None and not c.timed_out]
        deadlines += [c.next_sample for c in self.cmds.values() if not c.background]
        deadlines += [c.last_output + c.idle for c in self.cmds.values() if c.idle is not None and not c.background]
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    # -- shell state and background commands (issue 14) --------------------
    def keep_state(self, cmd):
        """Keep a state command's dump as its key's state if it is whole; (what happened, its cwd).

        Not kept when the command timed out, was killed or went to the background
        (the state from before it stays), when the dump is missing (exec, a
        replaced EXIT trap) or incomplete, or when it is over the cap.
        """
        data = cmd.cwd_bytes
        if cmd.timed_out or cmd.killed:
            return "kept: the command was killed", None
        if cmd.dump_size > cmd.state_max:
            return too_large(cmd.dump_size, cmd.state_max), None
        sections = parse_state_dump(data, cmd.nonce)
        if sections is None:
            return "kept: the command left no state (exec, or its own EXIT trap)", None
        script = state_script(sections)
        if len(script) > cmd.state_max:
            return too_large(len(script), cmd.state_max), None
        self.states[cmd.state_key] = script
        return "saved", sections["cwd"].rstrip(b"\n").decode("utf-8", "replace") or None

    def to_background(self, cmd):
        """idle_timeout: report what the command printed so far and keep it running under a handle."""
        self.make_room_for_handle()
        self.send(OUT, cmd.cid, cmd.out.value())
        self.send(ERR, cmd.cid, cmd.err.value())
        cmd.background = True
        cmd.ring = OutputRing(RING_CAP)
        cmd.deadline = None
        self.handles[str(cmd.cid)] = cmd
        self.send_done(cmd.cid, -1, time.monotonic() - cmd.started, cmd.out.omitted, cmd.err.omitted,
                       handle=str(cmd.cid),
                       state="kept: the command went on in the background" if cmd.state_key is not None else None)

    def finish_background(self, cmd, code):
        """A background command's main process ended: keep its code; its pipes are read to EOF."""
        cmd.returncode = 124 if cmd.timed_out else code
        cmd.finished_at = time.monotonic()
        self.close_stdin(cmd)
        try:
            self.sel.unregister(cmd.cwd_r)
        except KeyError:
            pass
        os.close(cmd.cwd_r)

    def make_room_for_handle(self):
        """Forget the oldest finished handles past MAX_HANDLES; raise when all are running."""
        while len(self.handles) >= MAX_HANDLES:
            done = [c for c in self.handles.values() if c.returncode is not None]
            if not done:
                raise OSError("%d background commands are running: stop some (process_kill)" % MAX_HANDLES)
            del self.handles[str(min(done, key=lambda c: c.finished_at).cid)]

    def on_process_op(self, cid, payload):
        """A P frame: one operation on a background command; the answer is a Q frame (JSON)."""
        try:
            req = marshal.loads(payload)
            op = req["op"]
        except (EOFError, ValueError, TypeError, KeyError):
            self.send_json(PROC_REPLY, cid, {"error": "malformed process request"})
            return
        if op == "list":
            self.send_json(PROC_REPLY, cid, {"processes": [self.status(c) for c in self.handles.values()]})
            return
        cmd = self.handles.get(str(req.get("handle")))
        if cmd is None:
            known = ", ".join(self.handles) or "none"
            self.send_json(PROC_REPLY, cid, {"error": "no background command %r (handles: %s)" % (req.get("handle"), known)})
            return
        if op == "output":
            data, lost, offset = cmd.ring.since(req.get("since") or 0, int(req.get("max") or 16000))
            reply = dict(self.status(cmd), output=data.decode("utf-8", "replace"), lost=lost, offset=offset)
        elif op == "input":
            if cmd.returncode is not None or cmd.proc.stdin is None or cmd.proc.stdin.closed:
                reply = dict(self.status(cmd), error="its input is closed")
            else:
                cmd.stdin_buf += req.get("data") or b""
                cmd.stdin_eof = bool(req.get("eof"))
                self.want_stdin(cmd)
                reply = self.status(cmd)
        elif op == "kill":
            if cmd.returncode is None:
                cmd.killed = True
                kill_tree(cmd.proc.pid, cmd.marker)
            reply = self.status(cmd)
        else:
            reply = self.status(cmd)
        self.send_json(PROC_REPLY, cid, reply)

    def status(self, cmd):
        end = cmd.finished_at if cmd.finished_at is not None else time.monotonic()
        return {
            "handle": str(cmd.cid),
            "cmd": cmd.cmdline[:200],
            "running": cmd.returncode is None,
            "exit_code": cmd.returncode,
            "killed": cmd.killed,
            "pid": cmd.proc.pid,
            "seconds": round(end - cmd.started, 3),
            "output_bytes": cmd.ring.total,
        }

    def shutdown(self):
        for cmd in list(self.cmds.values()):
            kill_tree(cmd.proc.pid, cmd.marker)
        os._exit(0)

    def serve(self):
        self.send_json(HELLO, 0, {"protocol": PROTOCOL, "pid": os.getpid(), "cwd": self.cwd})
        last = time.monotonic()
        while True:
            timeout = self.next_timeout()
            if timeout is not None:
                timeout = min(timeout, PAUSE_TICK)
            ready = self.sel.select(timeout)
            self.handle_ready(ready)
            now = time.monotonic()
            if timeout is not None:
                # The whole turn, not only the select: a freeze can hit while events are being
                # handled (CI met that), and on thawing what happened meanwhile (a child's
                # SIGCHLD) is often ready at once. Either way frozen time must not count.
                self.skip_frozen(now - last - timeout)
            last = now
            self.check_deadlines()
            self.sample_memory()
            self.reap()

    def handle_ready(self, ready):
        """Hand each ready selector key to its handler."""
        for key, ev in ready:
            kind, cmd = key.data
            if kind == "port":
                self.ports.on_event(cmd, ev)
            elif kind == "ctl":
                self.on_control()
            elif kind == "sig":
                try:
                    while os.read(self.sig_r, 512):
                        pass
                except OSError:
                    pass
            elif kind in ("out", "err"):
                self.on_output(kind, cmd, key.fileobj)
            elif kind == "in":
                self.on_stdin_writable(cmd)
            elif kind == "cwd":
                self.on_cwd(cmd)
            elif kind == "drain":
                self.on_drain(key.fileobj)


def bound_processes():
    """RLIMIT_NPROC from NPROC_ENV, set once before any command (they inherit it; without a
    capability none may raise it). Here and not in the create body's Ulimits: Podman's
    compatible API ignores those (a rootless Podman sandbox got 32768 whatever it asked)."""
    global NPROC_LIMIT
    limit = os.environ.pop(NPROC_ENV, "")  # popped: commands inherit our environment
    if limit.isdigit():
        import resource

        resource.setrlimit(resource.RLIMIT_NPROC, (int(limit), int(limit)))
        NPROC_LIMIT = int(limit)


if __name__ == "__main__":
    bound_processes()
    os.set_blocking(0, False)
    sys.stdin = sys.stdout = None  # only raw fds 0/1 carry frames
    Server().serve()
