"""The bundled images, built for real on the engine (no mocks, no registry)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import docker
import pytest

from pygent.errors import ConfigError, ImageNotFound
from pygent.sandbox import images

pytestmark = pytest.mark.docker

TAG_RE = re.compile(r"^pygent/(minimal|python):[0-9a-f]{12}$")
CLI = [sys.executable, "-c", "from pygent.cli.images import app; app()"]
#: Every container these tests run carries this label, so the last test can check
#: that none is left (other work on the same engine runs containers of its own).
TEST_LABEL = {"io.pygent.test": f"test_images-{os.getpid()}"}


@pytest.fixture(scope="module")
def client() -> docker.DockerClient:
    c = docker.from_env()
    _remove_left_by_killed_runs(c)
    yield c
    c.close()


def _remove_left_by_killed_runs(c: docker.DockerClient) -> None:
    """A run killed between docker-py's create and start (a CI timeout, a session's end)
    leaves a container in state Created: its pid is in the label, and is gone."""
    for box in c.containers.list(all=True, filters={"label": "io.pygent.test"}):
        owner = box.labels.get("io.pygent.test", "")
        pid = owner.removeprefix("test_images-")
        if owner.startswith("test_images-") and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            box.remove(force=True)


def run(client: docker.DockerClient, image: str, *cmd: str) -> str:
    """Run cmd in a throw-away container with no network; return its stdout."""
    out = client.containers.run(
        image, list(cmd), remove=True, network_mode="none", stdout=True, stderr=False, labels=TEST_LABEL
    )
    return out.decode().strip()


def exit_code(client: docker.DockerClient, image: str, *cmd: str) -> int:
    try:
        run(client, image, *cmd)
    except docker.errors.ContainerError as exc:
        return exc.exit_status
    return 0


@pytest.fixture(scope="module")
def minimal() -> str:
    return images.build_image("minimal", quiet=True)


@pytest.fixture(scope="module")
def python_image() -> str:
    # cold, this debootstraps the Debian base first (about a minute on a fresh machine)
    return images.build_image("python", quiet=True)


@pytest.fixture
def images_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A copy of images/minimal in a temp dir, with PYGENT_IMAGES_DIR pointing at it."""
    original = images.images_dir()
    root = tmp_path / "images"
    shutil.copytree(original / "minimal", root / "minimal")
    images.clear_cache()
    monkeypatch.setenv("PYGENT_IMAGES_DIR", str(root))
    yield root
    monkeypatch.setenv("PYGENT_IMAGES_DIR", str(original))
    images.clear_cache()


# --------------------------------------------------------------------------- minimal


def test_minimal_runs_as_uid_1000_with_bash_and_no_apt(client, minimal):
    assert TAG_RE.match(minimal), minimal
    assert minimal == f"pygent/minimal:{images.context_hash('minimal')}"
    assert run(client, minimal, "id", "-u") == "1000"
    assert run(client, minimal, "id", "-un") == "sandbox"
    assert run(client, minimal, "pwd") == "/workspace"
    assert run(client, minimal, "bash", "-c", "echo $BASH_VERSION").startswith("5.")
    assert exit_code(client, minimal, "test", "-e", "/bin/apt") == 1
    assert run(client, minimal, "stat", "-c", "%a %u", "/tmp", "/workspace").split("\n") == ["1777 0", "755 1000"]
    tools = "sh ls cat echo sleep env id head tail mkdir rm cp mv ps kill timeout dd yes wc grep sed awk tr " \
            "seq find chmod hostname touch sort uname pwd true false xargs base64 stat tar nc wget"
    missing = run(client, minimal, "sh", "-c", f"for t in {tools}; do command -v $t >/dev/null || echo $t; done")
    assert missing == ""
    labels = client.images.get(minimal).labels
    assert labels["io.pygent.image"] == "minimal"


def test_second_build_with_unchanged_context_makes_no_new_image(client, minimal):
    before = client.images.get(minimal).id
    count = len(client.images.list(name="pygent/minimal"))
    again = images.build_image("minimal", quiet=True)
    assert again == minimal
    assert client.images.get(again).id == before
    assert client.images.get("pygent/minimal:latest").id == before
    assert len(client.images.list(name="pygent/minimal")) == count


