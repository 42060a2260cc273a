"""Empty, short and placeholder keys never open the door (issue 11): refused at start, with a clear message."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request

from proxy.cli import build_parser, settings_from_args, warn_about_placeholder_keys
from proxy.config import ConfigError, Settings, load_settings
from proxy.gateway.auth import Authenticator
from proxy.learning.memory_modes import MemoryModes

ROOT = Path(__file__).resolve().parents[1]
DEPLOY_CONFIG = ROOT / "deploy" / "proxy.yaml"
LONG_KEY = "sk-0123456789abcdef"
ADMIN_KEY = "admin-0123456789abcdef"


def load(**flags: Any) -> Settings:
    return load_settings(flags=flags, environ={})


def refused(message: str, config_file: Path | None = None, environ: dict[str, str] | None = None, **flags: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(config_file, flags, environ={} if environ is None else environ)
    assert message in str(caught.value), str(caught.value)
    return str(caught.value)


def request(headers: dict[str, str]) -> Request:
    raw = [(name.lower().encode(), value.encode("latin-1")) for name, value in headers.items()]
    return Request({"type": "http", "method": "GET", "path": "/", "headers": raw, "query_string": b""})


# -- empty keys -----------------------------------------------------------------------------------------


def test_empty_admin_key_is_refused_at_start() -> None:
    refused("admin_key is empty", admin_key="")
    refused("admin_key is empty", environ={"SPEEDUP_ADMIN_KEY": ""})


def test_an_empty_api_key_is_refused_at_start() -> None:
    refused("the key of tenant 'ghost' is empty", api_keys={"": "ghost"})
    refused("the key of tenant 'ghost' is empty", api_keys={"   ": "ghost"})


def test_a_key_no_header_can_carry_is_refused() -> None:
    refused("holds control characters", api_keys={" sk-padded-key-0001": "acme"})
    refused("holds control characters", admin_key="admin\nkey-0123456789")


def test_an_empty_header_never_matches_even_an_empty_key() -> None:
    """Settings refuse empty keys; the authenticator does not rely on it."""
    auth = Authenticator({"": "ghost"}, "")
    for headers in ({"x-api-key": ""}, {"authorization": "Bearer "}, {}):
        assert not auth.is_admin(request(headers))
        with pytest.raises(Exception, match="Incorrect API key"):
            auth.tenant_for(request(headers))


# -- short keys beyond loopback ---------------------------------------------------------------------------


def test_a_short_key_on_a_public_host_is_refused_at_start() -> None:
    message = refused("on a non-loopback host a key needs 16 or more", host="0.0.0.0", api_keys={"sk-short": "acme"})
    assert "'acme'" in message and "sk-short" not in message  # names the tenant, never shows the key
    refused("admin_key has 5 characters", host="0.0.0.0", api_keys={LONG_KEY: "acme"}, admin_key="short")


def test_short_keys_are_fine_on_loopback() -> None:
    settings = load(api_keys={"key-a": "acme"}, admin_key="admin-secret")
    assert settings.api_keys == {"key-a": "acme"}


def test_long_keys_start_on_a_public_host() -> None:
    settings = load(host="0.0.0.0", api_keys={LONG_KEY: "acme"}, admin_key=ADMIN_KEY)
    assert settings.authenticated


def test_the_admin_key_must_not_be_a_tenant_key() -> None:
    refused("admin_key is also a tenant's API key", api_keys={LONG_KEY: "acme"}, admin_key=LONG_KEY)


@pytest.mark.parametrize("tenant", ["", "  ", "a\nb", "a\x00b"])
def test_a_tenant_name_with_control_characters_is_refused_at_start(tenant: str) -> None:
    refused("tenant name", api_keys={LONG_KEY: tenant})


# -- placeholder keys ---------------------------------------------------------------------------------------


def test_the_placeholder_keys_of_the_deploy_config_are_refused_on_a_public_host() -> None:
    message = refused("is a placeholder", DEPLOY_CONFIG, host="0.0.0.0")
    assert "--allow-placeholder-keys" in message
    assert all(name in message for name in ("'team-a'", "'team-b'", "admin_key"))


def test_the_deploy_config_keys_are_long_enough_once_placeholders_are_allowed() -> None:
    settings = load_settings(DEPLOY_CONFIG, {"host": "0.0.0.0", "allow_placeholder_keys": True}, environ={})
    assert len(settings.placeholder_keys()) == 3


def test_placeholder_keys_start_with_the_flag_and_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    args = build_parser().parse_args(
        ["serve", "--config", str(DEPLOY_CONFIG), "--host", "0.0.0.0", "--allow-placeholder-keys"]
    )
    settings = settings_from_args(args)
    assert settings.allow_placeholder_keys
    with caplog.at_level(logging.WARNING):
        warn_about_placeholder_keys(settings, logging.getLogger("speedup-proxy"))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3 and all("placeholder" in w for w in warnings)


def test_placeholder_keys_stay_refused_without_the_flag_given() -> None:
    args = build_parser().parse_args(["serve", "--config", str(DEPLOY_CONFIG), "--host", "0.0.0.0"])
    assert args.allow_placeholder_keys is None  # not given: the file and the environment decide
    with pytest.raises(ConfigError, match="placeholder"):
        settings_from_args(args)


def test_the_cli_refuses_placeholder_keys_before_starting_anything(tmp_path: Path) -> None:
    command = ["serve", "--config", str(DEPLOY_CONFIG), "--host", "0.0.0.0", "--data-dir", str(tmp_path)]
    result = subprocess.run(
        [sys.executable, "-m", "proxy.cli", *command],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={name: value for name, value in os.environ.items() if not name.startswith("SPEEDUP_")},
    )
    assert result.returncode == 2
    assert "placeholder" in result.stderr and "Traceback" not in result.stderr


# -- observability ---------------------------------------------------------------------------------------------


def test_observability_is_protected_once_keys_are_configured_unless_set() -> None:
    assert not load().observability_protected
    assert load(api_keys={"key-a": "acme"}).observability_protected
    assert not load(api_keys={"key-a": "acme"}, protect_observability=False).observability_protected
    assert load(protect_observability=True).observability_protected


def test_without_the_admin_key_a_protected_proxy_shows_no_details() -> None:
    auth = Authenticator({"key-a": "acme"}, "admin-secret", protect_observability=True)
    assert not auth.may_observe(request({}))
    assert not auth.may_observe(request({"authorization": "Bearer key-a"}))
    assert auth.may_observe(request({"authorization": "Bearer admin-secret"}))
    assert Authenticator({"key-a": "acme"}, None, protect_observability=False).may_observe(request({}))
    assert Authenticator({}, None).may_observe(request({}))  # no keys: a loopback proxy, open


# -- per-request memory modes --------------------------------------------------------------------------------


def test_a_request_may_choose_its_memory_mode_only_where_configured() -> None:
    closed = MemoryModes()
    assert closed.resolve("acme", None, "reflect") == "exemplars"
    listed = MemoryModes(request_override_tenants=["acme"])
    assert listed.resolve("acme", None, "reflect") == "reflect"
    assert listed.resolve("globex", None, "reflect") == "exemplars"
    everyone = MemoryModes(allow_request_override=True)
    assert everyone.resolve("globex", None, "reflect") == "reflect"
