"""Section 3: `pygent-runner exec -- true` as a whole process, against `docker run --rm`.

The warm-up runs leave exec's remembered create body (cli/exec_cache.py) in place,
so the main rows are what a user sees from the second run of a configuration on;
the "first run" row gives each run an empty cache directory (the full path).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ..context import MIN_IMAGE, Ctx
from ..core import Row, Section, Target, percentile, timed

DOCKER_RUN = ["docker", "run", "--rm", "--network", "none", MIN_IMAGE, "true"]


def _run(ctx: Ctx, argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    ctx.child_pids.add(proc.pid)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _probe(ctx: Ctx, argv: list[str]) -> str | None:
    """None when argv works, else why not (for an n/a row)."""
    res = _run(ctx, argv)
    if res.returncode == 0:
        return None
    text = (res.stderr or res.stdout).decode("utf-8", "replace").strip().splitlines()
    return f"`{Path(argv[0]).name} {' '.join(argv[1:])}` exited {res.returncode}: " + (text[-1][:160] if text else "no output")


def run(ctx: Ctx, section: Section) -> None:
    n = ctx.n(12, 2)
    exe = Path(sys.executable).with_name("pygent-runner")
    variants = [
        ("cli_exec", "pygent-runner exec -- true", [str(exe), "exec", "--", "true"]),
        ("cli_exec_minimal", "pygent-runner exec --image minimal -- true", [str(exe), "exec", "--image", "minimal", "--", "true"]),
    ]
    runnable: list[tuple[str, str, list[str]]] = []
    missing: dict[str, str] = {}
    for key, name, argv in variants:
        if not exe.exists():
            missing[key] = f"{exe} is not installed"
            continue
        why = _probe(ctx, argv)
        if why is None:
            _probe(ctx, argv)  # second warm-up: page cache, image caches
            runnable.append((key, name, argv))
        else:
            missing[key] = why
    floor = [sys.executable, "-c", "pass"]
    imports = [sys.executable, "-c", "import pygent.cli"]
    imports_ok = _run(ctx, imports).returncode == 0
    _run(ctx, DOCKER_RUN)

    samples: dict[str, list[float]] = {"docker_run": [], "python_floor": [], "import_cli": [], "cli_exec_cold": []}
    for key, _, _ in runnable:
        samples[key] = []
    cold_cache = tempfile.mkdtemp(prefix="pygent-bench-cache-")
    cold_env = dict(os.environ, XDG_CACHE_HOME=cold_cache)
    for _ in range(n):
        for key, _, argv in runnable:
            ms, res = timed(lambda: _run(ctx, argv))
            if res.returncode != 0:
                raise RuntimeError(f"{' '.join(argv)} failed: {res.stderr.decode()[-300:]}")
            samples[key].append(ms)
        if any(key == "cli_exec" for key, _, _ in runnable):
            shutil.rmtree(cold_cache, ignore_errors=True)
            samples["cli_exec_cold"].append(timed(lambda: _run(ctx, runnable[0][2], cold_env))[0])
        samples["docker_run"].append(timed(lambda: _run(ctx, DOCKER_RUN))[0])
        samples["python_floor"].append(timed(lambda: _run(ctx, floor))[0])
        if imports_ok:
            samples["import_cli"].append(timed(lambda: _run(ctx, imports))[0])

    vs = {"÷ docker run CLI": "docker_run"}
    for key, name, _ in variants:
        if key in missing:
            section.add(Row(key, name, na=missing[key]))
        else:
            row = section.add(Row(key, name, samples[key], vs=dict(vs)))
            if samples["docker_run"]:
                # exec -- true (python image) at most 0.8x, exec --image minimal at most 1.0x (issue 10)
                row.extra["p50 ÷ docker run"] = percentile(samples[key], 50) / percentile(samples["docker_run"], 50)
                row.targets = [Target("p50 ÷ docker run", "<=", 0.8 if key == "cli_exec" else 1.0, unit="x")]
    shutil.rmtree(cold_cache, ignore_errors=True)
    if samples["cli_exec_cold"]:
        section.add(Row("cli_exec_cold", "pygent-runner exec -- true, first run of its configuration (full path)", samples["cli_exec_cold"], vs=dict(vs)))
    section.add(Row("docker_run", " ".join(DOCKER_RUN), samples["docker_run"]))
    section.add(Row("python_floor", "python -c pass (interpreter floor)", samples["python_floor"], vs=dict(vs)))
    if imports_ok:
        section.add(Row("import_cli", "python -c 'import pygent.cli' (import cost)", samples["import_cli"], vs=dict(vs)))
    else:
        section.add(Row("import_cli", "python -c 'import pygent.cli'", na="pygent.cli does not import"))
