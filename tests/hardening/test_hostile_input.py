"""Hostile input never crashes, never runs anything on the host, always yields an error result or a clean exit code.

Property-based (hypothesis, derandomized so CI is deterministic) over the four
doors untrusted data comes in by:

1. tool calls the model makes   -> ``pygent.agent.tools.execute_tool``
2. the model's messages         -> ``Agent.run_until_stop``
3. the provider's HTTP answers  -> ``openai_compat.chat.completions.create``
4. the command line             -> ``pygent-runner exec`` (a real subprocess)

Every property also checks the host: a marker file a hostile payload would
create (/tmp/pygent-hostile-<uuid>) must not exist afterwards, a canary
directory a hostile `rm -rf` targets must survive, and no container may be
left behind. The "Regressions" section at the end pins each product bug the
properties found to its smallest reproduction.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import types
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pygent import models, openai_compat
from pygent.agent import Agent, RunResult, execute_tool
from pygent.agent import tools as tools_mod
from pygent.errors import APIError, ModelError
from pygent.sandbox import default_policy, lifecycle
from support.fake_openai import FakeOpenAI

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

RUNNER = str(Path(sys.executable).with_name("pygent-runner"))
#: What a hostile payload would create on the host if it ever ran there.
MARKER = f"/tmp/pygent-hostile-{uuid.uuid4().hex}"
#: A host directory hostile payloads try to delete.
CANARY = f"/tmp/pygent-hostile-canary-{uuid.uuid4().hex}"
#: A host file whose content must never reach the model.
SECRET_FILE = f"/tmp/pygent-hostile-secret-{uuid.uuid4().hex}"
SECRET = f"host-secret-{uuid.uuid4().hex}"

RUN_REASONS = {"stop", "ask_user", "max_steps", "max_time", "step_timeout", "error"}


def fuzz(n: int) -> settings:
    return settings(
        max_examples=n,
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=False,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.function_scoped_fixture,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
            HealthCheck.filter_too_much,
        ],
    )


# --------------------------------------------------------------------------- host checks


@pytest.fixture(scope="module", autouse=True)
def _host_traps():
    """Plant the canary and the secret; no warm pools (they would blur the container counts)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYGENT_POOL_SIZE", "0")
        os.makedirs(CANARY, exist_ok=True)
        Path(CANARY, "alive").write_text("alive")
        Path(SECRET_FILE).write_text(SECRET)
        os.chmod(SECRET_FILE, 0o644)
        try:
            yield
        finally:
            shutil.rmtree(CANARY, ignore_errors=True)
            for path in (SECRET_FILE, MARKER):
                try:
                    os.unlink(path)
                except OSError:
                    pass


def assert_host_untouched() -> None:
    assert not os.path.lexists(MARKER), f"a hostile payload ran on the HOST: {MARKER} exists"
    assert Path(CANARY, "alive").is_file(), f"a hostile payload ran on the HOST: {CANARY} was deleted"


def session_containers() -> set[str]:
    from pygent.sandbox.engine import get_client

    api = get_client().api
    return {c["Id"] for c in api.containers(all=True, filters={"label": f"{lifecycle.LABEL_SESSION}={lifecycle.SESSION_ID}"})}


def containers_of_pid(pid: int) -> list[str]:
    from pygent.sandbox.engine import get_client

    labels = [f"{lifecycle.LABEL_OWNER_PID}={pid}", f"{lifecycle.LABEL_OWNER_HOST}={lifecycle.HOSTNAME}"]
    return [c["Id"][:12] for c in get_client().api.containers(all=True, filters={"label": labels})]


# --------------------------------------------------------------------------- shared strategies


class DeepList(list):
    """A list nested `depth` deep, with a short repr (hypothesis prints examples, Python's repr would recurse)."""

    depth = 0

    def __repr__(self) -> str:
        return f"deep_list({self.depth})"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))


class DeepDict(dict):
    depth = 0

    def __repr__(self) -> str:
        return f"deep_dict({self.depth})"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))


@lru_cache(maxsize=None)
def deep_list(depth: int) -> DeepList:
    out: list = []
    for _ in range(depth - 1):
        out = [out]
    top = DeepList([out])
    top.depth = depth
    return top


@lru_cache(maxsize=None)
def deep_dict(depth: int) -> DeepDict:
    out: dict = {}
    for _ in range(depth - 1):
        out = {"a": out}
    top = DeepDict(a=out)
    top.depth = depth
    return top


class Labeled(str):
    """A (long) string that prints as the expression that made it."""

    label = ""

    def __repr__(self) -> str:
        return self.label or f"<{len(self)} chars>"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))


class LabeledBytes(bytes):
    label = ""

    def __repr__(self) -> str:
        return self.label or f"<{len(self)} bytes>"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))


def labeled(value: Any, label: str = "") -> Any:
    out = (LabeledBytes if isinstance(value, bytes) else Labeled)(value)
    out.label = label
    return out


def nested_text(depth: int) -> str:
    return labeled("[" * depth + "]" * depth, f"nested_text({depth})")


#: Every code point, lone surrogates and NUL included.
ANY_CHAR = st.characters(exclude_categories=())
#: What can go through argv / HTTP headers: no NUL, no surrogates.
ARGV_CHAR = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
JSONISH_CHAR = st.sampled_from(list('{}[]",:\\ \n\t0123456789.eE+-truefalsnNaIiy\x00\ud800'))

