"""Every sandbox config form the README and the provider's docs show, through a real `inspect_ai.eval`.

Issue 21: `sandbox=("pygent", {...})` ended the eval with `TypeError: unhashable
type: 'dict'` (inspect hashes its sandbox spec, and so our config), while the
provider's own tests opened sandboxes directly. Each case here is a one-sample
task on inspect's `mockllm` model: a solver runs a command in the sandbox, a
scorer checks what it printed (and so that the form's keys took effect), and
after `eval` returns no container of it is left.

inspect_ai versions: the `[inspect]` extra allows >= 0.3.285, and 0.3.285 is also
the newest the package index serves today, so the project venv's copy is both the
lowest and the newest; the version is printed in the test id to keep that visible.
"""

from __future__ import annotations

import inspect_ai
import pytest
from inspect_ai import Task, eval
from inspect_ai.dataset import Sample
from inspect_ai.scorer import CORRECT, INCORRECT, Score, Target, accuracy, scorer
from inspect_ai.solver import Generate, TaskState, solver
from inspect_ai.util import sandbox

from pygent.inspect_sandbox import PygentSandboxConfig
from pygent.sandbox import lifecycle

#: The sandbox's memory limit in bytes, on cgroup v2 or v1.
MEMORY_LIMIT = "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null; true"

#: (id, sandbox= as a user writes it, command, what its output must contain)
FORMS = [
    ("name-only", "pygent", "python3 -c 'print(6 * 7)'", "42"),
    ("dict-image", ("pygent", {"image": "minimal"}), "test -e /usr/bin/python3 || echo no-python", "no-python"),
    ("dict-image-runtime", ("pygent", {"image": "minimal", "runtime": "runsc"}), "cat /proc/version", "4.4.0"),
    (
        "dict-image-runtime-policy",
        ("pygent", {"image": "python", "runtime": "runsc", "policy": {"memory": "1g"}}),
        "cat /proc/version; python3 -c 'print(6 * 7)'",
        "42",
    ),
    ("dict-policy", ("pygent", {"policy": {"memory": "256m"}}), MEMORY_LIMIT, "268435456"),
    (
        "config-model",
        ("pygent", PygentSandboxConfig(image="minimal", policy={"memory": "256m"})),
        MEMORY_LIMIT + "; test -e /usr/bin/python3 || echo no-python",
        "268435456\nno-python",
    ),
]


@solver
def run_in_sandbox(cmd: str):
    async def solve(state: TaskState, generate: Generate) -> TaskState:
        result = await sandbox().exec(["sh", "-c", cmd])
        state.metadata["stdout"] = result.stdout
        state.metadata["returncode"] = result.returncode
        return state

    return solve


@scorer(metrics=[accuracy()])
def output_contains():
    async def score(state: TaskState, target: Target) -> Score:
        out = state.metadata.get("stdout", "")
        ok = state.metadata.get("returncode") == 0 and target.text in out
        return Score(value=CORRECT if ok else INCORRECT, explanation=out[:500])

    return score


def _ours() -> set[str]:
    """Our session's containers, warm pool members aside (the provider never uses the pool)."""
    from pygent.sandbox.engine import get_client

    listed = get_client().api.containers(all=True, filters={"label": f"{lifecycle.LABEL_SESSION}={lifecycle.SESSION_ID}"})
    return {c["Id"] for c in listed if lifecycle.LABEL_POOLED not in (c.get("Labels") or {})}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("form, cmd, expected", [f[1:] for f in FORMS], ids=[f"{f[0]}-inspect-{inspect_ai.__version__}" for f in FORMS])
def test_a_config_form_runs_through_a_real_eval(form, cmd, expected, tmp_path, docker_client):
    before = _ours()
    task = Task(
        dataset=[Sample(input="run it", target=expected)],
        solver=run_in_sandbox(cmd),
        scorer=output_contains(),
        sandbox=form,
    )
    logs = eval(task, model="mockllm/model", log_dir=str(tmp_path), display="none")
    log = logs[0]
    assert log.status == "success", log.error
    sample = log.samples[0]
    assert sample.scores and next(iter(sample.scores.values())).value == CORRECT, sample.scores
    # Nothing left: the provider's sample_cleanup removed the sandbox before eval returned.
    assert not (_ours() - before), "the eval left a container behind"
