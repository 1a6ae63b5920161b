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


#: Node from Debian's own packages (issue 25: npm and Node's fetch through the egress proxy).
#: Trixie's nodejs (20.x) with npm, and Debian's node-undici, the library Node's fetch is made of.
NODE_REPO = "pygent-test/node"
NODE_SUITE = "trixie"
_NODE_DOCKERFILE = """\
ARG BASE
FROM ${BASE}
SHELL ["/bin/sh", "-euc"]
RUN export DEBIAN_FRONTEND=noninteractive; \\
    apt-get update -q; \\
    apt-get install -y -q --no-install-recommends nodejs npm node-undici curl; \\
    if ! getent group 1000 >/dev/null; then groupadd --gid 1000 sandbox; fi; \\
    if ! getent passwd 1000 >/dev/null; then \\
        useradd --uid 1000 --gid 1000 --home-dir /workspace --no-create-home --shell /bin/bash sandbox; \\
    fi; \\
    mkdir -p /workspace; chown 1000:1000 /workspace; chmod 1777 /tmp; \\
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb /var/log/apt/* /var/log/dpkg.log
SHELL ["/bin/sh", "-c"]
ENV HOME=/workspace LANG=C.UTF-8
USER 1000:1000
WORKDIR /workspace
"""


def node_image(client) -> str:
    """Build (once per engine: the tag is a hash of the Dockerfile and its base) and return the Node image.

    Its base is the trixie debootstrap the Python matrix uses (tests/matrix/harness.py), so CI
    makes it once for both; the packages come from the machine's Debian mirror, no registry.
    Raises AssertionError with the build's output when it fails.
    """
    import hashlib
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "matrix"))
    import harness

    base = harness._base_tag(NODE_SUITE)
    tag = f"{NODE_REPO}:{hashlib.sha256((base + _NODE_DOCKERFILE).encode()).hexdigest()[:12]}"
    if harness._exists(client, tag):
        return tag
    harness.debian_base(NODE_SUITE)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "Dockerfile").write_text(_NODE_DOCKERFILE)
        log: list[str] = []
        for chunk in client.api.build(path=tmp, tag=tag, buildargs={"BASE": base}, rm=True, forcerm=True, pull=False,
                                      decode=True, labels={"io.pygent.test-image": "node"}):
            log.extend(str(chunk.get("stream") or chunk.get("error") or "").splitlines())
            assert "error" not in chunk, f"building {tag} failed:\n" + "\n".join(log[-40:])
    assert harness._exists(client, tag), f"building {tag} made no image:\n" + "\n".join(log[-40:])
    return tag
