"""Small helpers shared by the sandbox tests (real engine, no mocks)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from support.engine import container_exists, wait_gone  # noqa: F401  (re-exported for the sandbox tests)

IMAGES = ("python", "minimal")
RUNTIMES = ("crun", "runc", "runsc")  # crun: our default where the engine has it
COMBOS = [(image, runtime) for image in IMAGES for runtime in RUNTIMES]
COMBO_IDS = [f"{image}-{runtime}" for image, runtime in COMBOS]

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def volume_names(api, cid: str) -> list[str]:
    """The sandbox's own volumes (/workspace, /tmp): not the shared read-only tooling volume."""
    return [m["Name"] for m in api.inspect_container(cid)["Mounts"]
            if m.get("Type") == "volume" and m.get("Destination") != "/opt/pygent"]


def volume_exists(api, name: str) -> bool:
    from docker.errors import NotFound

    try:
        api.inspect_volume(name)
        return True
    except NotFound:
        return False


#: Prints the command line of every process in the sandbox, one per line (bash, any image).
PS = 'for d in /proc/[0-9]*; do c=$(tr "\\0" " " < $d/cmdline 2>/dev/null); [ -n "$c" ] && echo "${d#/proc/} $c"; done'


def kill_processes(sb, *prefixes: str) -> int:
    """SIGKILL the sandbox's processes whose command line starts with one of `prefixes`; how many."""
    cases = "|".join(f'"{p}"*' for p in prefixes)
    r = sb.exec(
        'for d in /proc/[0-9]*; do c=$(tr "\\0" " " < $d/cmdline 2>/dev/null); '
        f'case "$c" in {cases}) kill -9 ${{d#/proc/}} && echo killed;; esac; done',
        timeout=20,
    )
    return r.stdout.count(b"killed")


def processes(sb) -> str:
    r = sb.exec(PS, timeout=20)
    assert r.exit_code == 0, r
    return r.stdout.decode()


def run_child(code: str, **popen) -> subprocess.Popen:
    """Start `code` in a fresh Python (the venv's) with text stdout."""
    return subprocess.Popen(
        [PYTHON, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(REPO),
        **popen,
    )
