"""Start the stub backend and the proxy as real processes, for benchmarks."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.conftest import free_port


def wait_http(url: str, timeout_s: float = 120.0) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not come up")


@contextlib.contextmanager
def process(
    args: list[str], health_url: str, log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process, up once `health_url` answers; terminated (then killed) on exit."""
    with log.open("w") as out:
        child = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        try:
            wait_http(health_url)
            yield child
        finally:
            child.terminate()
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()


@contextlib.contextmanager
def stub_backend(workdir: Path, delay_s: float = 0.0, jitter: float = 0.0) -> Iterator[str]:
    port = free_port()
    args = [
        sys.executable, "-m", "bench.stub_backend", "--port", str(port),
        "--delay", str(delay_s), "--jitter", str(jitter),
    ]  # fmt: skip
    with process(args, f"http://127.0.0.1:{port}/health", workdir / "stub.log"):
        yield f"http://127.0.0.1:{port}/v1"


@contextlib.contextmanager
def proxy(backend_url: str, workdir: Path, *extra: str, env: dict[str, str] | None = None) -> Iterator[str]:
    port = free_port()
    args = [
        sys.executable, "-m", "proxy.cli", "serve", "--backend-url", backend_url, "--port", str(port),
        "--data-dir", str(workdir / "memory"), "--log-level", "warning", *extra,
    ]  # fmt: skip
    with process(args, f"http://127.0.0.1:{port}/healthz", workdir / "proxy.log", env=env):
        yield f"http://127.0.0.1:{port}/v1"
