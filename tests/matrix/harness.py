"""Run part of this suite under a newer Python, inside a test-runner container.

Why a container: the host has one Python (3.11) and none can be downloaded here, but
Debian's newer suites ship newer ones (trixie: 3.13, testing, i.e. forky: 3.14). So the runner image
is that suite's own python3, debootstrapped offline by images/python/build-base.sh (as
the python image's base is), plus a venv filled from a wheelhouse that the host
downloads for that Python with pip. The container is a test harness, not a sandbox: it
runs as root and reaches the host's engine through the engine socket, mounted in, so
every sandbox the inner tests open is a real sibling container on the same engine.

Host paths: the engine resolves bind-mount sources on the host, so everything an inner
test may bind-mount (its tmp dirs) and the checkout itself are mounted at the SAME path
inside as outside. The checkout is mounted read-only: the inner run writes nothing there.

Images are tagged by a hash of what they are made of (build-base.sh, the suite, the
Dockerfile, the requirement lines), so a CI run builds each once and reruns reuse it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import docker

REPO = Path(__file__).resolve().parents[2]
CONTEXT = Path(__file__).resolve().with_name("image")
BUILD_BASE = REPO / "images" / "python" / "build-base.sh"
#: Python minor version -> the Debian suite whose python3 it is. Debian testing is forky
#: (3.14) today; it is named "testing" because the host's debootstrap (bookworm's) has no
#: script for forky. When testing moves on, the matrix's version check says so.
SUITES = {"3.13": "trixie", "3.14": "testing"}
HARNESS_REPO = "pygent-matrix/python"
LABEL = "io.pygent.test-harness"
#: Seconds each Python's steps took, for the run's closing summary (conftest.py).
TIMES: dict[str, dict[str, float]] = {v: {} for v in SUITES}
_debootstrap_lock = threading.Lock()


def requirements() -> list[str]:
    """What the runner venv needs: the package's dependencies, its test extra, its build backend, pip.

    ``editables`` is what hatchling asks for to build this package editable (its
    force-included images/ folder rules out a plain path file); without build isolation
    it has to be there already.
    """
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    project = meta["project"]
    return ["pip", *meta["build-system"]["requires"], "editables", *project["dependencies"],
            *project["optional-dependencies"]["test"]]


def image_tag(version: str) -> str:
    """The runner image's tag for VERSION: a hash of everything it is built from."""
    h = hashlib.sha256()
    for part in (SUITES[version].encode(), BUILD_BASE.read_bytes(), (CONTEXT / "Dockerfile").read_bytes(),
                 "\n".join(requirements()).encode()):
        h.update(hashlib.sha256(part).digest())
    return f"{HARNESS_REPO}:{version}-{h.hexdigest()[:12]}"


def _base_tag(suite: str) -> str:
    return f"pygent-matrix/debian-{suite}:{hashlib.sha256(BUILD_BASE.read_bytes()).hexdigest()[:12]}"


def debian_base(suite: str) -> str:
    """The suite's debootstrapped base (build-base.sh; once per engine: its tag is a hash), for
    the runner images and the other test images built on a newer Debian (support/images.py).

    Raises AssertionError with debootstrap's output when it fails.
    """
    base = _base_tag(suite)
    with _debootstrap_lock:  # one debootstrap at a time: they share one .deb cache
        r = subprocess.run(["bash", str(BUILD_BASE), base, suite], capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=900)
    assert r.returncode == 0, f"debootstrap of {suite} failed:\n{r.stderr[-3000:]}"
    return base


def _exists(client: "docker.DockerClient", ref: str) -> bool:
    from docker.errors import ImageNotFound

    try:
        client.images.get(ref)
        return True
    except ImageNotFound:
        return False


def ensure_image(client: "docker.DockerClient", version: str) -> str:
    """Build (once) and return the runner image for VERSION.

    Raises AssertionError with the failing step's output when debootstrap, the
    wheelhouse download or the image build fails.
    """
    tag = image_tag(version)
    if not _exists(client, tag):
        _build(client, version, tag)
    return tag


