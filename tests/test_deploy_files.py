"""The deployment files agree with the code: Dockerfile, docker-compose.yml, deploy/nginx.conf and deploy/proxy.yaml.

No Docker here: the files are parsed and checked against the CLI parser, the settings
model and each other (flags exist, ports and hosts line up, AOF is on, nginx lists the replicas).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from proxy.backend.model_files import MODEL_FILENAME
from proxy.cli import build_parser
from proxy.config import load_settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def replicas(services: dict[str, Any]) -> dict[str, Any]:
    return {name: s for name, s in services.items() if (s.get("command") or [None])[:2] == ["speedup-proxy", "serve"]}


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path or volume name."""
    result = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        result[target] = source
    return result


def nginx() -> str:
    return (ROOT / "deploy" / "nginx.conf").read_text()


def test_compose_has_redis_two_replicas_a_backend_and_a_load_balancer(services: dict[str, Any]) -> None:
    assert {"redis", "llama", "lb"} <= set(services)
    assert len(replicas(services)) == 2
    assert services["lb"]["image"].startswith("nginx")


def test_every_replica_flag_exists_in_the_cli_and_the_settings_load(services: dict[str, Any]) -> None:
    parser = build_parser()
    for name, service in replicas(services).items():
        command = service["command"]
        args = parser.parse_args(command[1:])  # exits (fails the test) on an unknown flag
        config_source = mounts(service)[str(args.config)]
        # The shipped keys are placeholders, refused on 0.0.0.0 unless the operator says so.
        flags = {"memory": args.memory, "backend_url": args.backend_url, "host": args.host, "port": args.port}
        flags["allow_placeholder_keys"] = True
        env = {k: str(v) for k, v in (service.get("environment") or {}).items()}
        settings = load_settings(ROOT / config_source, {**flags, "data_dir": args.data_dir}, environ=env)
        assert settings.host == "0.0.0.0" and settings.api_keys, name  # non-loopback needs keys
        assert settings.memory.kind == "redis"
        assert settings.redis.replica_id == name


def test_replicas_point_at_the_redis_and_backend_services_on_their_ports(services: dict[str, Any]) -> None:
    redis_command = services["redis"]["command"]
    redis_port = int(flag(redis_command, "--port")) if "--port" in redis_command else 6379
    llama_port = int(flag(services["llama"]["command"], "--port"))
    for service in replicas(services).values():
        command = service["command"]
        memory = urlsplit(flag(command, "--memory"))
        assert (memory.hostname, memory.port) == ("redis", redis_port)
        backend = urlsplit(flag(command, "--backend-url"))
        assert (backend.hostname, backend.port, backend.path) == ("llama", llama_port, "/v1")
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"


def test_redis_persists_with_aof_on_a_volume(compose: dict[str, Any], services: dict[str, Any]) -> None:
    command = services["redis"]["command"]
    assert flag(command, "--appendonly") == "yes"
    assert mounts(services["redis"])["/data"] in compose["volumes"]


def test_each_replica_has_its_own_data_volume_and_identity(compose: dict[str, Any], services: dict[str, Any]) -> None:
    data = {}
    for name, service in replicas(services).items():
        data_dir = flag(service["command"], "--data-dir")
        data[name] = mounts(service)[data_dir]  # the spool must survive a restart
        assert data[name] in compose["volumes"]
        assert service["hostname"] == name == service["environment"]["SPEEDUP_REDIS__REPLICA_ID"]
    assert len(set(data.values())) == len(data)  # never two replicas on one spool


def test_nginx_balances_over_exactly_the_replicas(services: dict[str, Any]) -> None:
    config = nginx()
    upstream = re.search(r"upstream\s+(\w+)\s*\{(.*?)\}", config, re.S)
    assert upstream is not None
    servers = set(re.findall(r"^\s*server\s+([\w.-]+:\d+)", upstream.group(2), re.M))
    expected = {f"{name}:{flag(s['command'], '--port')}" for name, s in replicas(services).items()}
    assert servers == expected
    assert re.search(rf"proxy_pass\s+http://{upstream.group(1)};", config)
    assert re.search(r"proxy_buffering\s+off;", config)  # streaming responses pass through
    assert re.search(r"proxy_next_upstream\s+error", config)  # a dead replica is skipped


def test_the_load_balancer_publishes_the_port_nginx_listens_on(services: dict[str, Any]) -> None:
    listen = int(re.search(r"listen\s+(\d+);", nginx()).group(1))  # type: ignore[union-attr]
    published = {int(p.split(":")[-1]) for p in services["lb"]["ports"]}
    assert published == {listen}
    assert mounts(services["lb"])["/etc/nginx/nginx.conf"] == "./deploy/nginx.conf"
    read_timeout = int(re.search(r"proxy_read_timeout\s+(\d+)s;", nginx()).group(1))  # type: ignore[union-attr]
    assert read_timeout > load_settings(environ={}).backend_timeout_s


def test_the_backend_serves_the_model_the_model_service_assembles(services: dict[str, Any]) -> None:
    model = services["model"]
    cache = model["environment"]["SPEEDUP_CACHE_DIR"]
    volume = mounts(model)[cache]
    llama = services["llama"]
    assert mounts(llama)[cache] == volume
    assert flag(llama["command"], "-m") == f"{cache}/models/{MODEL_FILENAME}"
    assert llama["depends_on"]["model"]["condition"] == "service_completed_successfully"


def test_dockerfile_installs_cpu_torch_pinned_like_the_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.M)
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_pin = next(d for d in dependencies if d.startswith("torch=="))
    torch_line = next(line for line in dockerfile.splitlines() if "pip install" in line and "torch==" in line)
    assert torch_pin in torch_line and "INDEX_URL" in torch_line
    assert "whl/cpu" in dockerfile
    exposed = int(re.search(r"^EXPOSE (\d+)", dockerfile, re.M).group(1))  # type: ignore[union-attr]
    for service in replicas(yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]).values():
        assert int(flag(service["command"], "--port")) == exposed
    for package in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"][
        "include"
    ]:
        assert f"COPY {package.rstrip('*')} " in dockerfile  # every package of the wheel is in the image
