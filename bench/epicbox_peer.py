"""epicbox 1.1 itself, as a row beside ours: its own venv, made by the bench, driven from a child.

Why a child in its own venv: epicbox pins its own docker-py and structlog; it must
not change what pygent runs with. The venv lives under the user's cache, keyed by
the version, so a second bench run reuses it. epicbox uses the locally built
bundled python image (no registry), as a non-root user, with no network, as its
docs recommend for untrusted code.

The child (this file run by the venv's python) reads one line per round from
stdin ("16" = open that many at once) and answers one JSON line:
{"wall": seconds, "each": [ms, ...], "ok": runs whose output was right}.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

VERSION = "1.1"


def venv_python() -> Path:
    """The python of a venv with epicbox VERSION.* installed, made on first use.

    Raises: RuntimeError (venv or pip failed), with pip's last lines.
    """
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pygent-runner" / "bench" / f"epicbox-{VERSION}-urllib3-1"
    py = root / "bin" / "python"
    if (root / ".installed").exists() and py.exists():
        return py
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(root)], check=True, capture_output=True)
    # epicbox 1.1 predates urllib3 2 (it passes Retry(method_whitelist=...), removed in 2.0).
    got = subprocess.run([str(py), "-m", "pip", "install", "-q", f"epicbox=={VERSION}.*", "urllib3<2"],
                         capture_output=True, text=True)
    if got.returncode != 0:
        raise RuntimeError(f"pip install epicbox=={VERSION}.* failed: {got.stderr.strip()[-300:]}")
    (root / ".installed").write_text(VERSION)
    return py


class Peer:
    """The epicbox child: one round per call."""

    def __init__(self, image: str) -> None:
        self.proc = subprocess.Popen([str(venv_python()), __file__, image], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def round(self, n: int) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the epicbox child exited")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _child(image: str) -> None:
    """Runs in epicbox's venv: N threads, each epicbox.run('echo hi') once, per round."""
    import logging
    from concurrent.futures import ThreadPoolExecutor

    import epicbox

    logging.disable(logging.CRITICAL)  # its structlog lines would cost time and flood stderr
    docker_url = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    epicbox.configure(profiles=[epicbox.Profile("python", image, user="1000:1000")], docker_url=docker_url)

    def one(_: int) -> tuple[float, bool]:
        t0 = time.perf_counter()
        result = epicbox.run("python", "echo hi", limits={"cputime": 10, "memory": 512})
        return (time.perf_counter() - t0) * 1e3, result.get("stdout") == b"hi\n"

    one(0)  # warm docker-py's imports and connection pool
    for line in sys.stdin:
        n = int(line)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=n) as ex:
            got = list(ex.map(one, range(n)))
        wall = time.perf_counter() - t0
        print(json.dumps({"wall": wall, "each": [ms for ms, _ in got], "ok": sum(ok for _, ok in got)}), flush=True)


if __name__ == "__main__":
    _child(sys.argv[1])
