"""Settings: defaults < YAML file < SPEEDUP_* environment variables < command-line flags."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import platformdirs
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    YamlConfigSettingsSource,
)

from budget.compute.plan import ComputeConfig
from budget.policy import PolicyConfig
from memory_store.limits import MemoryLimits
from memory_store.redis.config import RedisOptions
from proxy.gateway.text import has_control_characters
from proxy.learning.memory_modes import MemoryModes
from proxy.stats.pricing import Pricing

ENV_PREFIX = "SPEEDUP_"
ENV_NESTED_DELIMITER = "__"
# Read elsewhere (the config file's path; the model cache in proxy/backend/model_files.py), never refused.
NOT_SETTINGS = frozenset({"SPEEDUP_CONFIG", "SPEEDUP_CACHE_DIR"})
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
MEMORY_SPEC_ERROR = "must be 'local', 'local:/dir', 'off' or a redis:// URL"
MIN_PUBLIC_KEY_CHARS = 16  # keys of a proxy reachable beyond loopback
# What the keys of example configs (deploy/proxy.yaml) look like: never meant to be deployed.
_PLACEHOLDER_KEY = re.compile(r"change[-_]?me|replace[-_]?me|placeholder|example", re.IGNORECASE)


class ConfigError(Exception):
    """A configuration that cannot start the proxy; the message says what to fix."""


class MemorySpec(BaseModel):
    """Where episodes live, parsed once from 'local', 'local:/dir', a redis:// URL or 'off'."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["off", "local", "redis"]
    url: str | None = Field(None, description="kind 'redis': the Redis URL as given")
    directory: Path | None = Field(None, description="kind 'local' from 'local:/dir'; None means Settings.data_dir")

    @classmethod
    def parse(cls, spec: str) -> MemorySpec:
        if spec in ("off", "local"):
            return cls(kind=spec)
        if spec.startswith("local:") and len(spec) > len("local:"):
            return cls(kind="local", directory=Path(spec[len("local:") :]))
        if spec.startswith(REDIS_SCHEMES):
            return cls(kind="redis", url=spec)
        raise ValueError(MEMORY_SPEC_ERROR)

    @model_validator(mode="after")
    def _consistent(self) -> MemorySpec:
        if (self.kind == "redis") != (self.url is not None):
            raise ValueError("a url is required for kind 'redis' and allowed for no other kind")
        if self.directory is not None and self.kind != "local":
            raise ValueError("a directory is allowed only for kind 'local'")
        return self

    @property
    def enabled(self) -> bool:
        return self.kind != "off"

    def __str__(self) -> str:
        if self.url is not None:
            return self.url
        if self.directory is not None:
            return f"local:{self.directory}"
        return self.kind


class EmbeddedBackendSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_path: Path | None = None
    ctx_size: int = Field(8192, ge=512)
    n_parallel: int = Field(4, ge=1)
    threads: int = Field(2, ge=1)
    startup_timeout_s: float = Field(120.0, gt=0)