SPECIAL_STRINGS = [
    "", " ", "\x00", "\ud800", "\udfff", "\U0010ffff", "\ufeff", "\u202e", "null", "NaN", "Infinity", "-Infinity",
    "{}", "[]", '""', "{", "}", '{"', '{"cmd":', "\\", "\\u0000", '"\\ud800"', "1e999", labeled("1" * 5000, "'1' * 5000"),
    f"$(touch {MARKER})", f"`touch {MARKER}`", f"; touch {MARKER}", f"; rm -rf {CANARY}",
    "\n" * 50, "\r\n", "%s%n%x", "../../../../etc/passwd", "~", "$HOME", "*", "bash", "stop",
]

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(ANY_CHAR, max_size=40),
    st.sampled_from(SPECIAL_STRINGS),
)
json_values = st.recursive(
    json_scalars,
    lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(st.text(ANY_CHAR, max_size=12), kids, max_size=4)),
    max_leaves=16,
)


DEEP_TEXTS = [
    nested_text(10_000),
    nested_text(100_000),
    labeled('{"a":' * 10_000 + "1" + "}" * 10_000, "<object nested 10000 deep>"),
    labeled("[" * 200_000, "'[' * 200000"),
    labeled('{"cmd": ' + nested_text(10_000) + "}", "<cmd: nested_text(10000)>"),
    labeled('{"cmd": "x", "timeout": ' + nested_text(5_000) + "}", "<timeout: nested_text(5000)>"),
    labeled('{"path": ' + '{"a":' * 3_000 + "1" + "}" * 3_000 + ', "content": 1}', "<path: object nested 3000 deep>"),
]

huge_texts = st.sampled_from([1 << 10, 1 << 16, (1 << 20) - 20, 1 << 20, (1 << 20) + 1, 3 << 20]).map(lambda n: labeled("a" * n))

hostile_text = st.one_of(
    st.text(ANY_CHAR, max_size=200),
    st.text(JSONISH_CHAR, max_size=120),
    st.sampled_from(SPECIAL_STRINGS),
    st.builds(lambda a, b: a + b, st.sampled_from(SPECIAL_STRINGS), st.text(ANY_CHAR, max_size=30)),
)


def is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except (ValueError, RecursionError):
        return False


# =========================================================================== 1. tool calls

SCHEMAS = {s["function"]["name"]: s["function"]["parameters"] for s in tools_mod.schemas()}
TOOL_NAMES = sorted(SCHEMAS)


def make_call(name: Any, arguments: Any, call_id: str = "call_1") -> Any:
    """A tool call as the loop sees one: the real pydantic ToolCall when the types allow, else attribute-style."""
    if isinstance(name, str) and isinstance(arguments, str):
        return openai_compat.ToolCall(id=call_id, function=openai_compat.ToolCallFunction(name=name, arguments=arguments))
    return types.SimpleNamespace(id=call_id, type="function", function=types.SimpleNamespace(name=name, arguments=arguments))


class _QuietModel:
    def chat(self, messages: list, model: str, tools: list) -> str:
        return "nothing to do"


@pytest.fixture(scope="module")
def idle_agent():
    """A real Agent whose (lazy) sandbox must never start: every call it gets is invalid."""
    agent = Agent(model=_QuietModel(), policy=default_policy(timeout=5))
    yield agent
    agent.close()


def _type_ok(kind: str | None, value: Any) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "array":
        return isinstance(value, list)
    if kind == "object":
        return isinstance(value, dict)
    return True


def _plausible(draw: Any, spec: dict) -> Any:
    """A value of the right JSON type (hostile content), for the properties left valid."""
    kind = spec.get("type")
    if kind == "number":
        return draw(st.floats(min_value=0.5, max_value=5))
    if kind == "array":
        return draw(st.lists(st.text(ANY_CHAR, max_size=20), max_size=3))
    return draw(st.text(ANY_CHAR, min_size=1, max_size=60) | st.sampled_from([s for s in SPECIAL_STRINGS if s]))


@st.composite
def invalid_object(draw: Any, name: str) -> dict:
    """A JSON object for tool `name` that is invalid by construction."""
    schema = SCHEMAS[name]
    props: dict = schema.get("properties", {})
    required: list = schema.get("required", [])
    args = {k: _plausible(draw, v) for k, v in props.items() if k in required or draw(st.booleans())}
    kinds = ["extra"] + (["missing"] if required else []) + (["wrong_type"] if props else [])
    if any("exclusiveMinimum" in v for v in props.values()):
        kinds.append("too_small")
    if any("minLength" in v for v in props.values()):
        kinds.append("empty")
    kind = draw(st.sampled_from(kinds))
    if kind == "missing":
        args.pop(draw(st.sampled_from(required)), None)
    elif kind == "wrong_type":
        key = draw(st.sampled_from(sorted(props)))
        spec = props[key]
        if spec.get("type") == "array":
            not_list = json_values.filter(lambda v: not isinstance(v, list))
            bad_items = st.lists(json_values.filter(lambda v: not isinstance(v, str)), min_size=1, max_size=3)
            args[key] = draw(not_list | bad_items)
        else:
            args[key] = draw(json_values.filter(lambda v: not _type_ok(spec.get("type"), v)))
    elif kind == "too_small":
        key = draw(st.sampled_from(sorted(k for k, v in props.items() if "exclusiveMinimum" in v)))
        args[key] = draw(st.sampled_from([0, 0.0, -0.0, -1, -1e308, -math.inf]))
    elif kind == "empty":
        key = draw(st.sampled_from(sorted(k for k, v in props.items() if "minLength" in v)))
        args[key] = ""
    else:  # a key the tool does not take: refused by the schema or by the function's signature
        args[draw(st.text(ANY_CHAR, min_size=1, max_size=30).filter(lambda k: k not in props))] = draw(json_values)
    return args


