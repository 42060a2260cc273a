"""The composition root: builds every long-lived part of a running proxy once, and closes them once.

Only the app factory (proxy/app.py), the CLI and tests import this module; every other part is
handed the narrow pieces it uses.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from budget.policy import BudgetPolicy
from budget.reuse.audit import AuditLedger, FalseReuseEstimate, LocalAuditLedger
from memory_store.base import MemoryStore
from memory_store.embedding.embedder import BatchingEmbedder, MiniLMEncoder, TextEncoder
from memory_store.local_store import LocalMemory
from memory_store.reflections import ReflectionStore
from proxy.admin.service import AdminMemory
from proxy.backend.client import OpenAIBackend
from proxy.config import Settings
from proxy.gateway.auth import Authenticator
from proxy.learning.costs import LearningCosts, LearningCounters
from proxy.learning.feedback import FeedbackService
from proxy.learning.memory_modes import VerifierConfig
from proxy.learning.reflection_writer import ReflectionWriter
from proxy.learning.response_log import ResponseLog
from proxy.learning.service import Learning
from proxy.learning.verifier import Verifier
from proxy.metrics import ProxyMetrics
from proxy.serving.accounting import RequestLedger, RequestObserver
from proxy.serving.adaptive import AdaptiveCompute
from proxy.serving.audit import ReuseAuditor
from proxy.serving.background import BackgroundWork
from proxy.serving.equivalence import ReuseVerifier
from proxy.serving.pipeline import ChatPipeline, MemoryParts
from proxy.serving.refine import RefineRunner
from proxy.serving.refine_checks import ConsistencyCheck, DraftCheck, VerifierCheck
from proxy.serving.remember import EpisodeWriter
from proxy.serving.vote import VoteRunner
from proxy.stats.factory import open_stats_store
from proxy.stats.recorder import StatsRecorder
from proxy.stats.routes import StatsSources

log = logging.getLogger(__name__)


@dataclass
class LearningParts:
    learning: Learning
    feedback: FeedbackService
    admin: AdminMemory
    reflections: ReflectionStore
    responses: ResponseLog


@dataclass
class AppContainer:
    settings: Settings
    backend: OpenAIBackend
    metrics: ProxyMetrics
    background: BackgroundWork
    authenticator: Authenticator
    stats: StatsRecorder
    pipeline: ChatPipeline
    stats_sources: StatsSources
    memory: MemoryStore | None = None
    embedder: BatchingEmbedder | None = None
    learned: LearningParts | None = None
    embedded_server: Any = None
    reuse_verifier: ReuseVerifier | None = None
    verifier_model: OpenAIBackend | None = None  # when refine checks with it
    # Told of every finished request, every rating (tenant, tier, rating) and every lesson's or judge's cost.
    observers: list[RequestObserver] = field(default_factory=list)
    feedback_listeners: list[Callable[[str, str, str], None]] = field(default_factory=list)
    reflection_listeners: list[Callable[[Any], None]] = field(default_factory=list)
    # Parts with a connection of their own (the shared audit ledger), closed after the stores.
    other_closers: list[tuple[str, Callable[[], Any]]] = field(default_factory=list)
    _closed: bool = False
    _close_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def learning(self) -> Learning | None:
        return self.learned.learning if self.learned is not None else None

    async def aclose(self) -> None:
        """Drain background work (bounded), then close stores and clients, then stop the embedded backend."""
        if self._closed:
            return
        log.info("shutdown: draining %d background tasks", self.background.pending)
        await self.background.drain(self.settings.lifecycle.background_timeout_s)
        clients = [self.backend] + ([self.reuse_verifier.backend] if self.reuse_verifier else [])
        clients += [self.verifier_model] if self.verifier_model else []
        for client in clients:
            try:
                await client.aclose()
            except Exception as error:  # noqa: BLE001 - the stores must still be closed
                log.warning("closing a backend client failed: %s", error)
        self.close_stores()

    def close_stores(self) -> None:
        """Blocking part of the shutdown; what a store still buffers (figures, hit counts, spool) goes out here."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        for name, close in self._closers():
            try:
                close()
            except Exception as error:  # noqa: BLE001 - close every part even when one fails
                log.warning("closing %s failed: %s", name, error)

    def _closers(self) -> list[tuple[str, Callable[[], Any]]]:
        closers: list[tuple[str, Callable[[], Any]]] = [("stats", self.stats.close)]
        if self.learned is not None:
            closers += [("reflections", self.learned.reflections.close), ("responses", self.learned.responses.close)]
        if self.memory is not None:
            closers.append(("memory", self.memory.close))
        if self.embedder is not None:
            closers.append(("embedder", self.embedder.close))
        closers += self.other_closers
        if self.embedded_server is not None:
            closers.append(("embedded backend", self.embedded_server.stop))
        return closers


