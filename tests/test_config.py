"""Settings: precedence of sources, and a bad config that fails at start with a clear message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from proxy.cli import build_parser
from proxy.config import ConfigError, load_settings


def test_flags_beat_environment_beat_yaml(tmp_path: Path) -> None:
    config = tmp_path / "speedup.yaml"
    config.write_text("port: 9001\nmemory: 'off'\npolicy:\n  guided_similarity: 0.5\n  max_exemplars: 2\n")
    environ = {"SPEEDUP_PORT": "9002", "SPEEDUP_POLICY__MAX_EXEMPLARS": "1", "SPEEDUP_API_KEYS": '{"k1": "acme"}'}
    settings = load_settings(config, {"port": 9003}, environ)
    assert settings.port == 9003
    assert settings.memory == "off"
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


def test_public_bind_is_allowed_once_keys_exist() -> None:
    settings = load_settings(flags={"host": "0.0.0.0", "api_keys": {"k": "acme"}}, environ={})
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

    from proxy.config import Settings

    text = (Path(__file__).parent.parent / "docs" / "CONFIG.md").read_text()
    documented = yaml.safe_load(re.search(r"```yaml\n(.*?)```", text, re.S).group(1))
    settings = Settings.model_validate(documented)
    assert set(documented) == set(Settings.model_fields), "CONFIG.md and Settings disagree on sections"
    assert settings.policy == Settings().policy