@st.composite
def invalid_payload(draw: Any, name: str) -> Any:
    """Anything a model could send as arguments that must be refused with an error string."""
    choice = draw(st.sampled_from(["text", "json", "object", "object", "deep", "huge", "pyvalue", "pydeep"]))
    if choice == "text":  # not a JSON object at all (""/None mean {} and are valid for some tools)
        return draw(hostile_text.filter(lambda s: s != "" and not is_json_object(s)))
    if choice == "json":  # valid JSON, wrong top-level type
        value = draw(json_values.filter(lambda v: not isinstance(v, dict) and v is not None) | st.none())
        return json.dumps(value, ensure_ascii=draw(st.booleans()))
    if choice == "object":
        obj = draw(invalid_object(name))
        how = draw(st.sampled_from(["ascii", "raw", "padded", "dict"]))
        if how == "dict":
            return obj
        text = json.dumps(obj, ensure_ascii=how == "ascii")
        return f" \n\t{text}\r\n " if how == "padded" else text
    if choice == "deep":
        return draw(st.sampled_from(DEEP_TEXTS))
    if choice == "huge":  # over the size cap, or a valid-looking object carrying a huge value of a wrong key
        big = draw(huge_texts)
        return draw(st.sampled_from([big, '{"zz_unknown": "' + big + '"}', '{"cmd": 1, "path": "' + big + '"}']))
    if choice == "pyvalue":  # not text, not a dict: e.g. a custom tool-call object
        return draw(st.one_of(st.integers(), st.floats(), st.binary(max_size=40), st.lists(json_values, max_size=3),
                              st.just(b'{"cmd": "touch ' + MARKER.encode() + b'"}'), st.tuples(st.text(max_size=5))))
    # python dicts with values no JSON parser would produce
    return draw(st.sampled_from([
        {"cmd": deep_list(10_000)},
        {"path": deep_dict(10_000), "content": "x"},
        {1: "x"},
        {("t",): 1},
        {"cmd": b"touch " + MARKER.encode()},
        {"cmd": 1, "zz": object()},
    ]))


unknown_names = st.one_of(
    st.text(ANY_CHAR, max_size=80),
    st.builds(lambda n, s: n + s, st.sampled_from(TOOL_NAMES), st.text(ANY_CHAR, min_size=1, max_size=10)),
    st.builds(lambda n, s: s + n, st.sampled_from(TOOL_NAMES), st.text(ANY_CHAR, min_size=1, max_size=10)),
    st.sampled_from(TOOL_NAMES).map(str.upper),
    st.sampled_from(TOOL_NAMES).map(lambda n: n + "\x00"),
    st.sampled_from(TOOL_NAMES).map(lambda n: f" {n}"),
    st.sampled_from(TOOL_NAMES).map(lambda n: n.replace("_", "-")),
    st.integers(10_000, 300_000).map(lambda n: "b" * n),
    st.sampled_from(["", "\x00", "\ud800", "__init__", "__class__", "TOOLS", "../bash", "bash;touch", f"$(touch {MARKER})"]),
).filter(lambda n: n not in SCHEMAS)

non_str_names = st.one_of(
    st.none(), st.integers(), st.floats(), st.booleans(), st.binary(max_size=10), st.just(b"bash"),
    st.lists(st.sampled_from(TOOL_NAMES), min_size=1, max_size=2), st.just(("bash",)),
)


def _check_refused(out: Any, rt: Any) -> None:
    assert isinstance(out, str), f"execute_tool returned {type(out).__name__}, not str"
    assert out.startswith("error:"), f"an invalid call was not refused: {out[:300]!r}"
    assert not rt.started, "an invalid tool call started a container"
    assert_host_untouched()


def test_unknown_tool_names_are_refused_without_a_container(idle_agent):
    rt = idle_agent.runtime
    before = session_containers()

    @fuzz(150)
    @given(name=st.one_of(unknown_names, non_str_names), arguments=st.one_of(st.none(), hostile_text, json_values))
    def prop(name: Any, arguments: Any) -> None:
        out = execute_tool(make_call(name, arguments), rt)
        _check_refused(out, rt)
        assert out.startswith("error: unknown tool"), out[:200]
        assert len(out) < 4000, "the error echoes an unbounded amount of the hostile name"

    prop()
    assert session_containers() - before == set()


def test_invalid_arguments_for_real_tools_are_refused_without_a_container(idle_agent):
    rt = idle_agent.runtime
    before = session_containers()

    @fuzz(300)
    @given(data=st.data(), name=st.sampled_from(TOOL_NAMES))
    def prop(data: Any, name: str) -> None:
        payload = data.draw(invalid_payload(name), label="arguments")
        out = execute_tool(make_call(name, payload), rt)
        _check_refused(out, rt)

    prop()
    assert session_containers() - before == set()


MALFORMED_CALLS = [
    None, 0, "bash", b"bash", [], {}, {"function": {"name": "bash", "arguments": '{"cmd": "true"}'}},
    types.SimpleNamespace(), types.SimpleNamespace(function=None), types.SimpleNamespace(function="bash"),
    types.SimpleNamespace(function=types.SimpleNamespace(name="bash")),
    types.SimpleNamespace(function=types.SimpleNamespace(arguments='{"cmd": "true"}')),
    types.SimpleNamespace(function={"name": "bash", "arguments": '{"cmd": "true"}'}),
]


