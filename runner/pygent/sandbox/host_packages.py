"""Host programs an image build needs, and the exact command that installs the missing ones.

Why: pygent never installs system packages itself (a pip-installed tool must
not run apt-get as root behind the user's back). A build that lacks one stops
before it starts, with the command to run; in a checkout `make images` runs it
(scripts/ensure-build-deps.sh).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..errors import ImageBuildError

#: Debian packages the python image's debootstrap base needs on the host.
DEBOOTSTRAP_PACKAGES = ["debootstrap", "debian-archive-keyring"]


def install_command(packages: list[str]) -> str:
    """The shell command that installs packages here (Debian's apt-get; sudo when not root)."""
    sudo = "" if os.geteuid() == 0 else "sudo "
    names = " ".join(sorted(set(packages)))
    if shutil.which("apt-get") or Path("/etc/debian_version").is_file():
        return f"{sudo}apt-get install -y --no-install-recommends {names}"
    return f"install the Debian package(s) {names} (or your distribution's equivalent)"


def missing(packages: list[str], what: str) -> ImageBuildError:
    """The error for a build that needs packages the host lacks (raised by the caller)."""
    return ImageBuildError(
        f"{what} needs {', '.join(sorted(set(packages)))} on this machine; pygent installs nothing itself:"
        f" run `{install_command(packages)}` (in a checkout, `make images` does), then build again"
    )


def require_debootstrap(what: str) -> None:
    """Make sure debootstrap is on this machine before a base build starts.

    Raises:
        ImageBuildError: it is not; the message holds the install command.
    """
    if shutil.which("debootstrap") or os.access("/usr/sbin/debootstrap", os.X_OK):
        return
    raise missing(DEBOOTSTRAP_PACKAGES, what)
