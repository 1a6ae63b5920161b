"""The system prompt describes the sandbox's real network (issue 25): none, an allowlist, or full."""

from __future__ import annotations

from pygent import Agent
from pygent.sandbox import SandboxPolicy


class _Unused:
    """A model that is never called: only the prompt is read."""


def prompt(policy: SandboxPolicy) -> str:
    agent = Agent(model=_Unused(), policy=policy)
    try:
        return agent.system_msg
    finally:
        agent.runtime.cleanup()


def test_no_network_says_so():
    text = prompt(SandboxPolicy())
    assert "with no network access" in text and "127.0.0.1" in text


def test_an_allowlist_names_its_hosts_and_says_others_are_refused():
    text = prompt(SandboxPolicy(network=["api.example.test:443", "*.pkg.test"]))
    assert "no network access" not in text
    assert "only to these hosts" in text and "*.pkg.test, api.example.test:443" in text and "refused" in text


def test_full_network_says_so():
    text = prompt(SandboxPolicy(network=True))
    assert "with full network access" in text and "no network access" not in text