def _build(client: "docker.DockerClient", version: str, tag: str) -> None:
    """The suite's debootstrapped base (build-base.sh), the wheelhouse for VERSION, then TAG on both.

    Raises AssertionError (the failing step's output) when a step fails.
    """
    suite = SUITES[version]
    base = debian_base(suite)
    with tempfile.TemporaryDirectory(prefix="pygent-matrix-") as tmp:
        ctx = Path(tmp)
        shutil.copy(CONTEXT / "Dockerfile", ctx / "Dockerfile")
        wheels = ctx / "wheels"
        wheels.mkdir()
        reqs = requirements()
        (wheels / "requirements.txt").write_text("\n".join(reqs) + "\n")
        r = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--dest", str(wheels),
                            "--only-binary=:all:", "--python-version", version, *reqs],
                           capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=900)
        assert r.returncode == 0, f"pip download for Python {version} failed:\n{r.stderr[-3000:]}"
        log: list[str] = []
        image_id = None
        for chunk in client.api.build(path=str(ctx), tag=tag, buildargs={"BASE": base}, rm=True, forcerm=True,
                                      pull=False, decode=True, network_mode="none", labels={LABEL: "python-matrix"}):
            log.extend(str(chunk.get("stream") or chunk.get("error") or "").splitlines())
            assert "error" not in chunk, f"building {tag} failed:\n" + "\n".join(log[-40:])
            if isinstance(chunk.get("aux"), dict) and chunk["aux"].get("ID"):
                image_id = chunk["aux"]["ID"]
        assert image_id and _exists(client, tag), f"building {tag} made no image:\n" + "\n".join(log[-40:])


def _engine_mounts() -> tuple[list[str], dict[str, str], str]:
    """Binds, environment and network mode that give the runner the host's engine."""
    host = os.environ.get("DOCKER_HOST", "")
    env = {k: v for k, v in os.environ.items() if k in ("DOCKER_HOST", "PYGENT_BACKEND", "CI")}
    if not host or host.startswith("unix://"):
        sock = host.removeprefix("unix://") or "/var/run/docker.sock"
        return [f"{sock}:{sock}"], env, "none"  # a unix socket needs no network at all
    return [], env, "host"  # tcp:// (loopback): the host's network namespace reaches it


def _git_dir_binds() -> list[str]:
    """A worktree's .git file points into the main checkout's .git: mount that too (read-only)."""
    r = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--path-format=absolute", "--git-common-dir"],
                       capture_output=True, text=True)
    common = Path(r.stdout.strip()) if r.returncode == 0 else None
    if common is None or common.is_relative_to(REPO):
        return []
    return [f"{common}:{common}:ro"]


