"""Shared fixtures: the real llama.cpp server, the real embedder, proxies on free ports."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import uvicorn

from memory_store.embedding.embedder import MiniLMEncoder, TextEncoder
from proxy.app import create_app
from proxy.config import load_settings
from proxy.container import AppContainer, build_container, load_encoder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """A uvicorn server for an ASGI app, in a thread with its own event loop."""

    def __init__(self, app: Any, port: int | None = None, lifespan: str = "off") -> None:
        self.port = port or free_port()
        self.app = app
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan=lifespan)
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout_s: float = 15) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=timeout_s)


@dataclass
class RunningProxy:
    url: str
    container: AppContainer
    server: ServerThread

    def client(self, api_key: str = "unused", **kwargs: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=api_key, max_retries=0, **kwargs)

    def async_client(self, api_key: str = "unused") -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.url + "/v1", api_key=api_key, max_retries=0)

    def settle(self, timeout_s: float = 30.0) -> None:
        """Wait until background work (episode writes, verification, lessons) is done."""
        deadline = time.time() + timeout_s
        while self.container.background.pending:
            if time.time() > deadline:
                raise TimeoutError("background tasks did not finish")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stops the server; its lifespan drains background work and closes the container."""
        self.server.stop(timeout_s=self.container.settings.lifecycle.background_timeout_s + 30)
        self.container.close_stores()  # in case the lifespan did not get to run


@pytest.fixture(scope="session")
def encoder() -> MiniLMEncoder:
    """MiniLM on torch: the reference the ONNX encoder is checked against."""
    return MiniLMEncoder()


@pytest.fixture(scope="session")
def proxy_encoder() -> TextEncoder:
    """The encoder a proxy uses by default (MiniLM on onnxruntime)."""
    return load_encoder(load_settings(environ={}))


@pytest.fixture(scope="session")
def llama_url() -> Iterator[str]:
    """The real llama.cpp server with the default model, shared by the whole session."""
    from proxy.container import start_embedded_backend

    server, url = start_embedded_backend(load_settings(environ={}))
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def verifier_url() -> Iterator[str]:
    """The bundled Qwen2.5-Coder-1.5B, as the proxy would embed it: the reuse verifier and refine's checker."""
    from proxy.container import start_embedded_verifier

    server, url = start_embedded_verifier(load_settings(environ={}))
    try:
        yield url
    finally:
        server.stop()


ProxyFactory = Callable[..., RunningProxy]


@pytest.fixture
def start_proxy(proxy_encoder: TextEncoder, tmp_path: Path) -> Iterator[ProxyFactory]:
    running: list[RunningProxy] = []

    def factory(
        backend_url: str, data_dir: Path | None = None, encoder_override: Any = None, **overrides: Any
    ) -> RunningProxy:
        # Behaviour tests must not flip to `cold` because CI's two cores are busy: a generous
        # memory deadline here; the default 50 ms deadline has its own fail-open tests.
        flags = {
            "backend_url": backend_url,
            "data_dir": str(data_dir or tmp_path / "memory"),
            "memory_deadline_ms": 5000,
            **overrides,
            # Audits are random extra backend calls: off unless a test asks for them.
            "policy": {"audit_rate": 0.0, **overrides.get("policy", {})},
        }
        settings = load_settings(flags=flags, environ={})
        container = build_container(settings, encoder=encoder_override or proxy_encoder)
        server = ServerThread(create_app(container), lifespan="on").start()
        proxy = RunningProxy(url=f"http://127.0.0.1:{server.port}", container=container, server=server)
        running.append(proxy)
        return proxy

    yield factory
    for proxy in running:
        proxy.stop()


@pytest.fixture
def stub_backend() -> Iterator[ServerThread]:
    """A fast fake backend, for behaviour where the model's text does not matter."""
    from bench.stub_backend import create_stub_app

    server = ServerThread(create_stub_app()).start()
    yield server
    server.stop()


def stub_url(server: ServerThread) -> str:
    return f"http://127.0.0.1:{server.port}/v1"


@pytest.fixture
def raw_http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client