def open_memory(settings: Settings, dim: int) -> MemoryStore | None:
    spec = settings.memory
    if spec.kind == "off":
        return None
    if spec.kind == "redis":
        from memory_store.redis.store import RedisMemory

        return RedisMemory.from_settings(settings, dim)
    return LocalMemory(settings.memory_dir / "episodes.sqlite3", dim, limits=settings.limits)


def start_embedded_backend(settings: Settings) -> tuple[Any, str]:
    from proxy.backend.llamacpp import LlamaServerOptions
    from proxy.backend.model_files import ensure_default_model

    options = settings.embedded
    model_path = options.model_path or ensure_default_model()
    return _start_llama(
        LlamaServerOptions(
            model_path=model_path, ctx_size=options.ctx_size, n_parallel=options.n_parallel, threads=options.threads
        ),
        options.startup_timeout_s,
    )


def start_embedded_verifier(settings: Settings, warm: bool = True) -> tuple[Any, str]:
    """The bundled Qwen2.5-Coder-1.5B: the reuse verifier (short prompts, one token each) and refine's
    `verifier_model` check (a whole solve: 4,096 tokens a slot, ~115 MB of KV cache each). `warm`:
    cache the reuse verifier's fixed prompt first (nothing to warm when only refine asks it)."""
    from proxy.backend.llamacpp import LlamaServerOptions
    from proxy.backend.model_files import cache_root, ensure_verifier_model

    options = settings.reuse_verifier
    server, url = _start_llama(
        LlamaServerOptions(
            model_path=ensure_verifier_model(),
            ctx_size=4096 * options.n_parallel,
            n_parallel=options.n_parallel,
            threads=options.threads,
            alias=options.model,
            log_path=cache_root() / "logs" / "llama-verifier.log",
        ),
        options.startup_timeout_s,
    )
    try:
        if warm:
            _warm_verifier(url, options.model, options.n_parallel, options.startup_timeout_s)
    except Exception:
        server.stop()
        raise
    return server, url


