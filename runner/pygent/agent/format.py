"""What the model reads back from a command: compact, clean text.

Why cleaned: terminal control sequences waste tokens, confuse models and can
hide text from a human reviewing a transcript (`safe\\rEVIL` prints as `EVIL`;
a bidi override reorders what is shown). So the text the model, the live view
and the JSON transcript get carries no control character but newline and tab.
The exit code and the place where output was cut must be unmistakable so the
model does not reason over half a log as if it were whole.
"""

from __future__ import annotations

import re

from typing import TYPE_CHECKING

from ..sandbox.result import ExecResult

if TYPE_CHECKING:
    from ..sandbox.processes import ProcessOutput, ProcessStatus

#: Escape sequences, 7-bit (ESC ...) and 8-bit (C1 introducers), removed whole:
#: string commands (OSC, DCS, SOS, PM, APC) up to BEL/ST (unterminated: only the introducer
#: goes, so a stray byte cannot swallow the rest of a log),
#: CSI with its parameters, and the short ones (ESC c, ESC ( B, ESC 7 ...).
_ESCAPES = re.compile(
    r"(?:\x1b[\]PX^_]|[\x9d\x90\x98\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)"
    r"|(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|\x1b[ -/]*[0-~]?"
)
#: Every control character left but \n and \t: C0, DEL, C1.
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
#: Bidi embeddings, overrides and isolates: shown, not obeyed (they reorder what a reader sees).
_BIDI = re.compile(r"[\u202a-\u202e\u2066-\u2069]")