@pytest.mark.parametrize("call", MALFORMED_CALLS, ids=lambda c: type(c).__name__)
def test_malformed_call_objects_are_refused(idle_agent, call):
    _check_refused(execute_tool(call, idle_agent.runtime), idle_agent.runtime)


# ---- valid calls with hostile values: they run, but only inside the sandbox


@pytest.fixture(scope="module")
def busy_agent():
    agent = Agent(model=_QuietModel(), policy=default_policy(timeout=5))
    yield agent
    agent.close()


HOST_ESCAPES = [
    f"touch {MARKER}", f"$(touch {MARKER})", f"`touch {MARKER}`", f"; touch {MARKER}", f"&& touch {MARKER}",
    f"| touch {MARKER}", f"\ntouch {MARKER}\n", f"'; touch {MARKER}; '", f"echo pwned > {MARKER}",
    f"python3 -c 'open(\"{MARKER}\", \"w\")'", f"rm -rf {CANARY}", f"; rm -rf {CANARY}", f"cat {SECRET_FILE}",
    f"ln -s {SECRET_FILE} s; cat s", "cat /proc/1/environ", "exec 1>&-", "echo \x00",
]
hostile_paths = st.one_of(
    st.sampled_from([
        MARKER, SECRET_FILE, "../" * 12 + MARKER.lstrip("/"), "../" * 12 + SECRET_FILE.lstrip("/"), f"/workspace/../{MARKER}",
        "/", ".", "..", "/workspace", "~", "~/x", "$HOME/x", "/etc/passwd", "/etc/shadow", "/tmp", "/tmp/", "a/" * 300 + "f",
        "x" * 5000, "\ud800", "a\x00b", "\u202e.txt", "/dev/stdin", f"$(touch {MARKER})", f"`touch {MARKER}`", "-rf",
    ]),
    st.text(ANY_CHAR, min_size=1, max_size=60),
)
hostile_timeouts = st.sampled_from([None, None, 3, 1e-300, math.nan, 1e308, 1e10])


@st.composite
def valid_hostile_call(draw: Any) -> tuple[str, str]:
    tool = draw(st.sampled_from(["bash", "bash", "write_file", "read_file"]))
    if tool == "bash":
        escape = st.sampled_from(HOST_ESCAPES)
        cmd = draw(escape | st.builds(lambda a, b: a + b, st.text(ANY_CHAR, max_size=20), escape))
        args: dict = {"cmd": cmd}
        timeout = draw(hostile_timeouts)
        if timeout is not None:
            args["timeout"] = timeout
    elif tool == "write_file":
        args = {"path": draw(hostile_paths), "content": draw(st.one_of(st.sampled_from(HOST_ESCAPES), st.text(ANY_CHAR, max_size=100)))}
    else:
        args = {"path": draw(hostile_paths)}
    return tool, json.dumps(args, ensure_ascii=draw(st.booleans()))


def test_valid_calls_with_hostile_values_stay_in_the_sandbox(busy_agent):
    rt = busy_agent.runtime

    @fuzz(25)
    @given(call=valid_hostile_call())
    def prop(call: tuple[str, str]) -> None:
        name, arguments = call
        out = execute_tool(make_call(name, arguments), rt)
        assert isinstance(out, str)
        assert SECRET not in out, "a host file's content reached the model"
        assert_host_untouched()

    prop()
    assert rt.started, "no hostile call ever reached the sandbox: the property tested nothing"


# =========================================================================== 2. the agent loop


@dataclass
class Raises:
    exc: Exception


class ScriptedModel:
    """Returns the scripted outputs in turn (raising the Raises ones)."""

    def __init__(self, outputs: list) -> None:
        self.outputs = outputs
        self.calls = 0

    def chat(self, messages: list, model: str, tools: list) -> Any:
        out = self.outputs[self.calls % len(self.outputs)]
        self.calls += 1
        if isinstance(out, Raises):
            raise out.exc
        return out


