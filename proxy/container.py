"""The app container: every long-lived part of a running proxy, built once and closed once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from budget.policy import BudgetPolicy
from memory_store.base import MemoryStore
from memory_store.embedding.embedder import BatchingEmbedder, MiniLMEncoder, TextEncoder
from memory_store.local_store import LocalMemory
from proxy.backend.client import OpenAIBackend
from proxy.config import Settings
from proxy.learning.service import Learning
from proxy.metrics import ProxyMetrics
from proxy.serving.accounting import RequestObserver
from proxy.stats.factory import open_stats_store
from proxy.stats.recorder import StatsRecorder

log = logging.getLogger(__name__)


@dataclass
class AppContainer:
    settings: Settings
    backend: OpenAIBackend
    policy: BudgetPolicy
    metrics: ProxyMetrics
    memory: MemoryStore | None = None
    embedder: BatchingEmbedder | None = None
    embedded_server: Any = None
    observers: list[RequestObserver] = field(default_factory=list)
    stats: StatsRecorder | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    learning: Learning | None = None  # reflections, response log, verifier, feedback; None when memory is off
    # Hooks for stats: feedback as (tenant, tier, rating); reflection costs as ReflectionCost.
    feedback_listeners: list[Callable[[str, str, str], None]] = field(default_factory=list)
    reflection_listeners: list[Callable[[Any], None]] = field(default_factory=list)

    def spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run work off the request path, keeping a reference so it is neither lost nor orphaned."""
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Wait for background work (episode writes) to finish."""
        pending = [t for t in self.tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout_s)

    async def aclose(self) -> None:
        await self.drain(5.0)
        await self.backend.aclose()
        if self.stats is not None:
            self.stats.close()
        if self.embedder is not None:
            self.embedder.close()
        if self.learning is not None:
            self.learning.close()
        if self.memory is not None:
            self.memory.close()
        if self.embedded_server is not None:
            self.embedded_server.stop()


def open_memory(settings: Settings, dim: int) -> MemoryStore | None:
    spec = settings.memory
    if spec == "off":
        return None
    if spec.startswith(("redis://", "rediss://", "unix://")):
        from memory_store.redis.store import RedisMemory

        return RedisMemory.from_settings(settings, dim)
    directory = Path(spec[len("local:") :]) if spec.startswith("local:") else settings.data_dir
    return LocalMemory(directory / "episodes.sqlite3", dim, limits=settings.limits)


def start_embedded_backend(settings: Settings) -> tuple[Any, str]:
    from proxy.backend.llamacpp import EmbeddedLlamaServer, LlamaServerOptions
    from proxy.backend.model_files import ensure_default_model

    options = settings.embedded
    model_path = options.model_path or ensure_default_model()
    server = EmbeddedLlamaServer(
        LlamaServerOptions(
            model_path=model_path,
            ctx_size=options.ctx_size,
            n_parallel=options.n_parallel,
            threads=options.threads,
        )
    )
    server.start()
    try:
        server.wait_healthy(options.startup_timeout_s)
    except Exception:
        server.stop()
        raise
    return server, server.base_url


def load_encoder(settings: Settings) -> TextEncoder:
    """MiniLM on onnxruntime when it can be exported, else on torch (the fp32 vectors)."""
    if settings.embedder in ("onnx", "onnx-int8"):
        try:
            from memory_store.embedding.onnx_encoder import OnnxMiniLMEncoder

            return OnnxMiniLMEncoder(threads=settings.embedder_threads, quantized=settings.embedder == "onnx-int8")
        except Exception as error:  # noqa: BLE001 - the torch path serves the same model
            log.warning("ONNX embedder unavailable (%s); using torch", error)
    return MiniLMEncoder(threads=settings.embedder_threads)


def build_container(settings: Settings, encoder: TextEncoder | None = None) -> AppContainer:
    """Everything the proxy needs; starts the embedded llama.cpp server when no backend URL is set."""
    embedded_server = None
    backend_url = settings.backend_url
    supports_n = settings.backend_supports_n
    if backend_url is None:
        embedded_server, backend_url = start_embedded_backend(settings)
        supports_n = False  # llama.cpp's server rejects n>1
    try:
        metrics = ProxyMetrics()
        memory = None
        embedder = None
        if settings.memory != "off":
            embedder = BatchingEmbedder(encoder or load_encoder(settings))
            memory = open_memory(settings, embedder.dim)
            if memory is not None:
                store = memory
                metrics.watch_episodes(lambda: {t: store.count(t) for t in store.tenants()})
                if hasattr(store, "register_metrics"):  # limits, and for Redis: degraded state, spool depth
                    store.register_metrics(metrics.registry)
        backend = OpenAIBackend(
            backend_url,
            api_key=settings.backend_api_key,
            timeout_s=settings.backend_timeout_s,
            connect_timeout_s=settings.backend_connect_timeout_s,
            supports_n=supports_n,
        )
        stats = StatsRecorder(open_stats_store(settings), settings.pricing)
    except Exception:
        if embedded_server is not None:
            embedded_server.stop()
        raise
    container = AppContainer(
        settings=settings,
        backend=backend,
        policy=BudgetPolicy(settings.policy),
        metrics=metrics,
        memory=memory,
        embedder=embedder,
        embedded_server=embedded_server,
        stats=stats,
    )
    container.observers.append(stats)
    container.feedback_listeners.append(stats.record_rating)
    container.reflection_listeners.append(stats.reflection_spent)
    if memory is not None:
        container.learning = Learning.open(container)
        container.observers.append(container.learning)
    return container
