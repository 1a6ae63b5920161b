"""Tools: the registry, bad tool calls (never fatal), what `bash` returns, file tools in the sandbox."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from pygent import Agent, Runtime, register_tool, remove_tool, reset_tools, tool
from pygent.agent import tools as registry
from pygent.errors import SandboxError, ToolError
from pygent.sandbox import default_policy
from support.scripted import Script, call, say

BUILTINS = {"bash", "write_file", "read_file", "stop", "ask_user", "delegate_task", "task_status",
            "list_tasks", "cancel_task", "wait_tasks", "collect_file",
            "process_output", "process_status", "process_input", "process_kill", "process_list"}


@pytest.fixture(scope="module")
def rt() -> Iterator[Runtime]:
    """One runtime (one sandbox) for the output-format tests."""
    runtime = Runtime()
    yield runtime
    runtime.cleanup()


def names() -> set[str]:
    return {s["function"]["name"] for s in registry.schemas()}


# ---- the registry -------------------------------------------------------------------------


def test_builtins_are_registered():
    assert set(registry.TOOLS) == BUILTINS == names()


def test_register_tool_and_the_model_calls_it(agents):
    def greet(rt, name: str, times: int = 1) -> str:
        assert isinstance(rt, Runtime)
        return " ".join([f"hello {name}"] * times)

    register_tool("greet", "Greet someone.", {
        "type": "object",
        "properties": {"name": {"type": "string"}, "times": {"type": "integer", "minimum": 1}},
        "required": ["name"],
    }, greet)
    assert "greet" in names()
    model = Script(say(call("greet", {"name": "ada", "times": 2})), say(call("stop")))
    ag = Agent(model=model)
    agents.append(ag)
    assert "greet" in ag.system_msg
    result = ag.run_until_stop("go")
    assert result.reason == "stop"
    assert ag.history[3] == {"role": "tool", "tool_call_id": "c1", "content": "hello ada hello ada"}
    assert not ag.runtime.started  # a tool that does not touch the sandbox starts none


def test_tool_decorator_and_non_string_results_are_json():
    @tool("facts", "Some facts.", {"type": "object", "properties": {}})
    def facts(rt):
        return {"n": 3, "ok": True}

    assert facts(None) == {"n": 3, "ok": True}  # the decorator returns the function
    assert registry.execute_tool(call("facts"), None) == '{"n": 3, "ok": true}'


def test_duplicate_bad_name_and_bad_schema_are_refused():
    with pytest.raises(ToolError, match="already registered"):
        register_tool("bash", "again", {"type": "object"}, lambda rt: "")
    with pytest.raises(ToolError, match="must be 1-64"):
        register_tool("bad name!", "x", {"type": "object"}, lambda rt: "")
    with pytest.raises(ToolError, match="invalid parameters schema"):
        register_tool("weird", "x", {"type": "no-such-type"}, lambda rt: "")
    assert "weird" not in registry.TOOLS


def test_remove_tool_and_reset_tools():
    register_tool("temp", "x", {"type": "object"}, lambda rt: "t")
    remove_tool("temp")
    assert "temp" not in names()
    with pytest.raises(ToolError, match="not registered"):
        remove_tool("temp")
    remove_tool("bash")
    assert "bash" not in names()
    assert registry.execute_tool(call("bash", {"cmd": "true"}), None).startswith("error: unknown tool 'bash'")
    register_tool("extra", "x", {"type": "object"}, lambda rt: "e")
    reset_tools()
    assert names() == BUILTINS == set(registry.TOOLS)
    # a tool removed and registered again validates against its new schema
    remove_tool("stop")
    register_tool("stop", "stop", {"type": "object", "properties": {"why": {"type": "string"}}, "required": ["why"]},
                  lambda rt, why: f"bye: {why}")
    assert registry.execute_tool(call("stop", {}), None).startswith("error: invalid arguments for stop")
    assert registry.execute_tool(call("stop", {"why": "done"}), None) == "bye: done"


# ---- bad calls never stop the loop ------------------------------------------------------------


def _raising_tool() -> None:
    @tool("explode", "Always fails.", {"type": "object", "properties": {}})
    def explode(rt):
        raise RuntimeError("kaboom")


BAD_CALLS = {
    "malformed json": ("bash", '{"cmd": "echo', "error: arguments of bash are not valid JSON"),
    "not an object": ("bash", "[1, 2]", "error: arguments of bash must be a JSON object, got list"),
    "unknown tool": ("no_such_tool", "{}", "error: unknown tool 'no_such_tool'; available tools: bash"),
    "missing required": ("bash", "{}", "error: invalid arguments for bash: arguments: 'cmd' is a required property"),
    "unexpected arg": ("bash", '{"cmd": "true", "sudo": true}', "error: invalid arguments for bash: arguments: Additional properties are not allowed ('sudo' was unexpected)"),
    "wrong type": ("bash", '{"cmd": 42}', "error: invalid arguments for bash: cmd: 42 is not of type 'string'"),
    "bad value": ("bash", '{"cmd": "true", "timeout": -1}', "error: invalid arguments for bash: timeout: -1 is less than or equal to the minimum of 0"),
    "huge arguments": ("bash", json.dumps({"cmd": "echo " + "a" * (2 << 20)}), "error: arguments of bash are larger than 1048576 bytes"),
    "tool raises": ("explode", "{}", "error: explode raised RuntimeError: kaboom"),
    "read missing file": ("read_file", '{"path": "nope.txt"}', "error: read_file raised FileNotFoundError"),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_a_bad_tool_call_becomes_an_error_result_and_the_loop_goes_on(case, agents):
    _raising_tool()
    name, raw, expected = BAD_CALLS[case]
    model = Script(say(call(name, raw, id="bad")), say(call("bash", {"cmd": "echo still-alive"}, id="ok")), say(call("stop")))
    ag = Agent(model=model)
    agents.append(ag)
    result = ag.run_until_stop("go")
    assert (result.reason, result.steps) == ("stop", 3)
    bad = next(m for m in ag.history if m.get("tool_call_id") == "bad")
    assert bad["content"].startswith(expected), bad["content"][:300]
    assert len(bad["content"]) < 5000  # the error does not echo huge arguments back
    assert model.seen[1][-1] == bad  # the model read the error and went on
    ok = next(m for m in ag.history if m.get("tool_call_id") == "ok")
    assert ok["content"] == "exit code: 0\nstdout:\nstill-alive"


def test_a_malformed_tool_call_object_is_reported():
    class NoFunction:
        id = "x"

    assert registry.execute_tool(NoFunction(), None) == "error: malformed tool call (no function name)"


# ---- what bash returns ------------------------------------------------------------------------


def test_bash_output_has_exit_code_and_sections(rt):
    assert rt.bash("echo out; echo err >&2; exit 3") == "exit code: 3\nstdout:\nout\nstderr:\nerr"
    assert rt.bash("echo only-err >&2") == "exit code: 0\nstderr:\nonly-err"
    assert rt.bash("printf no-newline") == "exit code: 0\nstdout:\nno-newline"
    assert rt.bash("true") == "exit code: 0\n(no output)"
    assert rt.bash("false") == "exit code: 1\n(no output)"


def test_bash_output_is_cleaned(rt):
    assert rt.bash(r"printf '\033[1;31mred\033[0m plain \033]0;title\007done\n'") == "exit code: 0\nstdout:\nred plain done"
    assert rt.bash(r"printf 'a\xff\xfeb\n'") == "exit code: 0\nstdout:\na\ufffd\ufffdb"
    assert rt.bash(r"printf 'nul\0byte\n'; printf 'e\0rr\n' >&2") == "exit code: 0\nstdout:\nnulbyte\nstderr:\nerr"


def test_bash_output_beyond_the_cap_is_cut_and_marked(rt):
    cap = rt.policy.max_output
    out = rt.bash(f"echo FIRST; head -c {cap * 3} /dev/zero | tr '\\0' x; echo; echo LAST")
    assert out.startswith("exit code: 0\nstdout:\nFIRST\n")
    assert out.endswith("\nLAST")
    assert "bytes truncated ...]" in out
    omitted = int(out.split("[... ")[1].split(" bytes truncated")[0])
    assert omitted > cap
    assert len(out) < cap + 200


def test_bash_timeout_is_reported(rt):
    t0 = time.monotonic()
    out = rt.bash("echo before; sleep 30; echo after", timeout=1)
    assert time.monotonic() - t0 < 6
    assert out == ("exit code: 124 (timed out after 1s; the command and all its children were killed)\n"
                   "[pygent] the shell state from before this command is kept\nstdout:\nbefore")
    assert rt.bash("echo alive") == "exit code: 0\nstdout:\nalive"  # the sandbox survives


def test_bash_timeout_through_the_tool_schema(agents):
    ag = Agent(model=Script(say(call("bash", {"cmd": "sleep 30", "timeout": 0.5}))))
    agents.append(ag)
    ag.step("x")
    assert ag.history[-1]["content"].startswith("exit code: 124 (timed out after 0.5s")


def test_default_timeout_comes_from_settings(monkeypatch):
    monkeypatch.setenv("PYGENT_COMMAND_TIMEOUT", "7")
    assert default_policy().timeout == 7.0
    assert Runtime().policy.timeout == 7.0  # no sandbox is started by this


# ---- file tools act inside the sandbox ----------------------------------------------------------


def _tool_results(model, agents, steps: int) -> dict[str, str]:
    """Run an agent on `model` for `steps` steps; each tool result by its call id."""
    ag = Agent(model=model)
    agents.append(ag)
    for _ in range(steps):
        ag.step(None)
    return {m["tool_call_id"]: m["content"] for m in ag.history if m["role"] == "tool"}


def test_write_file_then_cat_via_bash_and_read_file(agents):
    model = Script(
        say(call("write_file", {"path": "notes/todo.txt", "content": "line1\nline2\n"}, id="w")),
        say(call("bash", {"cmd": "cat /workspace/notes/todo.txt; stat -c %U notes/todo.txt"}, id="b")),
        say(call("read_file", {"path": "/workspace/notes/todo.txt"}, id="r")),
    )
    results = _tool_results(model, agents, steps=3)
    assert results["w"] == "Wrote 12 bytes to /workspace/notes/todo.txt"
    assert results["b"] == "exit code: 0\nstdout:\nline1\nline2\nsandbox"
    assert results["r"] == "line1\nline2\n"


def test_read_file_of_a_symlink_resolves_in_the_container(agents):
    host_passwd = open("/etc/passwd").read()
    model = Script(
        say(call("bash", {"cmd": "ln -s /etc/passwd link && ln -s ../../../../etc/passwd deep"})),
        say(call("read_file", {"path": "link"}, id="l")),
        say(call("read_file", {"path": "deep"}, id="d")),
        say(call("read_file", {"path": "../../etc/passwd"}, id="p")),
    )
    results = _tool_results(model, agents, steps=4)
    for key in ("l", "d", "p"):
        content = results[key]
        assert "sandbox:x:1000:1000" in content, content
        assert content != host_passwd
    assert "sandbox:x:1000" not in host_passwd  # so the content above cannot be the host's


def test_read_file_symlink_loops_directories_and_missing_files(rt):
    rt.bash("ln -sf loop1 loop2 && ln -sf loop2 loop1 && mkdir -p adir && ln -sfn /etc linkdir && "
            "echo target > t.txt && ln -sf t.txt l1 && ln -sf l1 l2")
    assert rt.read_file("l2") == "target\n"  # a chain of links
    with pytest.raises(OSError, match="Too many levels of symbolic links"):  # ELOOP, as for the user's `cat`
        rt.read_file("loop1")
    for path in ("adir", "linkdir"):
        with pytest.raises(IsADirectoryError):
            rt.read_file(path)
    with pytest.raises(FileNotFoundError):
        rt.read_file("nothing-here")
    assert rt.read_file("linkdir/hostname").strip().startswith("sandbox-")  # resolved in the container


def test_write_file_through_a_symlink_stays_in_the_container(agents, tmp_path):
    target = tmp_path / "host-file"
    ag = Agent(model=Script(
        say(call("bash", {"cmd": f"ln -s {target} trap"})),
        say(call("write_file", {"path": "trap", "content": "x"}, id="w")),
    ))
    agents.append(ag)
    ag.step(None)
    ag.step(None)
    assert not target.exists()
