"""`pygent-runner images prune` and `images list`, on the real engine.

The engine is shared with other developers, whose checkouts have other current
tags: these tests give pygent a repository namespace of their own
(images.REPO / images.BASE_REPO) and a bundled-images folder of their own, so
prune can only ever see images this module made.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pygent.cli.images import app
from pygent.sandbox import image_prune, images

pytestmark = pytest.mark.docker

LABEL = {"io.pygent.test": f"test_image_prune-{os.getpid()}"}


def _build(api, dockerfile: str, tag: str) -> str:
    stream = api.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True, forcerm=True, decode=True,
                       network_mode="none", labels=LABEL, pull=False)
    for chunk in stream:
        assert "error" not in chunk, chunk
    return api.inspect_image(tag)["Id"]


def _import(api, tag: str, size: int) -> str:
    """A one-layer image of `size` random bytes (a stand-in for an old Debian base)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("blob")
        info.size = size
        tar.addfile(info, io.BytesIO(os.urandom(size)))
    repo, _, version = tag.rpartition(":")
    api.import_image_from_data(buf.getvalue(), repository=repo, tag=version)
    return api.inspect_image(tag)["Id"]


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, docker_client):
    """Current builds, outdated ones, a user's tag, bases used and unused, one stale image in use."""
    api = docker_client.api
    source = images.build_image("minimal", quiet=True)  # the checkout's own minimal, to tag from
    folder = tmp_path / "images"
    shutil.copytree(images.images_dir() / "minimal", folder / "minimal")
    (folder / "based").mkdir()
    (folder / "based" / "Dockerfile").write_text("ARG BASE\nFROM ${BASE}\n")
    (folder / "based" / "build-base.sh").write_text("#!/bin/sh\necho a test base\n")
    repo = f"pygent-test-prune-{os.getpid()}"
    monkeypatch.setattr(images, "REPO", repo)
    monkeypatch.setattr(images, "BASE_REPO", f"{repo}/debian-base")
    monkeypatch.setenv("PYGENT_IMAGES_DIR", str(folder))
    images.clear_cache()
    base = images.BASE_REPO
    current_minimal, current_based = images.image_tag("minimal"), images.image_tag("based")
    labelled_base = f"{base}:cccccccccccc"

    monkeypatch.setenv("COLUMNS", "200")  # rich: no truncated tags in the table
    try:
        yield from _make_world(api, source, repo, base, current_minimal, current_based, labelled_base)
    finally:
        for r in (repo + "/minimal", repo + "/based", base):
            for record in api.images(name=r):
                for tag in record.get("RepoTags") or []:
                    if tag.startswith(repo):
                        try:
                            api.remove_image(tag, force=True)
                        except Exception:
                            pass
        images.clear_cache()


def _make_world(api, source, repo, base, current_minimal, current_based, labelled_base):
    api.tag(source, f"{repo}/minimal", current_minimal.rsplit(":", 1)[1])
    api.tag(source, f"{repo}/minimal", "latest")
    api.tag(source, f"{repo}/minimal", "mine")  # a user's own tag: never ours to remove
    api.tag(source, f"{repo}/minimal", "aaaaaaaaaaaa")  # outdated, same image as the current: untagged only
    _build(api, f"FROM {current_minimal}\nUSER 0\nRUN head -c 400000 /dev/urandom > /old\n", f"{repo}/minimal:0123456789ab")
    _build(api, f"FROM {current_minimal}\nLABEL io.pygent.base-image={labelled_base}\n", current_based)
    in_use = _build(api, f"FROM {current_minimal}\nLABEL t=in-use\n", f"{repo}/minimal:dddddddddddd")
    _import(api, images.base_tag("based"), 1000)  # the base build-base.sh hashes to: current
    _import(api, labelled_base, 1000)  # named by a current build: in use
    _import(api, f"{base}:bbbbbbbbbbbb", 200_000)  # nothing builds on it: unused
    container = api.create_container(f"{repo}/minimal:dddddddddddd", ["true"], labels=LABEL)["Id"]
    try:
        yield {"repo": repo, "base": base, "current": [current_minimal, f"{repo}/minimal:latest", current_based,
                                                       images.base_tag("based"), labelled_base, f"{repo}/minimal:mine"],
               "in_use": in_use}
    finally:
        api.remove_container(container, force=True, v=True)


def _tags(api, repo: str) -> set[str]:
    return {t for r in (f"{repo}/minimal", f"{repo}/based", f"{repo}/debian-base")
            for record in api.images(name=r) for t in record.get("RepoTags") or []}