class ReuseVerifierSettings(BaseModel):
    """The unsure band's check (docs/REUSE.md): a pair the folds refuse, from `policy.verify_similarity`
    up and with no hard difference, is asked of a verifier model; served from memory when its
    P(Same) is at least `min_p_same` (calibrated for the bundled Qwen2.5-Coder-1.5B)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    url: str | None = Field(None, description="an OpenAI-compatible server; None: the bundled 1.5B model, embedded")
    api_key: str | None = None
    model: str = "reuse-verifier"
    min_p_same: float = Field(0.97, gt=0.0, le=1.0)
    timeout_s: float = Field(10.0, gt=0)
    threads: int = Field(2, ge=1, description="the embedded verifier's threads")
    n_parallel: int = Field(2, ge=1, description="the embedded verifier's slots")
    startup_timeout_s: float = Field(180.0, gt=0)


class LifecycleSettings(BaseModel):
    """How long a SIGTERM waits: first for requests in flight, then for background work."""

    model_config = ConfigDict(extra="forbid")

    requests_timeout_s: float = Field(30.0, gt=0, description="how long in-flight requests may finish after SIGTERM")
    background_timeout_s: float = Field(
        30.0, gt=0, description="how long background work and the Redis spool may drain after that"
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_NESTED_DELIMITER, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8400, ge=0, le=65535)
    backend_url: str | None = None
    backend_api_key: str | None = None
    backend_timeout_s: float = Field(300.0, gt=0)
    backend_connect_timeout_s: float = Field(1.5, gt=0)
    backend_supports_n: bool | None = Field(
        None, description="None: detect (llama.cpp rejects n>1, the proxy then fans out itself)"
    )
    # NoDecode: SPEEDUP_MEMORY holds the spec string, not JSON.
    memory: Annotated[MemorySpec, NoDecode] = Field(
        MemorySpec(kind="local"), description="'local', 'local:/path/to/dir', 'redis://host:port/db' or 'off'"
    )
    data_dir: Path = Field(default_factory=lambda: Path(platformdirs.user_data_dir("speedup-proxy")))
    api_keys: dict[str, str] = Field(default_factory=dict, description="API key -> tenant name")
    admin_key: str | None = None
    allow_placeholder_keys: bool = Field(
        False, description="start on a non-loopback host with placeholder keys (a warning is logged)"
    )
    protect_observability: bool | None = Field(
        None, description="/metrics and /healthz details need the admin key; None: on when api_keys are configured"
    )
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
    compute: ComputeConfig = Field(default_factory=ComputeConfig)
    embedded: EmbeddedBackendSettings = Field(default_factory=EmbeddedBackendSettings)
    reuse_verifier: ReuseVerifierSettings = Field(default_factory=ReuseVerifierSettings)
    pricing: Pricing = Field(default_factory=Pricing)
    memory_modes: MemoryModes = Field(default_factory=MemoryModes)
    limits: MemoryLimits = Field(default_factory=MemoryLimits)
    redis: RedisOptions = Field(default_factory=RedisOptions)
    lifecycle: LifecycleSettings = Field(default_factory=LifecycleSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # No .env files and no secrets dir; defaults come last on their own.
        sources = _SOURCES.get() or _Sources.read(settings_cls, None, os.environ)
        return (init_settings, *sources.ordered())

    @field_validator("memory", mode="before")
    @classmethod
    def _memory_spec(cls, value: Any) -> Any:
        if value is False:  # YAML reads an unquoted `memory: off` as false
            return MemorySpec(kind="off")
        if isinstance(value, str):
            return MemorySpec.parse(value)
        if isinstance(value, MemorySpec | dict):
            return value
        raise ValueError(MEMORY_SPEC_ERROR)

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

    @model_validator(mode="after")
    def _keys_are_keys(self) -> Settings:
        public = not _is_loopback(self.host)
        problems = [problem for name, key in self.named_keys() if (problem := _key_problem(name, key, public))]
        problems += [f"api_keys: tenant name {t!r} is empty or holds control characters" for t in self._bad_tenants()]
        if self.admin_key is not None and self.admin_key in self.api_keys:
            problems.append("admin_key is also a tenant's API key: that tenant would be an admin")
        if public and not self.allow_placeholder_keys:
            problems += [
                f"{name} is a placeholder: replace it, or start with --allow-placeholder-keys"
                for name in self.placeholder_keys()
            ]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def named_keys(self) -> list[tuple[str, str]]:
        """Every configured key with how messages name it (never by the key itself)."""
        named = [(f"api_keys: the key of tenant {tenant!r}", key) for key, tenant in self.api_keys.items()]
        return named + ([("admin_key", self.admin_key)] if self.admin_key is not None else [])

    def placeholder_keys(self) -> list[str]:
        """The names of keys that look like the placeholders of an example config."""
        return [name for name, key in self.named_keys() if _PLACEHOLDER_KEY.search(key)]

    def _bad_tenants(self) -> list[str]:
        return [t for t in self.api_keys.values() if not t.strip() or has_control_characters(t)]

    @property
    def authenticated(self) -> bool:
        return bool(self.api_keys)

    @property
    def observability_protected(self) -> bool:
        return self.authenticated if self.protect_observability is None else self.protect_observability

    @property
    def memory_dir(self) -> Path:
        """Where local files live: the episodes of local memory, and for every kind the learning and stats files."""
        return self.memory.directory if self.memory.directory is not None else self.data_dir


def _key_problem(name: str, key: str, public: bool) -> str | None:
    """Why a key cannot be used, if it cannot: empty ones never, short ones not beyond loopback."""
    if not key.strip():
        return f"{name} is empty: an empty header would match it"
    if key != key.strip() or has_control_characters(key):
        return f"{name} starts or ends with whitespace or holds control characters: no header carries it as it is"
    if public and len(key) < MIN_PUBLIC_KEY_CHARS:
        return f"{name} has {len(key)} characters: on a non-loopback host a key needs {MIN_PUBLIC_KEY_CHARS} or more"
    return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Environment(EnvSettingsSource):
    """SPEEDUP_* variables of a given mapping (os.environ, or a test's own dict)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self.environ = dict(environ)
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {name if self.case_sensitive else name.lower(): value for name, value in self.environ.items()}

    def decode_complex_value(self, field_name: str, field: FieldInfo | None, value: Any) -> Any:
        try:
            return super().decode_complex_value(field_name, field, value)
        except ValueError:
            return value  # not JSON: validation then says what it expected, naming the variable

    def __call__(self) -> dict[str, Any]:
        # EnvSettingsSource skips variables that match no setting; pass them on for extra="forbid" to refuse.
        return {**self._unknown(), **super().__call__()}

    def _unknown(self) -> dict[str, str]:
        settings = {name.lower() for name in self.settings_cls.model_fields}
        unknown: dict[str, str] = {}
        for name, value in self.environ.items():
            if not name.upper().startswith(ENV_PREFIX) or name.upper() in NOT_SETTINGS:
                continue
            key = name[len(ENV_PREFIX) :].lower()
            if key.split(ENV_NESTED_DELIMITER)[0] not in settings:
                unknown[key] = value
        return unknown

    def names(self, loc: tuple[str | int, ...]) -> list[str]:
        """The variables that gave the value at loc: the one holding it (maybe as JSON), else those inside it."""
        by_upper = {name.upper(): name for name in self.environ}
        for end in range(len(loc), 0, -1):
            holder = by_upper.get(_env_name(loc[:end]))
            if holder is not None:
                return [holder]
        inside = _env_name(loc) + ENV_NESTED_DELIMITER
        return sorted(name for upper, name in by_upper.items() if upper.startswith(inside))


def _env_name(loc: tuple[str | int, ...]) -> str:
    return ENV_PREFIX + ENV_NESTED_DELIMITER.join(str(part) for part in loc).upper()


class _ConfigFile(YamlConfigSettingsSource):
    """The YAML file of --config or SPEEDUP_CONFIG; unlike the base class, a missing file is an error."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        self.path = path
        if not path.expanduser().is_file():
            raise ConfigError(f"cannot read config file {path}: no such file")
        super().__init__(settings_cls, yaml_file=path)

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        try:
            data = super()._read_file(file_path)
        except (OSError, yaml.YAMLError) as error:
            raise ConfigError(f"cannot read config file {self.path}: {error}") from error
        if not isinstance(data, dict):
            raise ConfigError(f"config file {self.path} must hold a mapping of settings")
        return data


@dataclass(frozen=True)
class _Sources:
    """The environment and the optional config file one load reads, below the flags."""

    environment: _Environment
    config_file: _ConfigFile | None

    @classmethod
    def read(cls, settings_cls: type[BaseSettings], config_file: Path | None, environ: Mapping[str, str]) -> _Sources:
        if config_file is None and environ.get("SPEEDUP_CONFIG"):
            config_file = Path(environ["SPEEDUP_CONFIG"])
        file_source = None if config_file is None else _ConfigFile(settings_cls, config_file)
        return cls(_Environment(settings_cls, environ), file_source)

    def ordered(self) -> tuple[PydanticBaseSettingsSource, ...]:
        return (self.environment,) if self.config_file is None else (self.environment, self.config_file)


# settings_customise_sources is a classmethod: this is how load_settings hands it the sources of one load.
_SOURCES: ContextVar[_Sources | None] = ContextVar("speedup_settings_sources", default=None)


def load_settings(
    config_file: Path | None = None,
    flags: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """environ=None reads os.environ; {} means no environment at all. Flags set to None are not given."""
    sources = _Sources.read(Settings, config_file, os.environ if environ is None else environ)
    given = {name: value for name, value in (flags or {}).items() if value is not None}
    token = _SOURCES.set(sources)
    try:
        return Settings(**given)
    except ValidationError as error:
        problems = "; ".join(_Origins(given, sources).describe(e) for e in error.errors())
        raise ConfigError(f"invalid configuration: {problems}") from error
    except SettingsError as error:
        raise ConfigError(f"invalid configuration: {error}") from error
    finally:
        _SOURCES.reset(token)


_MISSING = object()
_JSON_TYPES = frozenset({"dict_type", "model_type", "model_attributes_type", "list_type"})


@dataclass(frozen=True)
class _Origin:
    label: str
    exact: bool  # the label names the value itself, so the error needs no path
    environment: bool = False


class _Origins:
    """Says which flag, environment variable or config file gave the value an error is about."""

    def __init__(self, flags: dict[str, Any], sources: _Sources) -> None:
        self.sources = sources
        self.data: list[tuple[str, dict[str, Any]]] = [("flag", flags), ("env", sources.environment())]
        if sources.config_file is not None:
            self.data.append(("file", sources.config_file()))

    def describe(self, error: ErrorDetails) -> str:
        loc = tuple(error["loc"])
        origins = self.of(loc) if loc else []
        message = (
            "not a setting (extra inputs are not permitted)" if error["type"] == "extra_forbidden" else error["msg"]
        )
        if error["type"] in _JSON_TYPES and any(origin.environment for origin in origins):
            message += " (in the environment, give it as JSON)"
        path = ".".join(str(part) for part in loc) or "config"
        if len(origins) == 1 and origins[0].exact:
            return f"{origins[0].label}: {message}"
        if origins:
            return f"{path} ({', '.join(origin.label for origin in origins)}): {message}"
        return f"{path}: {message}"

    def of(self, loc: tuple[str | int, ...]) -> list[_Origin]:
        found: list[_Origin] = []
        for kind, data in self.data:
            value = _lookup(data, loc)
            if value is _MISSING:
                continue
            found.extend(self._origins(kind, loc))
            if not isinstance(value, dict):
                break  # a plain value replaces whatever the sources below gave
        return found

    def _origins(self, kind: str, loc: tuple[str | int, ...]) -> list[_Origin]:
        if kind == "flag":
            return [_Origin(f"flag --{str(loc[0]).replace('_', '-')}", exact=len(loc) == 1)]
        if kind == "file":
            assert self.sources.config_file is not None
            return [_Origin(f"config file {self.sources.config_file.path}", exact=False)]
        names = self.sources.environment.names(loc)
        return [
            _Origin(f"environment variable {n}", exact=_env_name(loc) == n.upper(), environment=True) for n in names
        ]


def _lookup(data: Any, loc: tuple[str | int, ...]) -> Any:
    for part in loc:
        if not isinstance(data, dict) or part not in data:
            return _MISSING
        data = data[part]
    return data
