"""What one request cost and saved: the record behind headers, metrics and stats."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from budget.policy import Decision
from memory_store.scope import MemoryKey
from proxy.metrics import ProxyMetrics

log = logging.getLogger(__name__)


@dataclass
class Accounting:
    """What one request cost and saved; feeds the response headers, metrics and stats."""

    tenant: str
    decision: Decision
    started: float
    client_n: int = 1
    usage: dict[str, int] = field(default_factory=dict)
    last_usage: dict[str, Any] = field(default_factory=dict)
    backend_seconds: float = 0.0
    escalated: bool = False
    response_id: str | None = None
    total_seconds: float = 0.0
    model: str = ""
    # Memory that learns (proxy/learning/): the mode used, the lesson injected, the memory coordinates.
    memory_mode: str | None = None
    reflection_id: str | None = None
    memory_key: MemoryKey | None = None

    @property
    def saved_tokens(self) -> int:
        if self.decision.tier == "reuse":
            return self.decision.estimated_cold_tokens
        if self.decision.tier == "guided":
            cold = self.decision.estimated_cold_tokens * self.client_n
            return max(0, cold - self.usage.get("completion_tokens", 0))
        return 0

    @property
    def saved_seconds(self) -> float:
        if self.decision.tier == "reuse":
            return self.decision.estimated_cold_seconds
        if self.decision.tier == "guided" and self.saved_tokens > 0:
            return max(0.0, self.decision.estimated_cold_seconds - self.backend_seconds)
        return 0.0

    @property
    def completion_tokens(self) -> int:
        return int(self.usage.get("completion_tokens", 0))

    @property
    def prompt_tokens(self) -> int:
        return int(self.usage.get("prompt_tokens", 0))

    def headers(self, saved_tokens: int | None = None) -> dict[str, str]:
        timing = {}
        if self.total_seconds:
            # Standard Server-Timing: what the proxy itself added, and the backend's share.
            proxy_ms = max(0.0, self.total_seconds - self.backend_seconds) * 1000
            timing["server-timing"] = f"proxy;dur={proxy_ms:.2f}, backend;dur={self.backend_seconds * 1000:.2f}"
        return (
            timing
            | {
                "x-speedup-tier": self.decision.tier,
                "x-speedup-similarity": f"{self.decision.similarity:.4f}",
                "x-speedup-episodes": ",".join(self.decision.episode_ids),
                "x-speedup-saved-tokens": str(self.saved_tokens if saved_tokens is None else saved_tokens),
            }
            | self._memory_headers()
        )

    def _memory_headers(self) -> dict[str, str]:
        found = {"x-speedup-memory-mode": self.memory_mode, "x-speedup-reflection": self.reflection_id}
        return {name: value for name, value in found.items() if value}


class RequestObserver(Protocol):
    """Told of every finished chat request (stats, audit). Must be quick and must not raise."""

    def request_finished(self, account: Accounting) -> None: ...


class RequestLedger:
    """Books a finished request once: Prometheus metrics, then every observer (the stats)."""

    def __init__(self, metrics: ProxyMetrics, observers: Sequence[RequestObserver]) -> None:
        self.metrics = metrics
        self.observers = observers

    def finish(self, account: Accounting) -> None:
        m = self.metrics
        tier = account.decision.tier
        m.requests.labels(account.tenant, tier).inc()
        m.prompt_tokens.labels(account.tenant).inc(account.prompt_tokens)
        m.completion_tokens.labels(account.tenant).inc(account.completion_tokens)
        m.saved_tokens.labels(account.tenant, tier).inc(account.saved_tokens)
        m.saved_seconds.labels(account.tenant, tier).inc(account.saved_seconds)
        account.total_seconds = time.perf_counter() - account.started
        m.request_latency.labels(tier).observe(account.total_seconds)
        m.proxy_latency.labels(tier).observe(max(0.0, account.total_seconds - account.backend_seconds))
        for observer in self.observers:
            try:
                observer.request_finished(account)
            except Exception as error:  # noqa: BLE001 - accounting must never fail a request
                log.warning("request observer failed: %s", error)
