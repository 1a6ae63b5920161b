"""Fails if any default of SandboxPolicy is loosened, or stops reaching the engine.

Loosening a default must be a deliberate change of this file too.
"""

from __future__ import annotations

import os

import pytest

from pygent.sandbox import SandboxPolicy, default_policy, open_sandbox
from pygent.sandbox.policy import size_in_bytes

MiB = 1 << 20

#: Every field, reviewed. A new field needs a strict default and a line here.
REVIEWED_FIELDS = {
    "network", "user", "cap_add", "read_only_root", "memory", "cpus", "pids", "workspace_size",
    "tmp_size", "timeout", "max_output", "runtime", "mounts", "workspace", "env",
    "egress_connections", "egress_bandwidth",
}


def _assert_strict(p: SandboxPolicy) -> None:
    assert p.network is False
    assert p.user == "1000:1000" and p.uid == 1000 and p.gid == 1000
    assert p.cap_add == ()
    assert p.read_only_root is True
    assert size_in_bytes(p.memory) <= 512 * MiB
    assert p.cpus <= 1.0
    assert p.pids <= 256
    assert size_in_bytes(p.workspace_size) <= 256 * MiB
    assert size_in_bytes(p.tmp_size) <= 64 * MiB
    assert p.timeout <= 60
    assert p.max_output <= 64_000
    assert p.runtime in (None, "runsc")  # the engine's default (runc) or stricter
    assert p.mounts == ()
    assert p.workspace is None
    assert p.env == ()
    # Bounds on the egress proxy a sandbox shares (they matter only with an allowlist).
    assert 1 <= p.egress_connections <= 32 and size_in_bytes(p.egress_bandwidth) <= 32 * MiB


def test_every_policy_field_was_reviewed():
    assert set(SandboxPolicy.model_fields) == REVIEWED_FIELDS


def test_policy_defaults_are_strict():
    _assert_strict(SandboxPolicy())


def test_default_policy_from_settings_is_as_strict(monkeypatch):
    for name in ("PYGENT_COMMAND_TIMEOUT", "PYGENT_MAX_OUTPUT", "PYGENT_RUNTIME", "PYGENT_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir("/")  # no pygent.toml
    _assert_strict(default_policy())


@pytest.mark.docker
def test_default_container_really_has_the_hardening(docker_client):
    with open_sandbox("python", SandboxPolicy(), pool=False) as sb:
        info = docker_client.api.inspect_container(sb.id)
    host, config = info["HostConfig"], info["Config"]
    assert host["CapDrop"] == ["ALL"]
    assert not host["CapAdd"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["ReadonlyRootfs"] is True
    assert host["Privileged"] is False
    assert host["Memory"] == 512 * MiB
    assert host["MemorySwap"] == host["Memory"]  # no swap on top
    assert host["PidsLimit"] == 256
    assert host["NanoCpus"] == 1_000_000_000
    assert host["Init"] is True
    assert host["AutoRemove"] is True
    assert not host.get("Binds")
    assert not host.get("Devices")
    # crun (the lighter OCI runtime) when the engine registers it, as `make engine` does
    assert host["Runtime"] == ("crun" if "crun" in docker_client.info()["Runtimes"] else "runc")
    assert host["LogConfig"]["Type"] == "none", "untrusted output must not fill the engine's disk"
    assert config["NetworkDisabled"] is True
    assert config["User"] == "1000:1000"
    assert config["OpenStdin"] is True and config["StdinOnce"] is True  # the owner-death net
    mounts = {m["Target"]: m for m in host["Mounts"]}
    assert set(mounts) == {"/workspace", "/tmp", "/opt/pygent", "/run/pygent"}, \
        "the two size-bounded tmpfs volumes, the tooling and the ports' handoff directory"
    tooling = mounts["/opt/pygent"]
    assert tooling["Type"] == "volume" and tooling["ReadOnly"] is True  # shared by every sandbox: never writable
    handoff = mounts["/run/pygent"]  # sockets only, this user's own directory: entered, never written
    assert handoff["Type"] == "bind" and handoff["ReadOnly"] is True
    assert os.path.basename(handoff["Source"]).startswith("pygent-runner-ports")
    assert tooling["Source"].startswith("pygent-tooling-")
    for target, size in (("/workspace", "256m"), ("/tmp", "64m")):
        m = mounts[target]
        assert m["Type"] == "volume" and not m.get("Source")  # anonymous: removed with the container
        opts = m["VolumeOptions"]["DriverConfig"]["Options"]
        assert opts["type"] == "tmpfs"
        assert f"size={size}" in opts["o"].split(",")
    assert "nosuid" in mounts["/tmp"]["VolumeOptions"]["DriverConfig"]["Options"]["o"].split(",")
    assert not any("docker.sock" in str(m) for m in info["Mounts"])