def test_changing_the_context_changes_the_tag_and_builds_in_seconds(client, minimal, images_copy):
    assert images.context_hash("minimal") == minimal.split(":")[1]  # a copy hashes the same
    with open(images_copy / "minimal" / "Dockerfile", "a") as f:
        f.write("LABEL io.pygent.test=context-change\n")
    changed = images.image_tag("minimal")
    assert changed != minimal and TAG_RE.match(changed)

    # not built yet: resolve without building says so, list_images says not current
    with pytest.raises(ImageNotFound, match="not built yet"):
        images.resolve_image("minimal", build_missing=False)
    row = {r["name"]: r for r in images.list_images()}["minimal"]
    assert row["tag"] == changed and row["built"] and not row["current"]

    try:
        t0 = time.monotonic()
        tag = images.resolve_image("minimal")  # builds on first use
        elapsed = time.monotonic() - t0
        assert tag == changed
        assert elapsed < 60, f"building minimal took {elapsed:.1f}s"
        assert client.images.get(tag).labels["io.pygent.test"] == "context-change"
        assert run(client, tag, "id", "-u") == "1000"
        row = {r["name"]: r for r in images.list_images()}["minimal"]
        assert row["built"] and row["current"]
    finally:
        # put :latest back on the real build, then drop the test build
        os.environ["PYGENT_IMAGES_DIR"] = str(Path(images.__file__).resolve().parents[3] / "images")
        images.clear_cache()
        assert images.build_image("minimal", quiet=True) == minimal
        client.images.remove(changed)


def test_failing_build_raises_with_the_log_tail_and_leaves_nothing(client, minimal, images_copy):
    from pygent.errors import ImageBuildError

    with open(images_copy / "minimal" / "Dockerfile", "a") as f:
        f.write("RUN echo boom-marker-$((6 * 7)) && exit 3\n")
    tag = images.image_tag("minimal")
    with pytest.raises(ImageBuildError) as info:
        images.build_image("minimal", quiet=True)
    msg = str(info.value)
    assert msg.startswith(f"building {tag} failed: ")
    assert "returned a non-zero code: 3" in msg
    assert "boom-marker-42" in msg  # the RUN step's output, from the log tail
    assert len(msg.splitlines()) <= 2 + 20
    assert not client.images.list(name=tag)
    leftovers = [c for c in client.containers.list(all=True, sparse=True) if "boom-marker" in c.attrs.get("Command", "")]
    assert leftovers == []


# --------------------------------------------------------------------------- resolving


def test_resolve_bundled_refs_to_the_hash_tag_and_caches(client, minimal):
    images.clear_cache()
    for ref in ("minimal", "pygent/minimal", "pygent/minimal:latest", minimal):
        assert images.resolve_image(ref) == minimal
    # Cached per process: a repeated call asks the engine nothing (an image removed behind
    # the cache's back is still answered from it, until the cache is cleared).
    client.api.tag(minimal, "pygent-test/cached", "v1")
    try:
        assert images.resolve_image("pygent-test/cached:v1") == "pygent-test/cached:v1"
    finally:
        client.images.remove("pygent-test/cached:v1")
    assert images.resolve_image("pygent-test/cached:v1") == "pygent-test/cached:v1"
    images.clear_cache()
    with pytest.raises(ImageNotFound):
        images.resolve_image("pygent-test/cached:v1")


def test_resolve_unknown_ref_raises_image_not_found():
    with pytest.raises(ImageNotFound) as info:
        images.resolve_image("pygent-test/no-such-image:0")
    msg = str(info.value)
    assert "'pygent-test/no-such-image:0' is not on the engine and is not bundled" in msg
    assert "python, minimal" in msg and "docker load" in msg and "no registry" in msg
    assert isinstance(info.value, LookupError)


def test_resolve_other_image_on_the_engine_returns_it(client, minimal):
    client.api.tag(minimal, "pygent-test/other", "v1")
    try:
        assert images.resolve_image("pygent-test/other:v1") == "pygent-test/other:v1"
    finally:
        client.images.remove("pygent-test/other:v1")
        images.clear_cache()


