"""Settings: defaults < YAML file < SPEEDUP_* environment variables < command-line flags."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Literal

import platformdirs
import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from budget.policy import PolicyConfig
from memory_store.limits import MemoryLimits
from memory_store.redis.config import RedisOptions
from proxy.learning.memory_modes import MemoryModes
from proxy.stats.pricing import Pricing

ENV_PREFIX = "SPEEDUP_"
LOCAL_TENANT = "local"


class ConfigError(Exception):
    """A configuration that cannot start the proxy; the message says what to fix."""


class EmbeddedBackendSettings(BaseModel):
    model_path: Path | None = None
    ctx_size: int = Field(8192, ge=512)
    n_parallel: int = Field(4, ge=1)
    threads: int = Field(2, ge=1)
    startup_timeout_s: float = Field(120.0, gt=0)


class Settings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(8400, ge=0, le=65535)
    backend_url: str | None = None
    backend_api_key: str | None = None
    backend_timeout_s: float = Field(300.0, gt=0)
    backend_connect_timeout_s: float = Field(1.5, gt=0)
    backend_supports_n: bool | None = Field(
        None, description="None: detect (llama.cpp rejects n>1, the proxy then fans out itself)"
    )
    memory: str = Field("local", description="'local', 'local:/path/to/dir', 'redis://host:port/db' or 'off'")
    data_dir: Path = Field(default_factory=lambda: Path(platformdirs.user_data_dir("speedup-proxy")))
    api_keys: dict[str, str] = Field(default_factory=dict, description="API key -> tenant name")
    admin_key: str | None = None
    memory_deadline_ms: float = Field(50.0, gt=0)
    max_body_bytes: int = Field(2_000_000, ge=1024)
    # One thread: torch's OpenMP workers collapse (0.5 s a query) when llama.cpp holds the other cores.
    embedder_threads: int = Field(1, ge=1)
    embedder: Literal["onnx-int8", "onnx", "torch"] = Field(
        "onnx-int8",
        description="MiniLM on onnxruntime, int8 (3.1 ms a question here) or fp32 (7.2 ms), or on torch",
    )
    log_level: str = "info"
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    embedded: EmbeddedBackendSettings = Field(default_factory=EmbeddedBackendSettings)
    pricing: Pricing = Field(default_factory=Pricing)
    memory_modes: MemoryModes = Field(default_factory=MemoryModes)
    limits: MemoryLimits = Field(default_factory=MemoryLimits)
    redis: RedisOptions = Field(default_factory=RedisOptions)

    model_config = {"extra": "forbid"}

    @field_validator("memory")
    @classmethod
    def _memory_spec(cls, value: str) -> str:
        if value in ("local", "off") or value.startswith(("local:", "redis://", "rediss://", "unix://")):
            return value
        raise ValueError("must be 'local', 'local:/dir', 'off' or a redis:// URL")

    @field_validator("backend_url")
    @classmethod
    def _backend_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL such as http://127.0.0.1:8000/v1")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _keys_or_loopback(self) -> Settings:
        if not self.api_keys and not _is_loopback(self.host):
            raise ValueError(
                f"host {self.host!r} is not loopback but no api_keys are configured: "
                "configure api_keys (key -> tenant) before exposing the proxy"
            )
        return self

    @property
    def authenticated(self) -> bool:
        return bool(self.api_keys)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """SPEEDUP_PORT=8401, SPEEDUP_POLICY__REUSE_SIMILARITY=0.9, SPEEDUP_API_KEYS='{"k": "t"}'."""
    result: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name in ("SPEEDUP_CONFIG", "SPEEDUP_CACHE_DIR"):
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        target = result
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = yaml.safe_load(raw) if raw else raw
    return result


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(
    config_file: Path | None = None,
    flags: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    environ = dict(os.environ if environ is None else environ)
    config_file = config_file or (Path(environ["SPEEDUP_CONFIG"]) if environ.get("SPEEDUP_CONFIG") else None)
    data: dict[str, Any] = {}
    if config_file is not None:
        try:
            loaded = yaml.safe_load(config_file.read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise ConfigError(f"cannot read config file {config_file}: {error}") from error
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {config_file} must hold a mapping of settings")
        data = loaded
    data = _merge(data, _env_overrides(environ))
    data = _merge(data, {k: v for k, v in (flags or {}).items() if v is not None})
    try:
        return Settings.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in error.errors())
        raise ConfigError(f"invalid configuration: {problems}") from error
