"""The `speedup-proxy` command."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from proxy.config import ConfigError, Settings, load_settings

DESCRIPTION = """OpenAI-compatible inference proxy that gets faster and cheaper with experience.

Point your OpenAI client's base_url at http://HOST:PORT/v1. Without --backend-url the proxy
starts llama.cpp's server with the bundled Qwen2.5-Coder-0.5B-Instruct model on loopback.
Settings come from defaults, then --config YAML, then SPEEDUP_* environment variables
(SPEEDUP_PORT=8401, SPEEDUP_POLICY__REUSE_SIMILARITY=0.9, SPEEDUP_API_KEYS='{"sk-1": "acme"}'),
then flags; each later source overrides the earlier ones. See docs/CONFIG.md."""


def _serve_parser(commands: Any) -> None:
    serve = commands.add_parser(
        "serve", help="run the proxy", description=DESCRIPTION, formatter_class=argparse.RawTextHelpFormatter
    )
    serve.add_argument("--config", type=Path, help="YAML settings file (default: $SPEEDUP_CONFIG; see docs/CONFIG.md)")
    serve.add_argument("--backend-url", help="OpenAI-compatible backend, e.g. http://127.0.0.1:8000/v1 (vLLM)")
    serve.add_argument("--backend-api-key", help="API key the proxy sends to the backend")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default 8400)")
    serve.add_argument("--memory", help="'local' (default), 'local:/dir', 'redis://host:6379/0' or 'off'")
    serve.add_argument(
        "--data-dir", type=Path, help="where local memory, learning and stats files live (default: user data dir)"
    )
    serve.add_argument("--admin-key", help="key for admin endpoints and the dashboard")
    serve.add_argument(
        "--allow-placeholder-keys",
        action="store_true",
        default=None,
        help="start on a non-loopback host even with the placeholder keys of an example config (logs a warning)",
    )
    serve.add_argument("--log-level", help="debug, info, warning, error")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="speedup-proxy", description=DESCRIPTION, formatter_class=argparse.RawTextHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _serve_parser(commands)
    from proxy.admin.cli import add_admin_commands

    add_admin_commands(commands)
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    flags = {
        name: getattr(args, name, None)
        for name in (
            "backend_url",
            "backend_api_key",
            "host",
            "port",
            "memory",
            "data_dir",
            "admin_key",
            "allow_placeholder_keys",
            "log_level",
        )
    }
    return load_settings(getattr(args, "config", None), flags)


def serve(settings: Settings) -> None:
    import uvicorn

    from proxy.app import create_app
    from proxy.container import build_container

    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per backend call is noise
    log = logging.getLogger("speedup-proxy")
    warn_about_placeholder_keys(settings, log)
    if settings.backend_url is None:
        log.info("no --backend-url: starting the embedded llama.cpp server (first run assembles the model)")
    app = create_app(lambda: build_container(settings))
    log.info("serving on http://%s:%d/v1", settings.host, settings.port)
    # On SIGTERM uvicorn stops accepting and lets in-flight requests finish (bounded); then the
    # app's lifespan drains background work and closes the container, embedded backend last.
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=settings.lifecycle.requests_timeout_s,
    )


def warn_about_placeholder_keys(settings: Settings, log: logging.Logger) -> None:
    """Placeholder keys start only where settings allow them; they never start silently."""
    for name in settings.placeholder_keys():
        log.warning("%s is a placeholder key: anyone who read the example config can use it", name)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ConfigError as error:
        print(f"speedup-proxy: {error}", file=sys.stderr)
        return 2
    if args.command == "serve":
        serve(settings)
        return 0
    return int(args.handler(args, settings))


if __name__ == "__main__":
    sys.exit(main())