def _warm_verifier(url: str, model: str, slots: int, timeout_s: float) -> None:
    """One check per slot before the first request: the prompt's fixed part (instructions and
    examples, ~250 tokens) is then cached, and a live check only reads the two questions."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from budget.reuse.equivalence import equivalence_body

    body = equivalence_body("How do I warm up?", "How do I get warmed up?", model)
    with httpx.Client(base_url=url, timeout=timeout_s) as client, ThreadPoolExecutor(slots) as pool:
        for reply in pool.map(lambda _: client.post("/chat/completions", json=body), range(slots)):
            reply.raise_for_status()


def _start_llama(options: Any, startup_timeout_s: float) -> tuple[Any, str]:
    from proxy.backend.llamacpp import EmbeddedLlamaServer

    server = EmbeddedLlamaServer(options)
    server.start()
    try:
        server.wait_healthy(startup_timeout_s)
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


def build_learning(
    settings: Settings,
    *,
    memory: MemoryStore,
    embedder: BatchingEmbedder,
    backend: OpenAIBackend,
    metrics: ProxyMetrics,
    background: BackgroundWork,
    feedback_listeners: list[Callable[[str, str, str], None]],
    reflection_listeners: list[Callable[[Any], None]],
) -> LearningParts:
    """Reflections and the response log live with local memory, or in data_dir for Redis."""
    modes = settings.memory_modes
    reflections = ReflectionStore(
        settings.memory_dir / "reflections.sqlite3", embedder.dim, settings.memory_modes.max_reflections_per_tenant
    )
    responses = ResponseLog(settings.memory_dir / "responses.sqlite3", modes.response_log_size)
    counters = LearningCounters(metrics.registry)
    costs = LearningCosts(counters, reflection_listeners)
    learning = Learning(
        memory=memory,
        embedder=embedder,
        modes=modes,
        reflections=reflections,
        responses=responses,
        verifier=Verifier(modes.verifier, backend),
        writer=ReflectionWriter(backend, memory, reflections, modes, costs.lesson_spent),
        costs=costs,
        counters=counters,
        background=background,
        lesson_floor=settings.policy.guided_similarity,
    )
    feedback = FeedbackService(
        memory=memory,
        responses=responses,
        learning=learning,
        embedder=embedder,
        metrics=metrics,
        counters=counters,
        listeners=feedback_listeners,
    )
    admin = AdminMemory(memory, reflections, responses, embedder, costs)
    return LearningParts(learning, feedback, admin, reflections, responses)


def build_container(settings: Settings, encoder: TextEncoder | None = None) -> AppContainer:
    """Everything the proxy needs; starts the embedded llama.cpp server when no backend URL is set."""
    embedded_server = None
    backend_url = settings.backend_url
    supports_n = settings.backend_supports_n
    verifier_server = None
    if backend_url is None:
        embedded_server, backend_url = start_embedded_backend(settings)
        supports_n = False  # llama.cpp's server rejects n>1
    try:
        if _wants_verifier_model(settings) and settings.reuse_verifier.url is None:
            verifier_server, _ = start_embedded_verifier(settings, warm=_verifies_reuse(settings))
        return _assemble(settings, backend_url, supports_n, embedded_server, encoder, verifier_server)
    except Exception:
        for server in (embedded_server, verifier_server):
            if server is not None:
                server.stop()
        raise


def _assemble(
    settings: Settings,
    backend_url: str,
    supports_n: bool | None,
    embedded_server: Any,
    encoder: TextEncoder | None,
    verifier_server: Any = None,
) -> AppContainer:
    metrics = ProxyMetrics()
    background = BackgroundWork()
    backend = OpenAIBackend(
        backend_url,
        api_key=settings.backend_api_key,
        timeout_s=settings.backend_timeout_s,
        connect_timeout_s=settings.backend_connect_timeout_s,
        supports_n=supports_n,
    )
    memory, embedder = _open_memory_parts(settings, metrics, encoder)
    stats = StatsRecorder(open_stats_store(settings), settings.pricing)
    observers: list[RequestObserver] = [stats]
    feedback_listeners: list[Callable[[str, str, str], None]] = [stats.record_rating]
    reflection_listeners: list[Callable[[Any], None]] = [stats.reflection_spent]
    learned = memory_parts = verifier = None
    other_closers: list[tuple[str, Callable[[], Any]]] = []
    if memory is not None and embedder is not None:
        learned = build_learning(
            settings,
            memory=memory,
            embedder=embedder,
            backend=backend,
            metrics=metrics,
            background=background,
            feedback_listeners=feedback_listeners,
            reflection_listeners=reflection_listeners,
        )
        ledger = _audit_ledger(settings)
        close_ledger = getattr(ledger, "close", None)
        if close_ledger is not None:
            other_closers.append(("audit ledger", close_ledger))
        auditor = _auditor(settings, ledger, backend, embedder, metrics, background, stats, reflection_listeners)
        verifier = _reuse_verifier(settings, verifier_server, metrics, stats, reflection_listeners)
        memory_parts = _memory_parts(settings, memory, embedder, metrics, background, auditor, verifier)
    if verifier_server is not None:
        other_closers.append(("embedded verifier", verifier_server.stop))
    verifier_model = (
        OpenAIBackend(
            _verifier_model_url(settings, verifier_server),
            api_key=settings.reuse_verifier.api_key,
            timeout_s=settings.backend_timeout_s,
            supports_n=False,
        )
        if _refine_uses_verifier_model(settings)
        else None
    )
    pipeline = ChatPipeline(
        backend=backend,
        policy=BudgetPolicy(settings.policy, verifying=memory_parts is not None and memory_parts.verifier is not None),
        ledger=RequestLedger(metrics, observers),
        metrics=metrics,
        background=background,
        memory=memory_parts,
        learning=learned.learning if learned is not None else None,
        compute=_adaptive_compute(settings, backend, embedder, verifier_model),
    )
    return AppContainer(
        settings=settings,
        backend=backend,
        metrics=metrics,
        background=background,
        authenticator=Authenticator(settings.api_keys, settings.admin_key, settings.observability_protected),
        stats=stats,
        pipeline=pipeline,
        stats_sources=StatsSources(stats, memory, settings.pricing),
        memory=memory,
        embedder=embedder,
        learned=learned,
        embedded_server=embedded_server,
        reuse_verifier=verifier,
        verifier_model=verifier_model,
        observers=observers,
        feedback_listeners=feedback_listeners,
        reflection_listeners=reflection_listeners,
        other_closers=other_closers,
    )


def _audit_ledger(settings: Settings) -> AuditLedger:
    """Next to the memory: shared in Redis, so every replica keeps the error budget of all."""
    if settings.memory.kind == "redis":
        from memory_store.redis.audit_ledger import RedisAuditLedger

        assert settings.memory.url is not None  # MemorySpec guarantees it for kind 'redis'
        return RedisAuditLedger.from_url(settings.memory.url, prefix=settings.redis.key_prefix)
    return LocalAuditLedger()


def _adaptive_compute(
    settings: Settings, backend: OpenAIBackend, embedder: BatchingEmbedder | None, verifier_model: OpenAIBackend | None
) -> AdaptiveCompute:
    compute = settings.compute
    return AdaptiveCompute(
        config=compute,
        vote=VoteRunner(backend, embedder, compute.answer_similarity),
        refine=RefineRunner(backend, _draft_check(settings, backend, embedder, verifier_model)),
        open_by_default=not settings.api_keys,
    )


def _refine_uses_verifier_model(settings: Settings) -> bool:
    """The operator's verifier, where one is configured, checks refine drafts before anything else."""
    return settings.memory_modes.verifier.kind == "none" and settings.compute.refine_check == "verifier_model"