def test_list_shows_size_and_which_builds_are_current(world):
    out = CliRunner().invoke(app, ["list"], catch_exceptions=False).output
    repo = world["repo"]
    rows = [line.split("│") for line in out.splitlines() if "│" in line]
    by_tag = {cells[1].strip(): [c.strip() for c in cells] for cells in rows}
    assert by_tag[images.image_tag("minimal")][2:4] == ["yes", "yes"]
    assert re.match(r"^[0-9.]+ (MB|kB)$", by_tag[images.image_tag("minimal")][4])
    assert by_tag[f"{repo}/minimal:0123456789ab"][3] == "no (outdated)"
    assert by_tag[f"{world['base']}:bbbbbbbbbbbb"][3] == "no (outdated)"
    assert f"{repo}/minimal:mine" not in by_tag
    assert "`pygent-runner images prune`" in out


def test_prune_removes_outdated_builds_and_unused_bases_and_keeps_the_rest(world, docker_client):
    api, repo, base = docker_client.api, world["repo"], world["base"]
    result = CliRunner().invoke(app, ["prune"], catch_exceptions=False)
    out = result.output
    assert result.exit_code == 0, out
    removed = {f"{repo}/minimal:0123456789ab", f"{repo}/minimal:aaaaaaaaaaaa", f"{base}:bbbbbbbbbbbb"}
    for tag in removed:
        assert f"removed {tag}" in out
    left = _tags(api, repo)
    assert not removed & left
    assert set(world["current"]) <= left, set(world["current"]) - left
    # the stale build a container still uses stays, and prune says why
    assert f"{repo}/minimal:dddddddddddd" in left
    assert f"kept {repo}/minimal:dddddddddddd: in use by a container" in out
    # space freed: at least the 400 kB layer and the 200 kB base nothing else shared
    freed = re.search(r"3 tag\(s\) removed, ([0-9.]+) (kB|MB) freed", out)
    assert freed, out
    assert float(freed.group(1)) * (1000 if freed.group(2) == "kB" else 1e6) >= 500_000
    # nothing outdated is left but the image in use; a second prune has nothing to do
    assert [s["tag"] for s in image_prune.outdated()] == [f"{repo}/minimal:dddddddddddd"]


def test_prune_removes_other_builds_tooling_volumes_and_keeps_the_current_one(tmp_path, monkeypatch, docker_client):
    from pygent.sandbox.docker import tooling

    api = docker_client.api
    minimal = images.build_image("minimal", quiet=True)
    folder = tmp_path / "images"
    shutil.copytree(images.images_dir() / "tooling", folder / "tooling")
    repo = f"pygent-test-prune-{os.getpid()}"
    monkeypatch.setattr(images, "REPO", repo)  # no image of the shared engine is looked at either
    monkeypatch.setattr(images, "BASE_REPO", f"{repo}/debian-base")
    prefix = f"pygent-test-prune-{os.getpid()}-tooling-"
    label = f"io.pygent.test-tooling-{os.getpid()}"
    monkeypatch.setattr(tooling, "VOLUME_PREFIX", prefix)  # only this test's volumes are seen
    monkeypatch.setattr(tooling, "LABEL_TOOLING", label)
    monkeypatch.setenv("PYGENT_IMAGES_DIR", str(folder))
    images.clear_cache()
    current = tooling.volume_name(images.image_tag("tooling"))
    old = prefix + "0123456789ab"
    names = [current, current + "-ready", old, old + "-ready", prefix + "bbbbbbbbbbbb"]
    used = None
    try:
        for name in names:
            api.create_volume(name, labels={label: "x", **LABEL})
        binds = {prefix + "bbbbbbbbbbbb": {"bind": "/x", "mode": "ro"}}
        used = api.create_container(minimal, ["true"], labels=LABEL, host_config=api.create_host_config(binds=binds))["Id"]
        out = CliRunner().invoke(app, ["prune"], catch_exceptions=False).output
        left = {v["Name"] for v in api.volumes(filters={"label": label}).get("Volumes") or []}
    finally:
        if used:
            api.remove_container(used, force=True)
        for name in names:
            try:
                api.remove_volume(name, force=True)
            except Exception:
                pass
        images.clear_cache()
    assert f"removed volume {old}" in out and f"removed volume {old}-ready" in out, out
    assert left == {current, current + "-ready", prefix + "bbbbbbbbbbbb"}  # current, and one a container uses
