"""pygent-runner as an inspect_ai sandbox provider: `sandbox="pygent"` in an inspect task.

    pip install 'pygent-runner[inspect]'

    Task(..., sandbox=("pygent", {"image": "python", "runtime": "runsc", "policy": {"memory": "1g"}}))

Why a thin adapter: inspect_ai's SandboxEnvironment contract (exec, write_file,
read_file, limits, the exceptions each raises) is what pygent's Sandbox already
guarantees; this module only translates. The package's `inspect_ai` entry point
imports it, which registers the provider with inspect's registry.

What maps how:
  exec(cmd: list)      one bash command line (shlex-quoted), run in /workspace (or `cwd`);
                       a timeout is TimeoutError, output over inspect's limit is
                       OutputLimitExceededError, `cmd[0]` not executable is PermissionError.
  user                 None or the sandbox's own user (uid or name). Any other user is
                       SandboxUserUnsupportedError: a pygent sandbox has exactly one
                       non-root user, with no way to become another (no setuid, caps dropped).
  write_file/read_file pygent's file API, as the sandbox user; relative paths are under
                       /workspace; a file over inspect's read limit is OutputLimitExceededError.
  the sandbox gone     SandboxUnavailableError.
"""

from __future__ import annotations

import json
import posixpath
import shlex
from typing import Any, Literal, Union, overload

import anyio
from inspect_ai.util import (
    ExecResult,
    OutputLimitExceededError,
    SandboxEnvironment,
    SandboxEnvironmentConfigType,
    SandboxEnvironmentLimits,
    SandboxUnavailableError,
    SandboxUserUnsupportedError,
    sandboxenv,
)
from pydantic import BaseModel, ConfigDict, Field

from .errors import CommandTimeout, FileTooLarge, PathOutsideSandbox, SandboxError
from .sandbox import Sandbox, SandboxPolicy, open_sandbox

#: Where inspect's "per-sample filesystem context" is: pygent's workspace.
WORKDIR = "/workspace"


