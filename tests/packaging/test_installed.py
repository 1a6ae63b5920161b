"""The installed package, not the checkout: build the sdist and the wheel (the wheel from
the sdist, as `python -m build` does), install the wheel into a fresh venv, and use it
from a directory that has nothing of the repository.

The fresh venv gets pygent only from the wheel (--no-deps --no-index); its
dependencies come from the test venv's site-packages, added as a plain path line
(a .pth path line does not run that folder's own .pth files, so the editable
checkout stays invisible). Each test checks that pygent really came from the venv.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

from pygent.sandbox import images

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


class Installed:
    def __init__(self, root: Path, wheel: Path, sdist: Path, venv: Path, cwd: Path) -> None:
        self.root, self.wheel, self.sdist, self.venv, self.cwd = root, wheel, sdist, venv, cwd
        self.python = venv / "bin" / "python"
        self.cli = venv / "bin" / "pygent-runner"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PYGENT_", "OPENAI_", "VIRTUAL_ENV", "PYTHON"))}
        env["PATH"] = f"{self.venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
        env["XDG_CACHE_HOME"] = str(self.root / "cache")  # a first-time user's (empty) exec cache
        return env

    def run(self, *cmd: str | Path, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(c) for c in cmd], cwd=self.cwd, env=self.env(), capture_output=True,
                              stdin=subprocess.DEVNULL, timeout=timeout)

    def python_json(self, code: str) -> object:
        r = self.run(self.python, "-c", code)
        assert r.returncode == 0, r.stderr.decode()
        return json.loads(r.stdout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("installed")
    dist = root / "dist"
    r = subprocess.run([sys.executable, "-m", "build", "--outdir", str(dist), str(REPO)],
                       capture_output=True, stdin=subprocess.DEVNULL, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr).decode()[-3000:]
    (wheel,) = dist.glob("pygent_runner-*.whl")
    (sdist,) = dist.glob("pygent_runner-*.tar.gz")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                        "--no-deps", "--no-index", str(wheel)], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    site = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, check=True, text=True).stdout.strip()
    (Path(site) / "_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    cwd = root / "elsewhere"
    cwd.mkdir()
    return Installed(root, wheel, sdist, venv, cwd)


def _package_relative(path: Path) -> str:
    """Where a file the checkout's code opens lives in the wheel (fails for a file outside the package)."""
    path = path.resolve()
    if path.is_relative_to(images.CHECKOUT_IMAGES):
        return "pygent/_images/" + path.relative_to(images.CHECKOUT_IMAGES).as_posix()
    runner = REPO / "runner"
    assert path.is_relative_to(runner), f"the package opens {path}, which is outside runner/ and images/"
    return path.relative_to(runner).as_posix()


def _runtime_files() -> list[Path]:
    """Every file the package reads at run time: each bundled context (server.py included), its build script."""
    assert images.images_dir() == images.CHECKOUT_IMAGES, "run this test from a checkout"
    names = images.bundled_names()
    assert {"python", "minimal"} <= set(names)
    files = [p for name in names for p in images.context_paths(name)]
    assert images.images_dir() / "python" / "build-base.sh" in files
    return files


def test_wheel_and_sdist_carry_every_file_the_package_reads_at_run_time(installed):
    in_wheel = set(zipfile.ZipFile(installed.wheel).namelist())
    with tarfile.open(installed.sdist) as tar:
        top = tar.getnames()[0].split("/")[0]
        in_sdist = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    missing_wheel = [p for p in _runtime_files() if _package_relative(p) not in in_wheel]
    missing_sdist = [p for p in _runtime_files() if p.relative_to(REPO).as_posix() not in in_sdist]
    assert not missing_wheel, f"{installed.wheel.name} lacks {missing_wheel}"
    assert not missing_sdist, f"{top} lacks {missing_sdist}"
    # Everything tracked under images/ ships, whatever is added there later.
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files", "images"], capture_output=True, text=True, check=True)
    for rel in tracked.stdout.split():
        assert "pygent/_images/" + rel.removeprefix("images/") in in_wheel, rel


def test_installed_package_finds_its_own_images_not_the_checkout(installed):
    info = installed.python_json(
        "import json, pygent\n"
        "from pygent.sandbox import images\n"
        "names = images.bundled_names()\n"
        "print(json.dumps({'file': pygent.__file__, 'version': pygent.__version__, 'dir': str(images.images_dir()),\n"
        "  'tags': {n: images.image_tag(n) for n in names},\n"
        "  'files': [str(p) for n in names for p in images.context_paths(n)]}))\n"
    )
    venv = str(installed.venv)
    assert info["file"].startswith(venv) and info["dir"].startswith(venv), info
    assert all(f.startswith(venv) and Path(f).is_file() for f in info["files"]), info["files"]
    # Same version, same bytes and modes (build-base.sh stays executable): the same tags as the checkout's.
    assert info["tags"] == {n: images.image_tag(n) for n in images.bundled_names()}
    from importlib.metadata import version

    assert info["version"] == version("pygent-runner")
    # requires-python is honest: it admits the interpreter this suite (CI) runs on
    from packaging.specifiers import SpecifierSet

    with zipfile.ZipFile(installed.wheel) as whl:
        meta = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
        requires = next(line.split(":", 1)[1].strip() for line in whl.read(meta).decode().splitlines()
                        if line.startswith("Requires-Python:"))
    assert SpecifierSet(requires).contains(f"{sys.version_info.major}.{sys.version_info.minor}"), requires
    r = installed.run(installed.cli, "--version")
    assert r.returncode == 0 and r.stdout.decode().strip() == f"pygent-runner {info['version']}"


def test_installed_exec_and_images_list_from_an_unrelated_directory(installed):
    r = installed.run(installed.cli, "exec", "--", "sh", "-c", "echo hi; pwd")
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout == b"hi\n/workspace\n"
    r = installed.run(installed.cli, "images", "list")
    assert r.returncode == 0, r.stderr.decode()
    lines = r.stdout.decode().splitlines()
    for name in ("python", "minimal"):
        row = next(line for line in lines if images.image_tag(name) in line)
        assert row.split()[0] == name and row.count(" yes ") == 2, r.stdout.decode()  # built, current
        assert "MB" in row or "kB" in row  # its size


def test_installed_agent_demo_runs_outside_the_checkout(installed):
    for name in ("demo.py", "demo_model.py"):
        shutil.copy(EXAMPLES / name, installed.cwd / name)
    r = installed.run(installed.python, installed.cwd / "demo.py", timeout=180)
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()
    assert "primes below" in out, out


def test_installed_seed_snippet_runs_a_tool_in_a_sandbox(installed):
    shutil.copy(EXAMPLES / "bash_model.py", installed.cwd / "bash_model.py")
    r = installed.run(installed.python, installed.cwd / "bash_model.py")
    assert r.returncode == 0, r.stderr.decode()
    assert "hi from tool" in r.stdout.decode()