def assistant_calling(name: str, arguments: Any) -> dict:
    """An assistant message (wire dict) with one tool call."""
    return {"role": "assistant", "content": None,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": name, "arguments": arguments}}]}


class _StopModel:
    """For sub-agents a valid delegate_task would start."""

    def chat(self, messages: list, model: str, tools: list) -> dict:
        return assistant_calling("stop", "{}")


maybe = lambda s: st.one_of(st.just(...), s)  # noqa: E731  ... = the key is left out


def _dict_of(**fields: Any) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries({k: maybe(v) for k, v in fields.items()}).map(lambda d: {k: v for k, v in d.items() if v is not ...})


arguments_values = st.one_of(
    hostile_text,
    json_values,
    st.dictionaries(
        st.sampled_from(["cmd", "path", "content", "task_id", "timeout", "question", "x"]),
        st.one_of(st.text(ANY_CHAR, max_size=30), json_values),
        max_size=3,
    ),
    st.sampled_from([deep_list(10_000), {"a": deep_list(10_000)}, nested_text(10_000), {"b": b"\xff"}, {("k",): 1}, b"{}", b"\xff"]),
)
function_like = st.one_of(
    _dict_of(name=st.one_of(st.sampled_from(TOOL_NAMES), unknown_names, json_values), arguments=arguments_values),
    json_values,
)
tool_call_like = st.one_of(
    _dict_of(id=st.one_of(st.text(ANY_CHAR, max_size=20), json_values), type=st.one_of(st.just("function"), json_values), function=function_like),
    json_values,
)
content_like = st.one_of(
    st.none(), st.text(ANY_CHAR, max_size=200), json_values,
    st.lists(st.one_of(_dict_of(type=st.just("text"), text=st.one_of(st.text(ANY_CHAR, max_size=30), json_values)), json_values), max_size=4),
    st.sampled_from([deep_list(10_000), [{"type": "text", "text": deep_list(10_000)}], labeled("x" * (1 << 20))]),
)
message_like = _dict_of(
    role=st.one_of(st.just("assistant"), json_values),
    content=content_like,
    tool_calls=st.one_of(st.lists(tool_call_like, max_size=3), json_values),
    name=json_values,
    tool_call_id=json_values,
)


def _namespace(d: Any) -> Any:
    """The same data as an SDK-style attribute object."""
    if type(d) is dict and all(isinstance(k, str) and k.isidentifier() for k in d):
        return types.SimpleNamespace(**{k: _namespace(v) for k, v in d.items()})
    if type(d) is list:
        return [_namespace(v) for v in d]
    return d


#: Well-formed messages whose tool calls are hostile: these get past parsing and drive the tools.
well_formed_call = st.fixed_dictionaries({
    "id": st.text(ANY_CHAR, max_size=20),
    "type": st.just("function"),
    "function": st.fixed_dictionaries({
        "name": st.one_of(st.sampled_from(TOOL_NAMES), st.sampled_from(TOOL_NAMES), unknown_names),
        "arguments": st.one_of(
            hostile_text,
            json_values.map(json.dumps),
            st.dictionaries(st.sampled_from(["cmd", "path", "content", "task_id", "timeout", "question", "x"]),
                            st.one_of(st.sampled_from(HOST_ESCAPES), st.text(ANY_CHAR, max_size=30), json_values), max_size=3),
            st.sampled_from(DEEP_TEXTS),
        ),
    }),
})
well_formed_message = st.fixed_dictionaries(
    {"role": st.just("assistant"), "content": st.one_of(st.none(), st.text(ANY_CHAR, max_size=100))},
    optional={"tool_calls": st.lists(well_formed_call, min_size=1, max_size=3)},
)

#: A message whose one tool call is valid, with hostile values (it runs, in the sandbox).
runnable_message = valid_hostile_call().map(lambda call: assistant_calling(*call))

hostile_model_output = st.one_of(
    well_formed_message,
    well_formed_message,
    runnable_message,
    well_formed_message.map(_namespace),
    message_like,
    message_like.map(_namespace),
    _dict_of(choices=st.one_of(st.lists(_dict_of(message=st.one_of(message_like, json_values), index=json_values), max_size=2), json_values)),
    json_values,
    st.text(ANY_CHAR, max_size=100),
    st.sampled_from([None, 0, 1.5, math.nan, True, b"bytes", [], {}, (), object(), deep_list(10_000), deep_dict(10_000)]),
    st.sampled_from([
        Raises(ValueError("bad")), Raises(RuntimeError("boom")), Raises(KeyError("k")), Raises(TypeError("t")),
        Raises(RecursionError("deep")), Raises(MemoryError()), Raises(StopIteration()), Raises(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad")),
        Raises(APIError("provider down", 503)), Raises(ModelError("no model")),
    ]),
)


def test_agent_loop_survives_a_hostile_model(monkeypatch):
    monkeypatch.setattr(models, "_custom_model", _StopModel())  # what a sub-agent would talk to
    before = session_containers()
    tool_results: list[str] = []

    @fuzz(80)
    @given(outputs=st.lists(hostile_model_output, min_size=1, max_size=3))
    def prop(outputs: list) -> None:
        agent = Agent(model=ScriptedModel(outputs), policy=default_policy(timeout=5))
        try:
            result = agent.run_until_stop("go", max_steps=3, step_timeout=15)
            assert isinstance(result, RunResult)
            assert result.reason in RUN_REASONS, result
            assert 0 <= result.steps <= 3
            json.dumps(agent.history)  # the history stays plain, resumable JSON
            tool_results.extend(m["content"] for m in agent.history if m.get("role") == "tool")
        finally:
            agent.close()
        assert not agent.runtime.started
        assert session_containers() - before == set(), "the agent left a container behind"
        assert_host_untouched()

    prop()
    # the property reached the tools, with both refused and executed calls
    assert any(r.startswith("error:") for r in tool_results) and any(not r.startswith("error:") for r in tool_results)


# =========================================================================== 3. provider responses


@dataclass
class Raw:
    """A response sent byte for byte: any status, headers and body, optionally a lying Content-Length."""

    code: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)
    length: str = "exact"  # exact | short (we promise more, then hang up) | chunked (garbage chunking)


class HostileOpenAI(FakeOpenAI):
    def _respond(self, h: Any, response: Any) -> None:
        if not isinstance(response, Raw):
            return super()._respond(h, response)
        h.send_response(response.code)
        for key, value in response.headers:
            h.send_header(key, value)
        if response.length == "chunked":
            h.send_header("Transfer-Encoding", "chunked")
        else:
            extra = 37 if response.length == "short" else 0
            h.send_header("Content-Length", str(len(response.body) + extra))
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(response.body)
        h.wfile.flush()
        h.close_connection = True


@pytest.fixture
def hostile_server(monkeypatch, fast_retries):  # noqa: F811
    with HostileOpenAI() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        yield server


def _completion(message: Any) -> dict:
    return {"id": "c", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}


@lru_cache(maxsize=None)
def huge_bodies() -> tuple[bytes, ...]:
    return (
        labeled(json.dumps(_completion({"role": "assistant", "content": "z" * (8 << 20)})).encode(), "<completion with 8 MiB content>"),
        labeled(("[" + "0," * 1_000_000 + "0]").encode(), "<list of 1M numbers>"),
        labeled(json.dumps({"choices": [_completion({"role": "assistant", "content": "x"})["choices"][0]] * 50_000}).encode(), "<50k choices>"),
        labeled(json.dumps(_completion({"role": "assistant", "content": None, "tool_calls": [
            {"id": str(i), "type": "function", "function": {"name": "bash", "arguments": "{}"}} for i in range(50_000)
        ]})).encode(), "<50k tool calls>"),
        labeled(b" " * (4 << 20) + b"{}", "<4 MiB of spaces, then {}>"),
    )


completion_like = _dict_of(
    id=json_values, object=json_values, created=json_values, model=json_values,
    choices=st.one_of(
        st.lists(_dict_of(index=json_values, message=st.one_of(message_like, json_values), finish_reason=json_values), max_size=3),
        json_values,
    ),
    usage=st.one_of(_dict_of(prompt_tokens=json_values, completion_tokens=json_values, total_tokens=json_values), json_values),
    error=json_values,
)


def _dumps(value: Any) -> bytes:
    try:
        return json.dumps(value).encode()
    except (TypeError, ValueError, RecursionError):  # bytes / tuple keys / too deep: not a JSON body
        return repr(value).encode("utf-8", "surrogatepass")


DEEP_BODIES = [labeled(t.encode(), repr(t)) for t in DEEP_TEXTS] + [
    labeled(json.dumps(_completion(assistant_calling("bash", "A"))).replace('"A"', nested_text(10_000)).encode(),
            "<tool_call arguments nested 10000 deep>"),
    labeled(json.dumps(_completion({"role": "assistant", "content": "A"})).replace('"A"', nested_text(10_000)).encode(),
            "<content nested 10000 deep>"),
]


@st.composite
def hostile_body(draw: Any) -> bytes:
    kind = draw(st.sampled_from(["json", "completion", "completion", "binary", "text", "deep", "huge", "cut", "encoded", "special"]))
    if kind == "json":
        return _dumps(draw(json_values))
    if kind == "completion":
        return _dumps(draw(completion_like))
    if kind == "binary":
        return draw(st.binary(max_size=300))
    if kind == "text":
        return draw(st.text(ANY_CHAR, max_size=300)).encode("utf-8", "surrogatepass")
    if kind == "deep":
        return draw(st.sampled_from(DEEP_BODIES))
    if kind == "huge":
        return huge_bodies()[draw(st.integers(0, len(huge_bodies()) - 1))]
    if kind == "cut":
        whole = _dumps(draw(completion_like))
        return whole[: draw(st.integers(0, max(0, len(whole) - 1)))]
    if kind == "encoded":
        text = _dumps(draw(completion_like)).decode("utf-8", "surrogatepass")
        codec = draw(st.sampled_from(["utf-16", "utf-16-be", "utf-32", "utf-8-sig", "latin-1"]))
        return text.encode(codec, "surrogatepass" if codec.startswith("utf") else "replace")
    return draw(st.sampled_from([
        b"NaN", b"Infinity", b"-Infinity", b"1e999", labeled(b"1" * 5000, "b'1' * 5000"),
        labeled(b'{"choices": [], "created": ' + b"9" * 5000 + b"}", "<created: 5000 digits>"),
        b'{"choices": [], "choices": 5}', b"\xef\xbb\xbf{}", b"\x00", b"", b"null", b'"\\ud800"', b'{"error": null}',
        labeled(b'{"error": {"message": ' + b"[" * 5000 + b"]" * 5000 + b"}}", "<error.message nested 5000 deep>"),
    ]))


@st.composite
def hostile_response(draw: Any) -> Raw:
    code = draw(st.sampled_from([200] * 8 + [100, 101, 201, 204, 299, 301, 304, 400, 401, 404, 413, 422, 429, 500, 502, 503, 599, 999]))
    headers = []
    ctype = draw(st.sampled_from(["application/json", "application/json", "text/html", "application/json; charset=utf-16",
                                  "application/json; charset=x-bogus", "application/octet-stream", None]))
    if ctype:
        headers.append(("Content-Type", ctype))
    encoding = draw(st.sampled_from([None] * 8 + ["gzip", "deflate", "br", "zstd", "identity", "x-bogus", "gzip, gzip"]))
    if encoding:
        headers.append(("Content-Encoding", encoding))
    length = draw(st.sampled_from(["exact"] * 8 + ["short", "chunked"]))
    return Raw(code, draw(hostile_body()), headers, length)


def _check_completion_or_api_error(make: Any) -> None:
    try:
        result = make()
    except APIError as exc:
        assert len(str(exc)) < 10_000, "the error message is unbounded"
        return
    assert isinstance(result, openai_compat.ChatCompletion)
    assert isinstance(result.choices, list)
    for choice in result.choices:
        assert isinstance(choice.message, openai_compat.Message)
        assert choice.message.content is None or isinstance(choice.message.content, str)
        for call in choice.message.tool_calls or []:
            assert isinstance(call.function.name, str) and isinstance(call.function.arguments, str)
    json.dumps(result.to_dict())


def test_create_returns_a_completion_or_raises_api_error(hostile_server):
    @fuzz(250)
    @given(response=hostile_response(), retries=st.sampled_from([0, 0, 1]))
    def prop(response: Raw, retries: int) -> None:
        hostile_server.handler = lambda body: response
        _check_completion_or_api_error(lambda: openai_compat.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], tools=tools_mod.schemas(), max_retries=retries, timeout=10))

    prop()
    assert len(hostile_server.requests) >= 250