class PygentSandboxConfig(BaseModel):
    """The provider's options: `sandbox=("pygent", {...})` or a config model instance."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str = Field("python", description="A bundled image ('python', 'minimal') or any image on the engine.")
    runtime: str | None = Field(None, description="OCI runtime, e.g. 'runsc' (gVisor); None: pygent's default.")
    policy: dict[str, Any] = Field(default_factory=dict, description="SandboxPolicy fields (memory, cpus, timeout, ...).")

    def __hash__(self) -> int:
        """inspect hashes its SandboxEnvironmentSpec, and so this config, to group samples by
        sandbox; pydantic's frozen hash would hash the `policy` dict and fail (issue 21). Hash
        the canonical JSON instead: equal configs hash equal, whatever the key order."""
        return hash(json.dumps(self.model_dump(mode="json"), sort_keys=True))

    def sandbox_policy(self) -> SandboxPolicy:
        """Raises: pydantic.ValidationError (a bad policy field)."""
        fields = dict(self.policy)
        if self.runtime is not None:
            fields["runtime"] = self.runtime
        return SandboxPolicy(**fields)


def _config(config: SandboxEnvironmentConfigType | None) -> PygentSandboxConfig:
    """None: defaults; a str: an image name; a dict or PygentSandboxConfig: the options."""
    if config is None:
        return PygentSandboxConfig()
    if isinstance(config, PygentSandboxConfig):
        return config
    if isinstance(config, str):
        return PygentSandboxConfig(image=config)
    if isinstance(config, dict):
        return PygentSandboxConfig(**config)
    if isinstance(config, BaseModel):
        return PygentSandboxConfig(**config.model_dump())
    raise TypeError(f"pygent sandbox config must be an image name, a dict or PygentSandboxConfig, not {type(config).__name__}")


@sandboxenv(name="pygent")
class PygentSandboxEnvironment(SandboxEnvironment):
    """One pygent sandbox behind inspect's SandboxEnvironment API."""

    def __init__(self, sandbox: Sandbox) -> None:
        super().__init__()
        self.sandbox = sandbox
        self._user_names: frozenset[str] | None = None

    # -- lifecycle --------------------------------------------------------------
    @classmethod
    def config_deserialize(cls, config: dict[str, Any]) -> BaseModel:
        return PygentSandboxConfig(**config)

    @classmethod
    async def sample_init(
        cls, task_name: str, config: SandboxEnvironmentConfigType | None, metadata: dict[str, str]
    ) -> dict[str, SandboxEnvironment]:
        """Raises: EngineUnavailable, ImageNotFound, RuntimeUnavailable, ConfigError, pydantic.ValidationError."""
        return {"default": await cls.open(config)}

    @classmethod
    async def open(cls, config: SandboxEnvironmentConfigType | None = None) -> "PygentSandboxEnvironment":
        """A new sandbox, outside an eval too (tests, scripts). Close it with `close()`."""
        cfg = _config(config)
        policy = cfg.sandbox_policy()
        sandbox = await anyio.to_thread.run_sync(lambda: open_sandbox(cfg.image, policy, pool=False))
        return cls(sandbox)

    @classmethod
    async def sample_cleanup(
        cls,
        task_name: str,
        config: SandboxEnvironmentConfigType | None,
        environments: dict[str, SandboxEnvironment],
        interrupted: bool,
    ) -> None:
        for env in environments.values():
            if isinstance(env, cls):
                await env.close()

    async def close(self) -> None:
        """Remove the sandbox (idempotent)."""
        await anyio.to_thread.run_sync(self.sandbox.close)

    # -- commands ---------------------------------------------------------------
    async def exec(
        self,
        cmd: list[str],
        input: str | bytes | None = None,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        user: str | None = None,
        timeout: int | None = None,
        timeout_retry: bool = True,
        concurrency: bool = True,
    ) -> ExecResult[str]:
        """Raises: SandboxUserUnsupportedError (another user), TimeoutError, PermissionError
        (cmd[0] not executable), OutputLimitExceededError, SandboxUnavailableError."""
        if not cmd:
            raise ValueError("exec needs a command (an empty list was given)")
        await self._check_user(user)
        workdir = posixpath.normpath(posixpath.join(WORKDIR, cwd)) if cwd else WORKDIR
        stdin = input.encode() if isinstance(input, str) else input
        limit = SandboxEnvironmentLimits.MAX_EXEC_OUTPUT_SIZE
        if any("\0" in arg for arg in cmd):
            raise ValueError("a command argument contains a NUL byte, which no process can receive")
        try:
            result = await anyio.to_thread.run_sync(
                lambda: self.sandbox.exec(
                    shlex.join(cmd),
                    timeout=timeout,  # None: the policy's bound (secure by default)
                    env=env,
                    workdir=workdir,
                    stdin=stdin,
                    max_output=min(max(limit, 1024), 1 << 30),
                )
            )
        except (PathOutsideSandbox, CommandTimeout):
            raise
        except SandboxError as exc:
            raise SandboxUnavailableError(str(exc)) from exc
        if result.timed_out:
            raise TimeoutError(f"the command ran past its {timeout or '(policy)'} s limit and was killed: {shlex.join(cmd)[:200]}")
        stdout = result.stdout.decode("utf-8", "replace")
        stderr = result.stderr.decode("utf-8", "replace")
        if result.stdout_truncated or result.stderr_truncated:
            raise OutputLimitExceededError(SandboxEnvironmentLimits.MAX_EXEC_OUTPUT_SIZE_STR, stdout)
        if result.exit_code == 126 and "permission denied" in stderr.lower():
            raise PermissionError(13, f"cannot execute it in the sandbox: {stderr.strip()[-300:]}", cmd[0])
        return ExecResult(success=result.exit_code == 0, returncode=result.exit_code, stdout=stdout, stderr=stderr)

    async def _check_user(self, user: str | None) -> None:
        if user is None:
            return
        if self._user_names is None:
            uid = str(getattr(getattr(self.sandbox, "policy", None), "uid", "1000"))
            names = {uid}
            got = await anyio.to_thread.run_sync(lambda: self.sandbox.exec("id -un 2>/dev/null", timeout=30))
            if got.exit_code == 0 and got.stdout.strip():
                names.add(got.stdout.decode("utf-8", "replace").strip())
            self._user_names = frozenset(names)
        if user not in self._user_names and user.split(":")[0] not in self._user_names:
            raise SandboxUserUnsupportedError(
                f"a pygent sandbox runs every command as its one user ({', '.join(sorted(self._user_names))}), "
                f"so not as {user!r}: by design it has no root and no way to switch users (capabilities dropped, "
                "no-new-privileges). Set the user for the whole sandbox instead: policy={'user': 'UID:GID'}."
            )

    # -- files ------------------------------------------------------------------
    async def write_file(self, file: str, contents: str | bytes) -> None:
        """Raises: PermissionError, IsADirectoryError, NotADirectoryError, SandboxUnavailableError."""
        try:
            await anyio.to_thread.run_sync(lambda: self.sandbox.write_file(file, contents))
        except (PathOutsideSandbox, FileTooLarge):
            raise
        except SandboxError as exc:
            raise SandboxUnavailableError(str(exc)) from exc

    @overload
    async def read_file(self, file: str, text: Literal[True] = True) -> str: ...

    @overload
    async def read_file(self, file: str, text: Literal[False]) -> bytes: ...

    async def read_file(self, file: str, text: bool = True) -> Union[str, bytes]:
        """Raises: FileNotFoundError, PermissionError, IsADirectoryError, UnicodeDecodeError (text),
        OutputLimitExceededError (over inspect's read limit), SandboxUnavailableError."""
        limit = SandboxEnvironmentLimits.MAX_READ_FILE_SIZE
        try:
            data = await anyio.to_thread.run_sync(lambda: self.sandbox.read_file(file, max_bytes=limit))
        except FileTooLarge:
            raise OutputLimitExceededError(SandboxEnvironmentLimits.MAX_READ_FILE_SIZE_STR, None) from None
        except PathOutsideSandbox:
            raise
        except SandboxError as exc:
            raise SandboxUnavailableError(str(exc)) from exc
        return data.decode("utf-8") if text else data
