"""What the model (and the `run` live view and `--json` transcript) reads has no control
character but \\n and \\t: one test per class, then end to end through a real sandbox and CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pygent import Agent
from pygent.agent.format import clean_text
from support.scripted import Script, call, say

ROOT = Path(__file__).resolve().parents[2]
#: Anything a terminal would act on, but newline and tab.
CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def test_csi_sequences_are_removed_whole():
    assert clean_text(b"\x1b[1;31mred\x1b[0m \x1b[2J\x1b[?25lx") == "red x"


def test_osc_sequences_are_removed_with_bel_or_st():
    assert clean_text(b"a\x1b]0;window title\x07b\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\c") == "ablinkc"


def test_single_character_escapes_are_removed():
    assert clean_text(b"\x1bcreset\x1b7saved\x1b8\x1b(Bdone\x1bM") == "resetsaveddone"


def test_c0_controls_and_del_are_removed():
    assert clean_text(b"a\x00\x01\x07\x08\x0b\x0c\x0e\x1f\x7fb\tc\n") == "ab\tc\n"


def test_c1_controls_are_removed_including_8_bit_csi():
    text = "a\u0085b\u009b31mc\u009fd\u0080e".encode()
    assert clean_text(text) == "abcde"


def test_crlf_becomes_lf_and_a_lone_cr_cannot_hide_earlier_text():
    assert clean_text(b"one\r\ntwo\r\n") == "one\ntwo\n"
    out = clean_text(b"safe\rEVIL")
    assert "safe" in out and "EVIL" in out and "\r" not in out


def test_bidi_controls_are_made_visible():
    out = clean_text("access = \u202eresu\u2066x\u2069".encode())
    assert out == "access = <U+202E>resu<U+2066>x<U+2069>"


def test_an_unterminated_string_escape_does_not_swallow_the_rest():
    assert clean_text(b"before\x1b]not closed after") == "beforenot closed after"


def test_the_model_reads_clean_text_from_a_real_command(agents):
    nasty = r"printf 'a\033[31mb\033]0;t\007c\033cd\001e\rf\302\2331mg\342\200\256h\177i\r\n'"
    ag = Agent(model=Script(say(call("bash", {"cmd": nasty}))))
    agents.append(ag)
    ag.step("go")
    result = ag.history[-1]["content"]
    assert not CONTROLS.search(result), repr(result)
    assert "abcde\nfg<U+202E>hi" in result, repr(result)


MODEL = textwrap.dedent('''
    from pygent import openai_compat

    class Nasty:
        """Its own text carries escapes; its command prints them."""
        def chat(self, messages, model, tools):
            if any(m.get("role") == "tool" for m in messages):
                return openai_compat.Message(role="assistant", content="done \\x1b[2Jwiped\\rX",
                    tool_calls=[openai_compat.ToolCall(id="s", type="function",
                        function=openai_compat.ToolCallFunction(name="stop", arguments="{}"))])
            return openai_compat.Message(role="assistant", content="\\x1b]0;pwned\\x07look\\u202e", tool_calls=[
                openai_compat.ToolCall(id="b", type="function", function=openai_compat.ToolCallFunction(
                    name="bash", arguments='{"cmd": "printf \\'x\\\\\\\\033cy\\\\\\\\rz\\\\\\\\001\\\\\\\\n\\'"}'))])
''')


@pytest.mark.parametrize("as_json", [True, False])
def test_the_run_live_view_and_json_transcript_carry_no_control_characters(tmp_path, as_json):
    model = tmp_path / "nasty.py"
    model.write_text(MODEL)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PYGENT_"))}
    argv = [sys.executable, "-m", "pygent.cli", "run", "--custom-model", f"{model}:Nasty", "go"] + (["--json"] if as_json else [])
    out = subprocess.run(argv, capture_output=True, text=True, env=dict(env, COLUMNS="120", TERM="dumb"), timeout=100, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    if as_json:
        transcript = json.loads(out.stdout)
        texts = [m.get("content") or "" for m in transcript["history"]]
        assert any("xy\nz" in t for t in texts), texts  # the command's output, cleaned
        assert any("look<U+202E>" in t for t in texts), texts  # the model's own text, cleaned
        for text in texts:
            assert not CONTROLS.search(text), repr(text)
    else:
        assert "look" in out.stdout and "wiped" in out.stdout
        assert not CONTROLS.search(out.stdout.replace("\n", "")), repr(out.stdout)