@fuzz(300)
@given(value=st.one_of(st.text(ARGV_CHAR, max_size=40), st.sampled_from([
    "inf", "-inf", "nan", "1e400", "-1", "0x10", "1_0", "\u0663", " 3 ", "Fri, 31 Dec 9999 23:59:59 -2359",
    "Mon, 01 Jan 0001 00:00:00 +2359", "Wed, 21 Oct 2015 07:28:00 GMT", "Wed, 32 Oct 2015 99:99:99 GMT", "Sun, 06 Nov 1994 08:49:37",
])))
def test_retry_after_is_none_or_bounded(value: str) -> None:
    seconds = openai_compat._retry_after_seconds(value)
    assert seconds is None or 0.0 <= seconds <= openai_compat.RETRY_AFTER_CAP


def test_agent_on_a_hostile_provider_ends_cleanly(hostile_server, monkeypatch):
    """The default model over real HTTP: whatever the provider sends, the run ends with a RunResult."""
    monkeypatch.setattr(models, "_custom_model", _StopModel())

    @fuzz(40)
    @given(responses=st.lists(hostile_response(), min_size=1, max_size=3))
    def prop(responses: list[Raw]) -> None:
        answers = itertools.cycle(responses)
        hostile_server.handler = lambda body: next(answers)
        agent = Agent(model=models.OpenAIModel(), policy=default_policy(timeout=5))
        try:
            result = agent.run_until_stop("go", max_steps=3, step_timeout=15)
            assert isinstance(result, RunResult) and result.reason in RUN_REASONS
        finally:
            agent.close()
        assert not agent.runtime.started
        assert_host_untouched()

    prop()
    assert len(hostile_server.requests) >= 40


