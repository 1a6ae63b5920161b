"""The package's import architecture holds (pyproject.toml [tool.importlinter], checked by `lint-imports`).

Layers cli -> agent -> models -> openai_compat -> sandbox -> settings -> errors;
no import cycle anywhere under pygent; nothing above sandbox/ imports a Docker
module. The second test shows each contract can fail: it breaks one in a copy
of the package and expects `lint-imports` to say so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(project: Path) -> subprocess.CompletedProcess[str]:
    """Run lint-imports on `project` (its pyproject.toml, its runner/pygent), without a cache."""
    env = {**os.environ, "PYTHONPATH": str(project / "runner"), "COLUMNS": "200"}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo", str(project / "pyproject.toml")],
                          cwd=project, env=env, capture_output=True, text=True, timeout=120)


def test_the_import_contracts_are_kept():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


# case -> (module changed, import added, contract that must break, what the report must name)
BREAKS = {
    "a cycle": ("agent/tasks.py", "from . import loop", "No import cycle anywhere under pygent", "- .tasks -> .loop"),
    "a layer imported upwards": ("sandbox/result.py", "from .. import models", "Layers: cli, agent",
                                 "pygent.sandbox.result -> pygent.models"),
    "docker-py above sandbox": ("models.py", "import docker", "Nothing above sandbox imports an engine module",
                                "pygent.models -> docker"),
    "the Docker backend from the agent": ("agent/runtime.py", "from ..sandbox import docker",
                                          "Nothing above sandbox imports an engine module",
                                          "pygent.agent.runtime -> pygent.sandbox.docker"),
    "the Podman backend from the CLI": ("cli/gc.py", "from ..sandbox import podman",
                                        "Nothing above sandbox imports an engine module",
                                        "pygent.cli.gc -> pygent.sandbox.podman"),
}


@pytest.mark.parametrize("case", list(BREAKS))
def test_a_broken_contract_fails_the_check(case, tmp_path):
    module, line, contract, offence = BREAKS[case]
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(ROOT / "runner" / "pygent", tmp_path / "runner" / "pygent", ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "runner" / "pygent" / module
    target.write_text(target.read_text() + f"\n{line}  # added by the test\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    broken = [ln for ln in result.stdout.splitlines() if "BROKEN" in ln]
    assert any(ln.startswith(contract) for ln in broken), result.stdout
    assert offence in result.stdout  # the report names the offending import