def clean_str(text: str) -> str:
    """Text safe to show a model or a terminal: only \\n and \\t of the control characters.

    CRLF becomes LF; a lone CR becomes a line break (so it cannot hide what came
    before it); bidi controls become visible as <U+XXXX>.
    """
    text = _ESCAPES.sub("", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROLS.sub("", text)
    return _BIDI.sub(lambda m: f"<U+{ord(m.group()):04X}>", text)


def clean_text(data: bytes) -> str:
    """Command output -> clean_str of it; invalid UTF-8 becomes U+FFFD."""
    return clean_str(data.decode("utf-8", "replace"))


def format_result(result: ExecResult, timeout: float | None = None, memory: str | None = None, idle: float | None = None) -> str:
    """The `bash` tool's answer. Documented in the README ("What the model sees").

        exit code: 1
        stdout:
        ...
        stderr:
        ...
    """
    head = f"exit code: {result.exit_code}"
    if result.handle is not None:
        head = (f"still running (no output for {idle:g}s): moved to the background\nhandle: {result.handle}\n"
                "(process_output / process_status / process_input / process_kill take this handle)")
    elif result.timed_out:
        head += f" (timed out after {timeout:g}s; the command and all its children were killed)" if timeout else " (timed out)"
        if result.state:
            head += "\n[pygent] the shell state from before this command is kept"
    elif result.oom_killed:
        head += f" (killed: out of memory{f', limit {memory}' if memory else ''})"
    parts = [head]
    for name, data in (("stdout", result.stdout), ("stderr", result.stderr)):
        if data:
            text = clean_text(data)
            parts.append(f"{name}:\n{text}" if text.endswith("\n") else f"{name}:\n{text}\n")
    if len(parts) == 1:
        parts.append("(no output)")
    note = state_note(result)
    if note:
        parts.append(note)
    parts.extend(egress_notes(result))
    note = cost_note(result)
    if note:
        parts.append(note)
    return "\n".join(p.rstrip("\n") for p in parts)


#: A command's cost is told to the model when it is worth a line: this long (s), this much CPU (s),
#: this much memory (bytes). Why not always: most commands (ls, cat, grep) cost nothing to speak
#: of, and a line on each would be tokens on every step; a slow or heavy one is what a model
#: should notice (to background it, cut its work, or mind the memory limit).
COST_WORTH = (1.0, 0.5, 100_000_000)


def cost_note(result: ExecResult) -> str | None:
    """`[pygent] cost: 2.3s, cpu 2.1s user + 0.1s sys, peak 535 MB` for a command worth it (COST_WORTH)."""
    if result.cpu_user is None or result.timed_out:  # a timeout's head already says how long
        return None
    cpu = result.cpu_user + (result.cpu_sys or 0.0)
    peak = result.max_rss or 0
    wall, cpu_worth, peak_worth = COST_WORTH
    if result.duration < wall and cpu < cpu_worth and peak < peak_worth:
        return None
    return (f"[pygent] cost: {result.duration:.1f}s, cpu {result.cpu_user:.1f}s user + {result.cpu_sys or 0.0:.1f}s sys, "
            f"peak {peak / 1e6:.0f} MB")


def state_note(result: ExecResult) -> str | None:
    """A line when the shell state could not be saved because it is too large."""
    state = result.state or ""
    if state.startswith("too_large"):
        return f"[pygent] shell state not saved ({state.partition(': ')[2]}): the state from before this command is kept"
    return None


#: How the allowlist is set, named in every refusal note: the policy field, the CLI flag, the setting.
HOW_TO_ALLOW = "network=[...] / --allow-host / PYGENT_ALLOW_HOSTS"


def egress_notes(result: ExecResult) -> list[str]:
    """One line per host the egress proxy refused while the command ran (issue 25).

    Why: the command itself prints whatever its tool makes of a 403 (`Tunnel connection
    failed: 403`); the model needs the host, the reason and how the allowlist is set to
    act on it (ask for the host, or use another). Host names are the client's: cleaned.
    """
    lines = [refusal_note(refusal) for refusal in result.egress_refused]
    if lines and result.egress_refused[-1].get("others"):
        lines.append(f"[pygent] egress refused {result.egress_refused[-1]['others']} more connection(s) to other hosts")
    return lines


def refusal_note(refusal: dict) -> str:
    """The line about one refusal (protocol.Done's egress_refused entry)."""
    return "[pygent] egress refused: " + clean_str(_refusal_text(refusal))


def _refusal_text(refusal: dict) -> str:
    target = f"{refusal.get('host')}:{refusal.get('port')}"
    times = f" ({refusal['count']} connections)" if refusal.get("count", 1) > 1 else ""
    reason = refusal.get("reason")
    if reason == "raw_ip":
        return (f"{target}{times} is a raw IP address; only allowed host names are reachable: "
                f"use the host's name, allowed with {HOW_TO_ALLOW}")
    if reason == "private":
        addresses = ", ".join(refusal.get("addresses") or []) or "?"
        return (f"{target}{times} resolves to a private address ({addresses}), refused unless its range is "
                f"allowed too (e.g. 10.0.0.0/8) with {HOW_TO_ALLOW}")
    if reason == "unresolvable":
        return f"{target}{times} is allowed but the egress proxy cannot resolve it"
    allowed = ", ".join(refusal.get("allowed") or [])
    if refusal.get("more"):
        allowed += f", and {refusal['more']} more"
    return f"{target}{times} is not on the allowlist (allowed: {allowed or 'none'}); allow it with {HOW_TO_ALLOW}"


def format_status(status: "ProcessStatus") -> str:
    """One line about a background command."""
    if status.running:
        what = f"running for {status.seconds:.1f}s"
    elif status.killed:
        what = f"killed (exit code {status.exit_code})"
    else:
        what = f"exited with code {status.exit_code} after {status.seconds:.1f}s"
    return f"handle {status.handle}: {what}, {status.output_bytes} bytes of output: {status.cmd[:80]}"


def format_output(out: "ProcessOutput") -> str:
    """A background command's new output, and the offset to ask from next."""
    lines = [format_status(out.status), f"offset: {out.offset} (pass as since to get only newer output)"]
    if out.lost:
        lines.append(f"[... {out.lost} older bytes no longer kept ...]")
    text = clean_text(out.output.encode("utf-8", "replace"))
    lines.append(text.rstrip("\n") if text else "(no new output)")
    return "\n".join(lines)