# =========================================================================== 4. the exec command line


def run_exec(args: list, timeout: float = 90) -> tuple[int, bytes, bytes, int]:
    proc = subprocess.Popen([RUNNER, "exec", *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return proc.returncode, out, err, proc.pid


def assert_clean_exit(code: int, err: bytes, pid: int) -> None:
    assert isinstance(code, int) and 0 <= code <= 255, f"exit status {code} (killed by a signal?); stderr={err[-500:]!r}"
    assert b"Traceback" not in err, f"traceback on stderr:\n{err.decode('utf-8', 'replace')[-3000:]}"
    assert containers_of_pid(pid) == [], "the exec left its container behind"
    assert_host_untouched()


CLI_PAYLOADS = HOST_ESCAPES + [
    "-h", "--help", "--", "-", "--image", "-e", "\\", "'", '"', "!!", "$((1/0))", "${IFS}", "%n%s", "\n", "\t", " ", "",
    "exit 300", "exit -1", "kill -9 $$", "kill -9 -1", "echo \udcff".encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
]
argv_words = st.one_of(
    st.sampled_from(CLI_PAYLOADS),
    st.text(ARGV_CHAR, max_size=40),
    st.builds(lambda a, b: a + b, st.text(ARGV_CHAR, max_size=10), st.sampled_from(CLI_PAYLOADS)),
    st.binary(max_size=20).map(lambda b: b.replace(b"\x00", b"")),  # not UTF-8: arrives as surrogate escapes
)


def test_exec_hostile_argv_runs_only_in_the_sandbox():
    @fuzz(15)
    @given(words=st.lists(argv_words, min_size=1, max_size=4), dashdash=st.booleans())
    def prop(words: list, dashdash: bool) -> None:
        code, out, err, pid = run_exec(["--timeout", "20", *(["--"] if dashdash else []), *words])
        assert_clean_exit(code, err, pid)
        if code == 125:
            assert err.rstrip(b"\n").splitlines()[-1].startswith(b"pygent-runner: error: "), err[-500:]

    prop()


OPTION_NAMES = ["--memory", "-m", "--timeout", "--env", "-e", "--mount", "-v", "--image", "--cpus", "--pids", "--runtime", "--workdir", "-w"]
OPTION_VALUES = [
    "", " ", "-1", "0", "-0", "nan", "inf", "-inf", "1e308", "1e-320", "1e12", "0x10", "1_000", "\u0663", "\uff11g", "512m\n", "1g\n",
    "\n", "9" * 400, "99999999999999999999", "1e-10", "64.0001", "7", "65537", "0.001", "--", "-", "--help",
    f"$(touch {MARKER})", f"`touch {MARKER}`", f"; touch {MARKER}", f"; rm -rf {CANARY}",
    "../../", "/:", ":/x", "::", ":::", "/nonexistent-pygent:/x", "relative:/x", "/tmp:relative", "/tmp:/x:rx", "/tmp:/a/../b",
    f"{CANARY}:/c:ro", "a=b=c", "=x", "K", "K=\n", "PATH=", "LD_PRELOAD=/tmp/x.so", "A B=c", "\u00e9=1",
    "../../info", "ABC", "python:latest", "pygent/python:zzz", "pygent/../../info", "minimal@sha256:00", "busybox", "UPPER/Case",
    "runc", "runsc", "io.containerd.runc.v2", "/", "/nonexistent", "relative/dir", "/proc", "/dev/null",
]


def test_exec_hostile_option_values_fail_cleanly():
    @fuzz(20)
    @given(opts=st.lists(st.tuples(st.sampled_from(OPTION_NAMES), st.one_of(st.sampled_from(OPTION_VALUES), st.text(ARGV_CHAR, max_size=30)),
                                   st.booleans()), min_size=1, max_size=3))
    def prop(opts: list) -> None:
        args: list[str] = []
        for name, value, inline in opts:
            args += [f"{name}={value}"] if inline and name.startswith("--") else [name, value]
        code, out, err, pid = run_exec([*args, "--", "true"], timeout=120)
        assert_clean_exit(code, err, pid)
        lines = [line.decode("utf-8", "replace") for line in err.split(b"\n") if line.strip()]
        if code not in (0, 124):
            assert code in (2, 125), f"exit {code} for {args!r}: {lines}"
            assert len(lines) == 1 and lines[0].startswith("pygent-runner: error: "), f"not a one-line error for {args!r}: {lines}"

    prop()


# =========================================================================== Regressions
# The smallest reproductions of the product bugs the properties above found.


def test_deeply_nested_provider_body_is_an_api_error(hostile_server):
    """openai_compat._parse_success / _error_message catch ValueError from resp.json(), not RecursionError."""
    for code in (200, 400):
        hostile_server.queue(Raw(code, nested_text(10_000).encode(), [("Content-Type", "application/json")]))
        with pytest.raises(APIError):
            openai_compat.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], max_retries=0)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_lying_content_encoding_is_an_api_error(hostile_server, encoding):
    """httpx.DecodingError (a body that is not what Content-Encoding says) escapes create()."""
    body = json.dumps(_completion({"role": "assistant", "content": "hi"})).encode()
    hostile_server.queue(Raw(200, body, [("Content-Type", "application/json"), ("Content-Encoding", encoding)]))
    with pytest.raises(APIError):
        openai_compat.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], max_retries=0)


