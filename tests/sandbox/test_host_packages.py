"""A build that lacks a host program stops with the command that installs it; pygent runs no apt-get."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pygent.errors import ImageBuildError
from pygent.sandbox import images

pytestmark = pytest.mark.docker


def test_missing_host_binary_names_the_install_command_and_installs_nothing(tmp_path: Path, monkeypatch):
    folder = tmp_path / "images"
    shutil.copytree(images.images_dir() / "minimal", folder / "needs")
    monkeypatch.setenv("PYGENT_IMAGES_DIR", str(folder))
    wanted = images._HostFile("tool", str(tmp_path / "bin" / "tool-static"), "pygent-test-no-such-package")
    monkeypatch.setitem(images._HOST_FILES, "needs", [wanted])
    images.clear_cache()
    try:
        with pytest.raises(ImageBuildError) as err:
            images.build_image("needs", quiet=True)
    finally:
        images.clear_cache()
    message = str(err.value)
    assert "pygent installs nothing itself" in message
    assert "apt-get install -y --no-install-recommends pygent-test-no-such-package" in message
    assert "apt-get failed" not in message  # it did not try

