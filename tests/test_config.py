"""Settings: precedence of sources, and a bad config that fails at start with a clear message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from proxy.cli import build_parser
from proxy.config import ConfigError, LifecycleSettings, MemorySpec, Settings, load_settings


def test_flags_beat_environment_beat_yaml(tmp_path: Path) -> None:
    config = tmp_path / "speedup.yaml"
    config.write_text("port: 9001\nmemory: 'off'\npolicy:\n  guided_similarity: 0.5\n  max_exemplars: 2\n")
    environ = {"SPEEDUP_PORT": "9002", "SPEEDUP_POLICY__MAX_EXEMPLARS": "1", "SPEEDUP_API_KEYS": '{"k1": "acme"}'}
    settings = load_settings(config, {"port": 9003}, environ)
    assert settings.port == 9003
    assert settings.memory.kind == "off"
    assert settings.policy.guided_similarity == 0.5 and settings.policy.max_exemplars == 1
    assert settings.api_keys == {"k1": "acme"}


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("policy:\n  guided_similarity: 0.95\n  reuse_similarity: 0.9\n", "guided_similarity must not exceed"),
        ("memory: mongodb://x\n", "memory"),
        ("port: seventy\n", "port"),
        ("no_such_setting: 1\n", "no_such_setting"),
        ("host: 0.0.0.0\n", "no api_keys are configured"),
        ("- a list\n", "must hold a mapping"),
    ],
)
def test_bad_config_fails_with_a_message_naming_the_problem(tmp_path: Path, content: str, needle: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(content)
    with pytest.raises(ConfigError, match=needle):
        load_settings(config, environ={})


def test_environment_values_are_strings_numbers_booleans_or_json() -> None:
    environ = {
        "SPEEDUP_PORT": "8401",
        "SPEEDUP_HOST": "localhost",
        "SPEEDUP_BACKEND_SUPPORTS_N": "true",
        "SPEEDUP_MEMORY": "redis://cache:6379/1",
        "SPEEDUP_MEMORY_MODES__DEFAULT": "reflect",
        "SPEEDUP_MEMORY_MODES__TENANTS": '{"acme": "exemplars"}',
        "SPEEDUP_POLICY__GUIDED_SIMILARITY": "0.7",
        "SPEEDUP_POLICY__LOWER_N": "False",
        "SPEEDUP_API_KEYS": '{"k1": "acme"}',
        "SPEEDUP_LIMITS": '{"capacity_per_tenant": 5}',
        "SPEEDUP_REDIS__REPLICA_ID": "proxy-1",
    }
    settings = load_settings(environ=environ)
    assert (settings.port, settings.host, settings.backend_supports_n) == (8401, "localhost", True)
    assert settings.memory == MemorySpec(kind="redis", url="redis://cache:6379/1")
    assert settings.memory_modes.default == "reflect" and settings.memory_modes.tenants == {"acme": "exemplars"}
    assert settings.policy.guided_similarity == 0.7 and settings.policy.lower_n is False
    assert settings.api_keys == {"k1": "acme"}
    assert settings.limits.capacity_per_tenant == 5 and settings.redis.replica_id == "proxy-1"


def test_variables_that_are_not_settings_are_ignored(tmp_path: Path) -> None:
    config = tmp_path / "speedup.yaml"
    config.write_text("port: 9001\n")
    settings = load_settings(environ={"SPEEDUP_CONFIG": str(config), "SPEEDUP_CACHE_DIR": "/models", "HOME": "/x"})
    assert settings.port == 9001


def test_empty_environ_means_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPEEDUP_PORT", "8402")
    assert load_settings().port == 8402  # environ=None reads os.environ
    assert load_settings(environ={}).port == 8400


@pytest.mark.parametrize(
    ("environ", "needle"),
    [
        ({"SPEEDUP_CLI": "1"}, r"environment variable SPEEDUP_CLI: not a setting \(extra inputs are not permitted\)"),
        ({"SPEEDUP_NO__SUCH": "1"}, "environment variable SPEEDUP_NO__SUCH: not a setting"),
        ({"SPEEDUP_LIMITS__TTL": "1"}, "environment variable SPEEDUP_LIMITS__TTL: not a setting"),
        ({"SPEEDUP_PORT": "seventy"}, "environment variable SPEEDUP_PORT: Input should be a valid integer"),
        ({"SPEEDUP_MEMORY": "mongodb://x"}, "environment variable SPEEDUP_MEMORY: .*must be 'local', 'local:/dir'"),
        ({"SPEEDUP_API_KEYS": "{not json"}, "environment variable SPEEDUP_API_KEYS: .*valid dictionary.*JSON"),
        ({"SPEEDUP_API_KEYS": '{"k": 1}'}, r"api_keys.k \(environment variable SPEEDUP_API_KEYS\)"),
        ({"SPEEDUP_LIFECYCLE__REQUESTS_TIMEOUT_S": "0"}, "SPEEDUP_LIFECYCLE__REQUESTS_TIMEOUT_S: .*greater than 0"),
    ],
)
def test_a_bad_environment_variable_is_named(environ: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_settings(environ=environ)


def test_a_bad_value_names_the_file_or_the_flag_it_came_from(tmp_path: Path) -> None:
    config = tmp_path / "speedup.yaml"
    config.write_text("port: seventy\nno_such_setting: 1\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(config, environ={})
    assert f"port (config file {config}): Input should be a valid integer" in str(raised.value)
    assert f"no_such_setting (config file {config}): not a setting" in str(raised.value)
    with pytest.raises(ConfigError, match="flag --port: Input should be a valid integer"):
        load_settings(config, {"port": "eighty"}, {"SPEEDUP_NO_SUCH_SETTING": "1"})
    with pytest.raises(ConfigError, match="flag --memory: .*must be 'local'"):
        load_settings(flags={"memory": "bogus"}, environ={"SPEEDUP_MEMORY": "off"})


def test_a_model_level_error_names_every_source_that_fed_it(tmp_path: Path) -> None:
    config = tmp_path / "speedup.yaml"
    config.write_text("policy:\n  guided_similarity: 0.8\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(config, environ={"SPEEDUP_POLICY__REUSE_SIMILARITY": "0.7"})
    message = str(raised.value)
    assert "policy (environment variable SPEEDUP_POLICY__REUSE_SIMILARITY, config file" in message
    assert "guided_similarity must not exceed reuse_similarity" in message


def test_a_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "absent.yaml", environ={})
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(environ={"SPEEDUP_CONFIG": str(tmp_path / "absent.yaml")})


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("local", MemorySpec(kind="local")),
        ("local:/srv/memory", MemorySpec(kind="local", directory=Path("/srv/memory"))),
        ("off", MemorySpec(kind="off")),
        ("redis://redis:6379/0", MemorySpec(kind="redis", url="redis://redis:6379/0")),
        ("rediss://user:pw@redis:6380/2", MemorySpec(kind="redis", url="rediss://user:pw@redis:6380/2")),
        ("unix:///run/redis.sock", MemorySpec(kind="redis", url="unix:///run/redis.sock")),
    ],
)
def test_the_memory_spec_is_parsed_once_and_prints_as_written(spec: str, expected: MemorySpec) -> None:
    settings = load_settings(flags={"memory": spec, "data_dir": "/data"}, environ={})
    assert settings.memory == expected and str(settings.memory) == spec
    assert settings.memory.enabled == (spec != "off")
    assert settings.memory_dir == (Path("/srv/memory") if spec.startswith("local:") else Path("/data"))


@pytest.mark.parametrize("spec", ["bogus", "local:", "mongodb://x", ""])
def test_a_bad_memory_spec_keeps_its_message(spec: str) -> None:
    with pytest.raises(ConfigError, match="must be 'local', 'local:/dir', 'off' or a redis:// URL"):
        load_settings(flags={"memory": spec}, environ={})


def test_memory_takes_a_memory_spec_and_yaml_off(tmp_path: Path) -> None:
    spec = MemorySpec(kind="local", directory=tmp_path)
    assert load_settings(flags={"memory": spec}, environ={}).memory_dir == tmp_path
    config = tmp_path / "speedup.yaml"
    config.write_text("memory: off\n")  # YAML 1.1 reads an unquoted off as false
    assert not load_settings(config, environ={}).memory.enabled
    with pytest.raises(ValueError, match="url is required"):
        MemorySpec(kind="redis")


def test_lifecycle_timeouts_have_defaults_and_come_from_the_environment() -> None:
    assert load_settings(environ={}).lifecycle == LifecycleSettings(requests_timeout_s=30.0, background_timeout_s=30.0)
    settings = load_settings(environ={"SPEEDUP_LIFECYCLE__BACKGROUND_TIMEOUT_S": "5"})
    assert settings.lifecycle.background_timeout_s == 5.0 and settings.lifecycle.requests_timeout_s == 30.0


def test_public_bind_is_allowed_once_keys_exist() -> None:
    settings = load_settings(flags={"host": "0.0.0.0", "api_keys": {"sk-acme-0123456789ab": "acme"}}, environ={})
    assert settings.authenticated


def test_cli_rejects_bad_config_before_starting_anything(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "serve", "--memory", "bogus", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "memory" in result.stderr and "Traceback" not in result.stderr


def test_serve_help_documents_every_flag() -> None:
    parser = build_parser()
    serve = parser._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    flags = {option for action in serve._actions for option in action.option_strings}
    assert {"--backend-url", "--backend-api-key", "--host", "--port", "--memory", "--config"} <= flags
    assert "base_url" in serve.format_help()


def test_documented_config_is_a_valid_config() -> None:
    """docs/CONFIG.md lists every section with its defaults: it must load as it is written."""
    import re

    import yaml

    text = (Path(__file__).parent.parent / "docs" / "CONFIG.md").read_text()
    documented = yaml.safe_load(re.search(r"```yaml\n(.*?)```", text, re.S).group(1))
    settings = Settings.model_validate(documented)
    assert set(documented) == set(Settings.model_fields), "CONFIG.md and Settings disagree on sections"
    assert settings.policy == Settings().policy