def test_unknown_bundled_name_and_misplaced_base():
    with pytest.raises(ImageNotFound, match="no bundled image named 'nope'"):
        images.build_image("nope")
    with pytest.raises(ConfigError, match="takes no base"):
        images.build_image("minimal", base="debian:bookworm-slim")


# --------------------------------------------------------------------------- python


@pytest.mark.timeout(900)
def test_python_image(client, python_image):
    assert TAG_RE.match(python_image), python_image
    out = run(client, python_image, "python3", "-c", "import os, sys; print(os.getuid(), os.getgid(), sys.version_info[0])")
    assert out == "1000 1000 3"
    assert run(client, python_image, "git", "--version").startswith("git version ")
    assert run(client, python_image, "id", "-un") == "sandbox"
    assert run(client, python_image, "pwd") == "/workspace"
    assert run(client, python_image, "sh", "-c", "echo $HOME $PYTHONDONTWRITEBYTECODE") == "/workspace 1"
    assert run(client, python_image, "sh", "-c", "ps -o pid= -p 1 >/dev/null && echo ok") == "ok"
    # The command server is not in the image: every sandbox mounts it from the tooling volume.
    assert exit_code(client, python_image, "test", "-e", "/opt/pygent/server.py") != 0
    assert run(client, python_image, "sh", "-c", "ls -A /var/lib/apt/lists | wc -l") == "0"
    doc_kb = int(run(client, python_image, "du", "-sk", "/usr/share/doc").split()[0])
    assert doc_kb < 256, f"/usr/share/doc holds {doc_kb} kB"
    labels = client.images.get(python_image).labels
    assert labels["io.pygent.image"] == "python"
    assert images.resolve_image("python") == python_image


@pytest.mark.timeout(900)
def test_list_images_reports_built_and_current(minimal, python_image):
    rows = {r["name"]: r for r in images.list_images()}
    assert set(rows) >= {"python", "minimal"}
    for name, tag in (("minimal", minimal), ("python", python_image)):
        row = rows[name]
        assert row["tag"] == tag
        assert row["built"] is True and row["current"] is True
        assert row["size"] > 0
    assert rows["minimal"]["size"] < 20_000_000


@pytest.mark.timeout(900)
def test_tooling_image_carries_its_own_interpreter_server_and_bash():
    """What every sandbox mounts: it must run with nothing from the image it lands in."""
    from pygent.sandbox.docker import DockerBackend
    from pygent.sandbox.registry import get_backend

    backend = get_backend()
    assert isinstance(backend, DockerBackend)
    volume = backend.tooling_volume()
    # An empty image (no libc, no shell, no python) runs the server's interpreter from the volume.
    res = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "-v", f"{volume}:/opt/pygent:ro", "--entrypoint",
         "/opt/pygent/lib/ld.so", images.image_tag("tooling"), "--library-path", "/opt/pygent/lib",
         "/opt/pygent/bin/python3", "-I", "-S", "-c",
         "import importlib.util as u, sys; print(open('/opt/pygent/server.pyc','rb').read(4) == u.MAGIC_NUMBER, sys.prefix)"],
        capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["True", "/opt/pygent"]


# --------------------------------------------------------------------------- CLI


@pytest.mark.timeout(900)
def test_cli_build_prints_tags_and_list_shows_table(minimal, python_image):
    res = subprocess.run(CLI + ["build"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [images.image_tag("python"), images.image_tag("minimal"), images.image_tag("tooling")]
    res = subprocess.run(CLI + ["list"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "minimal" in res.stdout and minimal.split(":")[1] in res.stdout


def test_cli_errors_are_one_line_and_exit_2():
    res = subprocess.run(CLI + ["build", "nope"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith("pygent-runner: error: no bundled image named 'nope'")
    assert "Traceback" not in res.stderr


# --------------------------------------------------------------------------- hygiene


@pytest.mark.timeout(900)
def test_no_containers_left_behind(client, minimal, python_image):
    (key, value), = TEST_LABEL.items()
    left = client.containers.list(all=True, filters={"label": f"{key}={value}"})
    assert left == [], f"containers left behind: {[c.name for c in left]}"
    # builds remove their intermediate containers too (rm=True, forcerm=True): a
    # failing build of a bundled image leaves nothing either
