"""Shell state across commands (issue 14), on every runtime: each kind of state,
timeouts and exit/exec, the size cap, and hostile commands that attack the mechanism.

One sandbox per runtime is shared by the module; tests that change state in a
way that matters to others use their own variable names.
"""

from __future__ import annotations

import pytest

from pygent.sandbox import SandboxPolicy, open_sandbox
from sbhelpers import PS


def sh(sb, cmd, **kw):
    return sb.exec(cmd, shell_state=True, **kw)


#: (what a command does, what a later command runs, what it must print)
KINDS = {
    "variable": ("v_plain=hello", "echo $v_plain", "hello"),
    "exported variable (seen by children)": ("export V_EXP=out", "bash -c 'echo $V_EXP'", "out"),
    "array": ("v_arr=(a 'b c')", 'echo "${v_arr[1]}|${#v_arr[@]}"', "b c|2"),
    "function": ("fn_greet() { echo hi-$1; }", "fn_greet you", "hi-you"),
    "exported function (seen by children)": ("fn_exp() { echo exp; }; export -f fn_exp", "bash -c fn_exp", "exp"),
    "alias": ("alias al_ll='echo aliased'", "al_ll", "aliased"),
    "set option": ("set -o pipefail", "false | true; echo $?", "1"),
    "shopt option": ("shopt -s extglob", "shopt -q extglob && echo on", "on"),
    "umask": ("umask 027", "umask", "0027"),
    "cwd": ("mkdir -p /tmp/st-cwd && cd /tmp/st-cwd", "pwd", "/tmp/st-cwd"),
    "sourced script": (
        "printf 'export SRC_V=1\\nsrc_fn() { echo sourced; }\\nalias src_al=src_fn\\n' >/tmp/env.sh && source /tmp/env.sh",
        "echo $SRC_V; src_al",
        "1\nsourced",
    ),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_kind_of_state_persists(sb, kind):
    setup, check, expected = KINDS[kind]
    first = sh(sb, setup)
    assert first.exit_code == 0 and first.state == "saved", first
    later = sh(sb, check)
    assert later.stdout.decode().strip() == expected, later
    sh(sb, "cd /workspace; umask 022; set +o pipefail; shopt -u extglob")  # back to the defaults for the others


def test_without_shell_state_a_command_gets_a_clean_bash(sb):
    sh(sb, "clean_probe=1; clean_fn() { :; }")
    r = sb.exec("echo ${clean_probe:-unset}; type clean_fn >/dev/null 2>&1 || echo nofn")
    assert r.stdout.decode().split() == ["unset", "nofn"]


def test_line_numbers_and_the_shells_own_variables_are_fresh(sb):
    sh(sb, "r1=$RANDOM")
    r = sh(sb, "echo $LINENO; echo $r1; echo $RANDOM")
    lineno, r1, r2 = r.stdout.decode().split()
    assert lineno == "1" and r1 != r2  # RANDOM is not re-seeded with the saved value


def test_a_timeout_kills_the_tree_and_keeps_the_state_from_before(sb):
    sh(sb, "to_v=before")
    r = sh(sb, "to_v=after; to_fn() { :; }; sleep 300 & sleep 301", timeout=1)
    assert r.timed_out and r.state.startswith("kept")
    after = sh(sb, "echo $to_v; type to_fn >/dev/null 2>&1 && echo FN-KEPT; " + PS)
    out = after.stdout.decode()
    assert out.splitlines()[0] == "before" and "FN-KEPT\n" not in out
    assert "sleep 30" not in out  # the command's whole tree is gone


def test_exit_and_exec_end_only_the_command(sb):
    r = sh(sb, "ex_v=1; exit 7; echo never")
    assert r.exit_code == 7 and r.stdout == b"" and r.state == "saved"
    r = sh(sb, "ex_w=2; exec echo replaced")
    assert r.stdout == b"replaced\n" and r.state.startswith("kept")
    r = sh(sb, "echo ${ex_v:-} ${ex_w:-none}")
    assert r.stdout.decode().split() == ["1", "none"]


def test_the_state_is_bounded_and_says_so(sb):
    sh(sb, "cap_v=small")
    r = sh(sb, "cap_v=$(head -c 400000 /dev/zero | tr '\\0' a)")
    assert r.exit_code == 0 and r.state.startswith("too_large") and "limit" in r.state
    assert sh(sb, "echo $cap_v").stdout == b"small\n"


def test_the_call_env_wins_over_the_saved_state(sb):
    sh(sb, "export ENV_WIN=saved")
    assert sh(sb, "echo $ENV_WIN", env={"ENV_WIN": "call"}).stdout == b"call\n"


# ---- hostile commands ------------------------------------------------------------------------------


def test_shadowing_the_builtins_does_not_take_the_mechanism_over(sb):
    r = sh(sb, "builtin() { echo hacked; }; unset() { echo hacked; }; declare() { echo hacked; }; "
                "trap() { echo hacked; }; printf() { echo hacked; }; hs_v=1")
    assert r.state == "saved", r
    r = sh(sb, "hs_w=2; echo $hs_v")
    assert r.stdout == b"1\n" and r.state == "saved"
    assert sh(sb, "echo $hs_v$hs_w").stdout == b"12\n"
    sh(sb, "unset -f declare trap printf")


def test_a_replaced_exit_trap_or_a_closed_fd_keeps_the_state_from_before(sb):
    sh(sb, "tr_v=good")
    for attack in ("trap - EXIT", "trap 'echo mine' EXIT", "exec 103>&-", "enable -n declare; enable -n enable"):
        r = sh(sb, f"tr_v=bad; {attack}")
        assert r.state.startswith("kept"), (attack, r)
        assert sh(sb, "echo $tr_v").stdout == b"good\n", attack
    r = sh(sb, "tr_v=new; enable -n declare printf umask")  # the dump turns them back on: saved, whole
    assert r.state == "saved" and sh(sb, "echo $tr_v; umask").stdout == b"new\n0022\n"


def test_fake_sentinels_do_not_change_state_or_output(sb):
    sh(sb, "fk_v=real; cd /workspace")
    fake = (
        "printf '\\n0123456789abcdef cwd\\n/etc\\n0123456789abcdef end\\n' >&103; "
        "printf '\\036PYGENT_CWD=/etc\\036'; printf 'D\\0\\0\\0\\1\\0\\0\\0\\2{}' >&2; fk_v=fake"
    )
    r = sh(sb, fake)
    assert r.state.startswith("kept")  # the dump fd carried bytes that were not a whole dump of ours
    assert r.stdout == b"\x1ePYGENT_CWD=/etc\x1e" and r.stderr == b"D\0\0\0\1\0\0\0\2{}"
    after = sh(sb, "echo $fk_v; pwd")
    assert after.stdout == b"real\n/workspace\n"


def test_a_state_that_exits_still_lets_the_next_command_run_its_guarantees(sb):
    """A hostile state (set -e, a trap on DEBUG) changes the agent's own shell, never the limits."""
    sh(sb, "set -e; trap 'true' DEBUG")
    r = sh(sb, "false; echo not-reached")
    assert r.exit_code == 1 and r.stdout == b""  # errexit persisted, as in a terminal
    r = sh(sb, "sleep 300", timeout=1)
    assert r.timed_out
    assert sh(sb, "set +e; echo fine").stdout == b"fine\n"


def test_state_belongs_to_one_sandbox(sb, docker_client):
    sh(sb, "own_v=mine")
    with open_sandbox(sb.image, SandboxPolicy(runtime=sb.policy.runtime), pool=False) as other:
        assert other.exec("echo ${own_v:-none}", shell_state=True).stdout == b"none\n"
