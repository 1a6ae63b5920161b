"""Section: snapshots, forks, resume and changes() on a 100 MB, 10,000-file workspace (issue 24).

The anchor is what a user does without pygent: `docker commit` of a container
holding the same tree in its writable layer, then `docker run` from the
committed image. Both sides run here, in one run, on the same tree (100 dirs of
100 files of 10,000 random bytes, made by the same script).
"""

from __future__ import annotations

import time

from ..context import PY_IMAGE, Ctx, run_cmd
from ..core import Row, Section, Target, percentile, timed

MAKE_TREE = (
    "python3 -c \"import os\nfor d in range(100):\n os.makedirs('%(root)s/t/%%d' %% d)\n"
    " for f in range(100):\n  open('%(root)s/t/%%d/%%d' %% (d, f), 'wb').write(os.urandom(10000))\""
)
CHANGE_100 = "for d in {0..9}; do for f in {0..9}; do echo changed >> /workspace/t/$d/$f; done; done"


def run(ctx: Ctx, section: Section) -> None:
    from pygent.sandbox import SandboxPolicy, open_sandbox

    n = ctx.n(5, 2)
    name = f"pygent-bench-commit-{int(time.time())}"
    committed = f"pygent-bench-committed:{int(time.time())}"
    commits, runs = [], []
    try:
        run_cmd(["docker", "run", "-d", "--name", name, "--network", "none", "--entrypoint", "sleep", PY_IMAGE, "900"])
        made = run_cmd(["docker", "exec", "-u", "0", name, "sh", "-c", MAKE_TREE % {"root": "/data"}], timeout=300)
        if made.returncode != 0:
            section.error = f"could not make the anchor's tree: {made.stderr.decode()[-300:]}"
            return
        for _ in range(n):
            ms, out = timed(lambda: run_cmd(["docker", "commit", name, committed], timeout=300))
            commits.append(ms)
            ms, _ = timed(lambda: run_cmd(["docker", "run", "--rm", "--network", "none", "--entrypoint", "true", committed]))
            runs.append(ms)
    finally:
        run_cmd(["docker", "rm", "-f", name])
        run_cmd(["docker", "rmi", "-f", committed])
    section.add(Row("anchor_commit", "docker commit (100 MB, 10,000 files in the writable layer)", commits))
    section.add(Row("anchor_run", "docker run --rm from the committed image", runs))
    both = [a + b for a, b in zip(commits, runs)]
    section.add(Row("anchor_commit_run", "docker commit + docker run", both))

    sb = open_sandbox("python", SandboxPolicy(timeout=300), pool=False)
    try:
        r = sb.exec(MAKE_TREE % {"root": "/workspace"}, timeout=300)
        if r.exit_code != 0:
            section.error = f"could not make the sandbox's tree: {r.stderr.decode()[-300:]}"
            return
        sb.exec("export BENCH=1; cd /workspace/t", shell_state=True)
        snaps = []
        for _ in range(n):
            ms, snap = timed(sb.snapshot)
            snaps.append(ms)
        row = section.add(Row("snapshot", f"Sandbox.snapshot() ({snap.size / 1e6:.0f} MB stream, {len(snap.entries)} entries)", snaps))
        row.extra["p50 ÷ docker commit"] = percentile(snaps, 50) / percentile(commits, 50)
        row.targets = [Target("p50 ÷ docker commit", "<=", 0.5, unit="x")]

        forks = []
        for _ in range(n):
            def fork4():
                made = sb.fork(4)
                for f in made:
                    f.exec("true", shell_state=True)
                return made

            ms, made = timed(fork4)
            forks.append(ms)
            for f in made:
                f.close(wait=False)
        row = section.add(Row("fork4", "Sandbox.fork(4) + first command in each", forks))
        row.extra["p50 ÷ commit + run"] = percentile(forks, 50) / percentile(both, 50)
        row.targets = [Target("p50 ÷ commit + run", "<=", 1.0, unit="x")]

        resumes, unpauses, commands = [], [], []
        api = sb._client  # the raw engine calls, beside ours: the floor the engine sets
        for _ in range(ctx.n(20, 5)):
            api.call("POST", f"/containers/{sb.id}/pause")
            time.sleep(0.05)
            ms, _ = timed(lambda: api.call("POST", f"/containers/{sb.id}/unpause"))
            unpauses.append(ms)
            ms, _ = timed(lambda: sb.exec("true"))
            commands.append(ms)
            sb.pause()
            time.sleep(0.05)
            ms, _ = timed(lambda: sb.exec("true"))
            resumes.append(ms)
        section.add(Row("raw_unpause", "engine API unpause alone (POST /containers/{id}/unpause)", unpauses))
        section.add(Row("first_command", "a command in a running sandbox (exec('true'))", commands))
        section.add(Row("resume_first", "Sandbox paused → exec('true') (resumes by itself)", resumes,
                        targets=[Target("p50", "<=", 10)]))

        sb.exec(CHANGE_100)
        changes = []
        for _ in range(n):
            ms, ch = timed(lambda: sb.changes(snap))
            changes.append(ms)
        section.add(Row("changes", f"Sandbox.changes() with 100 files changed ({len(ch.modified)} modified found)",
                        changes, targets=[Target("p50", "<=", 200)]))
    finally:
        sb.close()