@dataclass
class Step:
    """One command's outcome inside the runner."""

    cmd: str
    code: int
    output: str
    seconds: float
    summarized: bool = False  # output is already the failing parts' summaries (Step.join)
    log: str = ""  # where the whole output is kept

    @classmethod
    def join(cls, steps: "list[Step]") -> "Step":
        """Several steps as one: failed if any failed, with each one's output in turn."""
        failed = [s for s in steps if s.code != 0]
        return cls(" ; ".join(s.cmd for s in steps), failed[0].code if failed else 0,
                   "\n\n".join(s.summary() for s in failed) if failed else "\n".join(s.output for s in steps),
                   sum(s.seconds for s in steps), summarized=bool(failed))

    def summary(self, keep: int = 200) -> str:
        """What a reader needs from the inner run: its failures and errors and its own summary lines.

        pytest's output from its first FAILURES/ERRORS section on (else the tail), at most
        KEEP lines: the head and the tail of a longer one, the cut marked.
        """
        if self.summarized:
            return self.output
        out = self.output.splitlines()
        marks = ("= FAILURES =", "= ERRORS =", "short test summary info")
        start = next((i for i, line in enumerate(out) if any(m in line for m in marks)), max(0, len(out) - keep))
        part = out[start:]
        if len(part) > keep:
            part = part[: keep // 2] + [f"[... {len(part) - keep} lines cut ...]"] + part[-keep // 2:]
        where = f", full output in {self.log}" if self.log else ""
        return f"$ {self.cmd}\n(exit {self.code} after {self.seconds:.0f}s{where})\n" + "\n".join(part)


class Runner:
    """A long-lived runner container for one Python: the checkout installed editable, steps run by exec."""

    def __init__(self, client: "docker.DockerClient", tag: str, workdir: Path) -> None:
        self.client, self.workdir = client, workdir
        binds, env, network = _engine_mounts()
        binds += [f"{REPO}:{REPO}:ro", *_git_dir_binds(), f"{workdir}:{workdir}"]
        if Path("/usr/bin/docker").is_file():  # tests that shell out to the docker CLI
            binds.append("/usr/bin/docker:/usr/bin/docker:ro")
        (workdir / "tmp").mkdir(parents=True, exist_ok=True)
        (workdir / "home").mkdir(exist_ok=True)
        env |= {"TMPDIR": str(workdir / "tmp"), "HOME": str(workdir / "home")}
        api = client.api
        # The runner lives exactly as long as this process: its main process reads the stdin
        # this process holds attached, so the runner exits (and the engine removes it) when
        # that stream closes, even if this process is SIGKILLed before close().
        host_config = api.create_host_config(binds=binds, network_mode=network, init=True, auto_remove=True)
        self.id = api.create_container(tag, command=["cat"], stdin_open=True, environment=env,
                                       working_dir=str(REPO), host_config=host_config,
                                       labels={LABEL: "runner"})["Id"]
        self._stdin = None
        self._steps = 0
        try:
            self._stdin = api.attach_socket(self.id, params={"stdin": 1, "stream": 1})
            api.start(self.id)
            install = self.run(f"pip install -q --no-deps --no-build-isolation -e {REPO}")
            assert install.code == 0, install.summary()
        except BaseException:
            self.close()
            raise

    def run(self, cmd: str, timeout: float = 600) -> Step:
        """Run CMD (a shell line) in the runner; its combined output and exit code.

        The whole step is killed at TIMEOUT (the runner's `timeout`), so a hang is a failure,
        not a hang. The output goes to a log file in the shared work dir (kept there for a
        reader) rather than down the exec stream: a step may print nothing for longer than
        the client's read timeout.
        """
        api = self.client.api
        started = time.monotonic()
        self._steps += 1
        log = self.workdir / f"step-{self._steps}.log"
        line = f'timeout -k 10 {int(timeout)} sh -c "$0" >{log} 2>&1'
        exec_id = api.exec_create(self.id, ["sh", "-c", line, cmd], workdir=str(REPO))["Id"]
        api.exec_start(exec_id, detach=True)
        deadline = started + timeout + 60  # `timeout` ends it long before, unless the runner itself is stuck
        while (info := api.exec_inspect(exec_id))["Running"] or info["ExitCode"] is None:
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
        output = log.read_text(errors="replace") if log.exists() else ""
        code = info["ExitCode"] if info["ExitCode"] is not None else -1
        return Step(cmd, code, output, time.monotonic() - started, log=str(log))

    def pytest(self, *args: str, timeout: float = 600) -> Step:
        """The inner pytest on ARGS: tmp dirs under the shared work dir, no cache written to the checkout."""
        base = self.workdir / "basetemp"
        return self.run(f"python -m pytest -p no:cacheprovider --tb=short --basetemp={base} -q {' '.join(args)}", timeout)

    def close(self) -> None:
        from docker.errors import APIError

        if self._stdin is not None:
            self._stdin.close()
        try:
            self.client.api.remove_container(self.id, force=True)
        except APIError:
            pass  # already gone (auto-removed), or being removed