@pytest.mark.parametrize(("code", "body"), [(200, b"oops"), (400, b'{"error": {"message": "bad request"}}')])
def test_wrong_charset_is_an_api_error(hostile_server, code, body):
    """resp.text raises UnicodeError (the utf-16 codec's 'stream does not start with BOM', not a
    UnicodeDecodeError, so errors='replace' does not apply) in _error_message and in _parse_success."""
    hostile_server.queue(Raw(code, body, [("Content-Type", "application/json; charset=utf-16")]))
    with pytest.raises(APIError):
        openai_compat.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], max_retries=0)


@pytest.mark.parametrize("output", [
    pytest.param({"role": "assistant", "content": deep_list(10_000)}, id="deep-content"),
    pytest.param(assistant_calling("bash", deep_list(10_000)), id="deep-arguments"),
    pytest.param(assistant_calling("bash", {"cmd": b"ls"}), id="bytes-in-arguments"),
    pytest.param(assistant_calling("bash", {("k",): 1}), id="tuple-key-in-arguments"),
])
def test_unusable_model_output_ends_the_run_with_error(output):
    """call_model only turns ModelError from coerce_message into a clean error; RecursionError/TypeError escape."""
    agent = Agent(model=ScriptedModel([output]), policy=default_policy(timeout=5))
    try:
        result = agent.run_until_stop("go", max_steps=3)
    finally:
        agent.close()
    assert result.reason == "error"


@pytest.mark.parametrize("seconds", ["1e10", "1e12", "1e308"])
def test_exec_huge_timeout_is_clean(seconds):
    """--timeout above ~9.2e9 s reaches socket.settimeout() and raises OverflowError: traceback, exit 1."""
    code, out, err, pid = run_exec(["--timeout", seconds, "--", "echo", "ok"])
    assert_clean_exit(code, err, pid)
    assert code in (0, 125), (code, err[-300:])


@pytest.mark.parametrize("memory", ["600000000\n", "1073741824\n"])
def test_exec_bad_memory_is_not_reported_as_engine_down(memory):
    """'600000000\\n' passes the policy's size regex ('$' matches before a final newline); docker-py then
    refuses it with a DockerException that _map_error reports as 'no Docker engine answers'."""
    code, out, err, pid = run_exec(["--memory", memory, "--", "true"])
    assert_clean_exit(code, err, pid)
    assert code == 125
    assert b"no Docker engine answers" not in err, err


@pytest.mark.parametrize("cpus", ["1e-10", "1e-6"])
def test_exec_tiny_cpus_never_means_unlimited(cpus):
    """--cpus below 1e-5 becomes NanoCpus whose CFS quota rounds to 0, which Docker reads as no limit."""
    probe = "cat /sys/fs/cgroup/cpu.max 2>/dev/null || cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us"
    code, out, err, pid = run_exec(["--cpus", cpus, "--", probe])
    assert_clean_exit(code, err, pid)
    if code == 0:
        quota = out.split()[0] if out.split() else b""
        assert quota not in (b"-1", b"max"), f"--cpus {cpus} ran with NO cpu limit (quota {quota!r})"
    else:
        assert code == 125, (code, err)


# The in-container server writes its reports with its own small JSON encoder (the json
# module costs ~7 ms at every sandbox start); whatever a command leaves as its working
# directory (any text, lone surrogates included) must reach the host intact.
_ANY_TEXT = st.text(st.characters(blacklist_categories=[]))  # surrogates too
_REPORT_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), _ANY_TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(value=_REPORT_VALUES)
def test_server_reports_are_json_the_host_reads_back_exactly(value):
    from pygent.sandbox import server

    text = server.to_json(value)
    assert text.isascii()
    assert json.loads(text) == value


def test_server_reports_refuse_values_json_cannot_carry():
    from pygent.sandbox import server

    assert json.loads(server.to_json({"d": float("inf"), "n": float("nan")})) == {"d": None, "n": None}
    with pytest.raises(TypeError):
        server.to_json({"x": object()})
