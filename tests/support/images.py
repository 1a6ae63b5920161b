"""Test images that are not bundled: what users bring (here: a shell and nothing else).

`sh-only`: FROM scratch with a static busybox (sh, coreutils applets) and no
bash, no python, no libc. The command server must run in it at full speed
from the tooling volume, with pygent's static bash.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

SH_ONLY = "pygent-test/sh-only:1"

_DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
SHELL ["/bin/busybox", "sh", "-euc"]
RUN /bin/busybox mkdir -p /usr/bin /workspace /tmp && /bin/busybox --install -s /bin \\
 && /bin/busybox chmod 1777 /tmp && /bin/busybox chown 1000:1000 /workspace \\
 && ! test -e /bin/bash
USER 1000:1000
WORKDIR /workspace
"""


def sh_only_image(env: dict | None = None) -> str:
    """Build (once per engine: `env`'s DOCKER_HOST) and return the sh-only image's tag."""
    if subprocess.run(["docker", "image", "inspect", SH_ONLY], capture_output=True, env=env).returncode == 0:
        return SH_ONLY
    busybox = "/bin/busybox"
    if not Path(busybox).is_file():
        from pygent.sandbox.images import build_image

        build_image("minimal")  # installs busybox-static on the host when missing
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copyfile(busybox, Path(tmp) / "busybox")
        (Path(tmp) / "busybox").chmod(0o755)
        (Path(tmp) / "Dockerfile").write_text(_DOCKERFILE)
        subprocess.run(["docker", "build", "-q", "--network", "none", "-t", SH_ONLY, tmp],
                       check=True, capture_output=True, timeout=300, env=env)
    return SH_ONLY
