"""One settings model: environment variables and ``pygent.toml``, validated.

Why one model: every knob is listed (and documented) in one place, and a bad
value in the environment is an error instead of being silently ignored.
Precedence: explicit arguments > environment > ``pygent.toml`` (in the current
directory, or the file named by ``PYGENT_CONFIG``) > defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from .allowlist import parse_allow_entry
from .errors import ConfigError
from .settings_key import settings_key as _cache_key

DEFAULT_BASE_URL = "https://api.openai.com/v1"


def _default_max_tasks() -> int:
    # Containers are mostly waiting on the model; 4 per core keeps a 2-core box busy without thrashing.
    return max(2, 4 * (os.cpu_count() or 1))


class Settings(BaseSettings):
    """Every setting pygent reads. Environment names are the field names in upper case."""

    model_config = SettingsConfigDict(extra="forbid", case_sensitive=False, populate_by_name=True)

    openai_api_key: str | None = Field(None, description="Bearer token for the model provider.")
    openai_base_url: str = Field(DEFAULT_BASE_URL, description="OpenAI-compatible endpoint.")
    pygent_model: str = Field("gpt-4o-mini", description="Model name sent to the provider.")
    pygent_image: str = Field("python", description="Sandbox image: a bundled name or any local image.")
    pygent_workspace: Path | None = Field(None, description="Host directory mounted as /workspace (opt-in).")
    pygent_backend: str | None = Field(None, description="Sandbox engine: 'docker' or 'podman'. Unset: podman when DOCKER_HOST names a Podman socket, else docker.")
    pygent_runtime: str | None = Field(None, description="OCI runtime, e.g. 'runsc' for gVisor. Unset: crun when the engine registers it, else the engine's default.")
    pygent_max_tasks: int = Field(default_factory=_default_max_tasks, ge=1, le=256, description="Delegated tasks running at once.")
    pygent_task_depth: int = Field(1, ge=0, le=8, description="How deep sub-agents may delegate.")
    pygent_task_timeout: float = Field(600.0, gt=0, description="Default wall clock of a delegated task, seconds.")
    pygent_pool_size: int = Field(2, ge=0, le=64, description="Warm sandboxes kept started per (image, policy); 0 = off.")
    pygent_pool_max: int = Field(16, ge=0, le=256, description="Most warm sandboxes a pool grows to, following the largest burst of sandboxes asked for within a second in the last 30 s.")
    pygent_idle_pause: float = Field(
        300.0, ge=0, le=86400,
        description="Seconds an agent's sandbox may sit unused before it is paused (the engine's freezer: "
        "processes stopped, memory kept; the next call resumes it in milliseconds). 0: never. "
        "Why 300: far longer than a model turn, so a working agent never pays the resume, while an "
        "abandoned or waiting agent stops using CPU within minutes.",
    )
    pygent_pool_linger: float = Field(3.0, ge=0, le=3600, description="Seconds warm sandboxes stay once no Agent, TaskManager or open sandbox of the process remains.")
    pygent_api_timeout: float = Field(120.0, gt=0, description="Seconds to wait for the model provider's answer (per attempt).")
    pygent_command_timeout: float = Field(60.0, gt=0, description="Default wall clock of one bash call, seconds.")
    pygent_max_output: int = Field(64_000, ge=1024, description="Bytes of stdout/stderr kept per command (head+tail).")
    pygent_gc_max_age: float = Field(6 * 3600.0, gt=0, description="gc removes our containers older than this, seconds.")
    pygent_allow_hosts: str | None = Field(None, description="Comma-separated hosts sandboxes may reach over HTTP(S) through our egress proxy (HOST[:PORT], *.suffix, ADDR/PREFIX for private ranges); unset: no network.")
    pygent_egress_network: str = Field("bridge", description="Engine network the egress proxy reaches allowed hosts through.")
    pygent_egress_hosts: str | None = Field(None, description="NAME=ADDRESS pairs the egress proxy resolves itself (its /etc/hosts), comma-separated.")
    pygent_egress_linger: float = Field(30.0, gt=0, le=3600, description="Seconds an egress proxy nobody uses stays up before it exits.")
    pygent_mcp_token: str | None = Field(None, min_length=16, description="Bearer token `pygent-runner mcp --http` requires (unset: one is generated and printed on stderr).")
    pygent_log_dir: Path | None = Field(None, description="Directory of run logs (JSONL, one per run). Set: every Agent logs there; `run` and `chat` always log, by default under $XDG_STATE_HOME/pygent-runner/runs.")
    pygent_log_keep: int = Field(500, ge=0, description="Run logs kept per log directory: the oldest beyond this are removed when a run starts (0 = keep all).")
    pygent_config: Path | None = Field(None, description="Path of a pygent.toml to read.")

    @field_validator("pygent_allow_hosts")
    @classmethod
    def _allow_hosts(cls, v: str | None) -> str | None:
        entries = [parse_allow_entry(e) for e in (v or "").split(",") if e.strip()]
        return ",".join(entries) or None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = os.environ.get("PYGENT_CONFIG") or "pygent.toml"
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=toml))


_cache: dict[tuple, Settings] = {}


def get_settings(**overrides: Any) -> Settings:
    """Read settings now (not at import), so env changes after import take effect.

    Cached per (environment, directory, toml mtime): building them costs ~1 ms
    and the agent asks on hot paths (every delegated task).
    """
    overrides = {k: v for k, v in overrides.items() if v is not None}
    key = _cache_key() if not overrides else None
    if key is not None and key in _cache:
        return _cache[key]
    try:
        settings = Settings(**overrides)
        if key is not None:
            if len(_cache) > 64:
                _cache.clear()
            _cache[key] = settings
        return settings
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']).upper() or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from None
