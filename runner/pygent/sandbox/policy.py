"""What a sandbox may do. Every default is the strict one; loosening is a field.

Why a pydantic model: the policy is the security boundary users configure, so
unknown keys and out-of-range values are rejected instead of silently ignored,
and a policy is hashable into a pool key (same policy -> same warm pool).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from ..allowlist import parse_allow_entry

_SIZE = re.compile(r"\d+(\.\d+)?[kmgKMG]?[bB]?")  # used with fullmatch: "512m\n" is not a size


class Mount(BaseModel):
    """A host directory mounted into the sandbox: an explicit loosening."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Path = Field(description="Host directory (must exist).")
    target: str = Field(description="Absolute path inside the sandbox.")
    read_only: bool = Field(True, description="Mounted read-only unless set false.")

    @field_validator("target")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not v.startswith("/") or ".." in v.split("/"):
            raise ValueError("mount target must be an absolute path without '..'")
        return v

    @classmethod
    def parse(cls, spec: str) -> "Mount":
        """Parse the CLI form SRC:DST[:ro|rw]."""
        parts = spec.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
            raise ValueError(f"mount {spec!r} is not SRC:DST[:ro|rw]")
        mode = parts[2] if len(parts) == 3 else "rw"
        if mode not in ("ro", "rw"):
            raise ValueError(f"mount mode {mode!r} is not ro or rw")
        return cls(source=Path(parts[0]).expanduser().resolve(), target=parts[1], read_only=mode == "ro")


class SandboxPolicy(BaseModel):
    """Limits and permissions of one sandbox. Defaults are the secure ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    network: bool | tuple[str, ...] = Field(
        False,
        description="Network access. False: no network stack at all. True: everything. "
        "Host names (exact, or '*.suffix'; optional ':PORT'): HTTP(S) to those names only, through our egress proxy; "
        "an ADDR/PREFIX entry lets allowed names resolve into that private range.",
    )
    user: str = Field("1000:1000", description="uid:gid the commands run as. Root ('0') is a loosening.")
    cap_add: tuple[str, ...] = Field((), description="Capabilities added back (all are dropped by default).")
    read_only_root: bool = Field(True, description="Root filesystem read-only; only /workspace and /tmp are writable.")
    memory: str = Field("512m", description="Memory limit, swap included (no extra swap).")
    cpus: float = Field(1.0, ge=0.01, le=64, description="CPU limit in cores (Docker's minimum is 0.01; less would mean no limit).")
    pids: int = Field(256, ge=8, le=65536, description="Max processes+threads: stops fork bombs.")
    workspace_size: str = Field("256m", description="Size of the writable /workspace (tmpfs).")
    tmp_size: str = Field("64m", description="Size of the writable /tmp (tmpfs).")
    timeout: float = Field(60.0, gt=0, le=86400, description="Default wall clock per command, seconds.")
    max_output: int = Field(64_000, ge=1024, le=1 << 30, description="Bytes kept per stream (head+tail).")
    runtime: str | None = Field(None, description="OCI runtime, e.g. 'runsc' (gVisor). None: crun when the engine has it, else the engine default.")
    mounts: tuple[Mount, ...] = Field((), description="Host directories mounted in (explicit loosening).")
    workspace: Path | None = Field(None, description="Host directory mounted read-write as /workspace.")
    env: tuple[tuple[str, str], ...] = Field((), description="Environment set for every command.")
    egress_connections: int = Field(
        32, ge=1, le=4096,
        description="An allowlisted sandbox's connections open at once through the egress proxy it shares "
        "(one more is answered 429): one sandbox cannot use up the proxy for the others.",
    )
    egress_bandwidth: str = Field(
        "32m",
        description="An allowlisted sandbox's bytes per second through the egress proxy, over all its connections "
        "and both directions (a token bucket with a quarter second of burst): one cannot starve the others.",
    )

    @field_validator("network", mode="before")
    @classmethod
    def _network(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [part for part in (p.strip() for p in v.split(",")) if part]
        if isinstance(v, (list, tuple, set, frozenset)):
            entries = sorted({parse_allow_entry(str(e)) for e in v})  # sorted: equal lists share a pool
            return tuple(entries) if entries else False
        return v

    @field_validator("memory", "workspace_size", "tmp_size", "egress_bandwidth")
    @classmethod
    def _size(cls, v: str, info: ValidationInfo) -> str:
        if not _SIZE.fullmatch(v):
            raise ValueError(f"{v!r} is not a size like 512m or 1g")
        v = v.lower().rstrip("b")
        # A zero size is "no limit" to the engine (memory) and to tmpfs: a loosening in disguise.
        if size_in_bytes(v) <= 0:
            raise ValueError(f"{v!r} is zero: the engine would read it as no limit at all")
        if info.field_name == "memory" and size_in_bytes(v) < 6 << 20:
            raise ValueError(f"{v!r} is below the engine's 6m minimum memory limit")
        return v

    @field_validator("user")
    @classmethod
    def _user(cls, v: str) -> str:
        if not re.fullmatch(r"\d+(:\d+)?", v):
            raise ValueError("user must be numeric uid[:gid] (names need the image's /etc/passwd)")
        return v

    @field_validator("runtime")
    @classmethod
    def _runtime(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", v):
            raise ValueError(f"runtime {v!r} is not a runtime name")
        return v or None

    @property
    def uid(self) -> int:
        return int(self.user.split(":")[0])

    @property
    def gid(self) -> int:
        parts = self.user.split(":")
        return int(parts[1]) if len(parts) > 1 else int(parts[0])

    @property
    def allow_hosts(self) -> tuple[str, ...]:
        """The allowlist (host patterns and address ranges), or () when network is a bool."""
        return self.network if isinstance(self.network, tuple) else ()

    def pool_key(self) -> str:
        """Sandboxes are interchangeable only when everything in the policy matches."""
        return self.model_dump_json()


def size_in_bytes(size: str) -> int:
    """'512m' -> 536870912. Docker accepts the string; we need the number for checks."""
    num = float(re.match(r"[\d.]+", size).group())  # type: ignore[union-attr]
    unit = size[-1].lower() if size[-1].isalpha() else ""
    return int(num * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[unit])

