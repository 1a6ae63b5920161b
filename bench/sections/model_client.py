"""Section 7: what our OpenAI-compatible client adds per model call, against the official SDK.

One loopback server (tests/support/fake_openai.py, the tests' own) answers
every request with the same chat completion (a tool call, usage, the extra
fields OpenAI sends). Per round, one call of each, interleaved so noise hits
them alike:

- raw httpx: a pooled ``httpx.Client.post`` of the same body + ``json.loads``
  (the floor: transport and server);
- the official ``openai`` SDK's ``chat.completions.create``;
- ``pygent.openai_compat.chat.completions.create``.

The request is an agent's: the default system prompt, pygent's tool schemas,
a few turns of history. "added" rows are per-round differences from the floor.
"""

from __future__ import annotations

import json
import sys

from ..context import Ctx
from ..core import REPO, Row, Section, timed


def _fake_openai():  # the tests' loopback server, not a second one
    sys.path.insert(0, str(REPO / "tests"))
    try:
        from support.fake_openai import FakeOpenAI
    finally:
        sys.path.remove(str(REPO / "tests"))
    return FakeOpenAI


def run(ctx: Ctx, section: Section) -> None:
    import httpx
    import openai

    from pygent import openai_compat as oc
    from pygent.agent import tools
    from pygent.agent.prompt import DEFAULT_PERSONA, build_system_msg

    FakeOpenAI = _fake_openai()
    n = ctx.n(300, 30)
    warm = ctx.n(20, 5)
    schemas = tools.schemas()
    history = [
        {"role": "system", "content": build_system_msg(DEFAULT_PERSONA, schemas, "python")},
        {"role": "user", "content": "count the primes below 100"},
        {"role": "assistant", "content": None, "tool_calls": [FakeOpenAI.tool_call("bash", {"cmd": "python3 -c 'print(25)'"}, id="call_1")]},
        {"role": "tool", "tool_call_id": "call_1", "content": "exit code: 0\nstdout:\n25"},
    ]
    answer = FakeOpenAI.reply(None, [FakeOpenAI.tool_call("stop", {}, id="call_2")])
    with FakeOpenAI() as server:
        server.handler = lambda body: answer
        url = server.base_url + "/chat/completions"
        import os

        saved = {k: os.environ.get(k) for k in ("OPENAI_BASE_URL", "OPENAI_API_KEY")}
        os.environ.update(OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="bench-key")
        raw = httpx.Client(headers={"Authorization": "Bearer bench-key", "Content-Type": "application/json"})
        sdk = openai.OpenAI(base_url=server.base_url, api_key="bench-key", max_retries=0)
        try:
            payload = json.dumps({"model": "m", "messages": history, "tools": schemas, "tool_choice": "auto"}).encode()
            methods = [
                ("raw_httpx", "raw httpx post + json.loads (floor)",
                 lambda: json.loads(raw.post(url, content=payload).content)["choices"][0]["message"]),
                ("sdk", "openai SDK chat.completions.create",
                 lambda: sdk.chat.completions.create(model="m", messages=history, tools=schemas, tool_choice="auto").choices[0].message),
                ("ours", "pygent openai_compat chat.completions.create",
                 lambda: oc.chat.completions.create(model="m", messages=history, tools=schemas, tool_choice="auto").choices[0].message),
            ]
            for _ in range(warm):
                for key, _, fn in methods:
                    msg = fn()
                    calls = msg["tool_calls"] if isinstance(msg, dict) else msg.tool_calls
                    name = calls[0]["function"]["name"] if isinstance(msg, dict) else calls[0].function.name
                    if name != "stop":
                        raise RuntimeError(f"{key} did not parse the tool call: {msg!r}"[:300])
            samples: dict[str, list[float]] = {key: [] for key, _, _ in methods}
            for _ in range(n):
                for key, _, fn in methods:
                    ms, _ = timed(fn)
                    samples[key].append(ms)
        finally:
            sdk.close()
            raw.close()
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    for key, name, _ in methods:
        section.add(Row(key, name, samples[key], vs={"÷ SDK": "sdk"} if key != "sdk" else {}))
    floor = samples["raw_httpx"]
    section.add(Row("sdk_added", "added by the SDK (per round, − floor)", [s - f for s, f in zip(samples["sdk"], floor)]))
    section.add(Row("ours_added", "added by openai_compat (per round, − floor)",
                    [s - f for s, f in zip(samples["ours"], floor)], vs={"÷ SDK added": "sdk_added"}))
    section.notes.append(
        f"Same loopback server, same run, interleaved; request: system prompt + {len(schemas)} tool schemas + "
        f"{len(history) - 1} messages ({len(payload)} bytes); answer: a tool call with usage."
    )
    section.notes.append(
        "The server sets TCP_NODELAY as real ones do; without it the SDK (two writes per request) "
        "meets delayed ACKs and waits ~40 ms per call, which would be the server's fault, not the client's."
    )