def _verifies_reuse(settings: Settings) -> bool:
    return settings.reuse_verifier.enabled and settings.memory.enabled


def _wants_verifier_model(settings: Settings) -> bool:
    """The verifier model serves the reuse verifier and refine's `verifier_model` check."""
    return _verifies_reuse(settings) or _refine_uses_verifier_model(settings)


def _verifier_model_url(settings: Settings, verifier_server: Any) -> str:
    return settings.reuse_verifier.url or verifier_server.base_url


def _draft_check(
    settings: Settings, backend: OpenAIBackend, embedder: BatchingEmbedder | None, verifier_model: OpenAIBackend | None
) -> DraftCheck:
    """Refine checks with the operator's verifier where one is configured, else as `compute.refine_check` says."""
    configured = settings.memory_modes.verifier
    if configured.kind != "none":
        return VerifierCheck(Verifier(configured, backend))
    if verifier_model is not None:  # built only when refine checks with it
        answers = settings.compute.answer_similarity
        return ConsistencyCheck(verifier_model, embedder, answers, temperature=0.0, model=settings.reuse_verifier.model)
    if settings.compute.refine_check == "judge":
        return VerifierCheck(Verifier(VerifierConfig(kind="judge"), backend))
    return ConsistencyCheck(backend, embedder, settings.compute.answer_similarity)


def _memory_parts(
    settings: Settings,
    memory: MemoryStore,
    embedder: BatchingEmbedder,
    metrics: ProxyMetrics,
    background: BackgroundWork,
    auditor: ReuseAuditor,
    verifier: ReuseVerifier | None,
) -> MemoryParts:
    return MemoryParts(
        embedder=embedder,
        store=memory,
        writer=EpisodeWriter(memory, metrics, background),
        recall_k=max(8, settings.policy.max_exemplars),
        deadline_s=settings.memory_deadline_ms / 1000,
        auditor=auditor,
        verifier=verifier,
    )


def _reuse_verifier(
    settings: Settings,
    verifier_server: Any,
    metrics: ProxyMetrics,
    stats: StatsRecorder,
    cost_listeners: list[Callable[[Any], None]],
) -> ReuseVerifier | None:
    options = settings.reuse_verifier
    if not options.enabled:
        return None
    url = _verifier_model_url(settings, verifier_server)
    return ReuseVerifier(
        backend=OpenAIBackend(url, api_key=options.api_key, timeout_s=options.timeout_s, supports_n=False),
        model=options.model,
        min_p_same=options.min_p_same,
        timeout_s=options.timeout_s,
        metrics=metrics,
        listeners=[stats.record_verification],
        cost_listeners=cost_listeners,
    )


def _auditor(
    settings: Settings,
    ledger: AuditLedger,
    backend: OpenAIBackend,
    embedder: BatchingEmbedder,
    metrics: ProxyMetrics,
    background: BackgroundWork,
    stats: StatsRecorder,
    cost_listeners: list[Callable[[Any], None]],
) -> ReuseAuditor:
    policy = settings.policy
    estimate = FalseReuseEstimate(policy.max_false_reuse, ledger, policy.audit_sync_interval_s)
    metrics.watch_false_reuse(lambda: {t: (c.rate, c.upper_bound, c.trials) for t, c in estimate.by_tenant().items()})
    return ReuseAuditor(
        backend=backend,
        embedder=embedder,
        estimate=estimate,
        metrics=metrics,
        background=background,
        rate=policy.audit_rate,
        agreement=policy.audit_agreement,
        audit_listeners=[stats.record_audit],
        cost_listeners=cost_listeners,
    )


def _open_memory_parts(
    settings: Settings, metrics: ProxyMetrics, encoder: TextEncoder | None
) -> tuple[MemoryStore | None, BatchingEmbedder | None]:
    if not settings.memory.enabled:
        return None, None
    embedder = BatchingEmbedder(encoder or load_encoder(settings))
    memory = open_memory(settings, embedder.dim)
    if memory is not None:
        store = memory
        metrics.watch_episodes(lambda: {t: store.count(t) for t in store.tenants()})
        if hasattr(store, "register_metrics"):  # limits, and for Redis: degraded state, spool depth
            store.register_metrics(metrics.registry)
    return memory, embedder
