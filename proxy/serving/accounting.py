"""What one request cost and saved: the record behind headers, metrics and stats."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

from budget.policy import Decision
from memory_store.scope import MemoryKey
from proxy.metrics import ProxyMetrics
from proxy.serving.equivalence import Verification

log = logging.getLogger(__name__)


@dataclass
class ComputeUse:
    """What adaptive compute (proxy/serving/vote.py, refine.py) spent, against the fixed method's cost.

    `used` and `allowed` are samples for a vote, rounds for a refine; `unit_tokens` is the mean
    completion tokens of a sample (or round) drawn, so the fixed method (all `allowed` of them)
    is estimated at `unit_tokens * allowed`.
    """

    method: str
    used: int
    allowed: int
    unit_tokens: float = 0.0
    agreement: float | None = None  # vote: share of the samples that gave the chosen answer
    confidence: float | None = None  # vote: the stopping rule's confidence in the majority
    checks: int = 0  # refine: check calls (the model asked about its own answer)
    tally: dict[str, int] | None = None  # vote: answer -> samples that gave it, most frequent first
    stop: str | None = None  # why it ended: vote.py StopReason, refine.py RefineStop

    @property
    def skipped(self) -> int:
        return max(0, self.allowed - self.used)


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
    attempts: int = 0  # backend calls of the token ladder (budget/compute/plan.py token_ladder)
    compute: ComputeUse | None = None
    response_id: str | None = None
    total_seconds: float = 0.0
    model: str = ""
    # Memory that learns (proxy/learning/): the mode used, the lesson injected, the memory coordinates.
    memory_mode: str | None = None
    reflection_id: str | None = None
    memory_key: MemoryKey | None = None
    verification: Verification | None = None  # the reuse verifier's word on the unsure band's candidate

    @property
    def fixed_units(self) -> int:
        """Answers the fixed method makes for this request: all samples or rounds allowed, else n."""
        return self.compute.allowed if self.compute is not None else self.client_n

    @property
    def saved_tokens(self) -> int:
        """Completion tokens saved against the same request answered cold with the fixed method."""
        units = self.fixed_units
        if self.decision.tier == "reuse":
            return self.decision.estimated_cold_tokens * units
        if self.decision.tier == "guided":
            return max(0, self.decision.estimated_cold_tokens * units - self.completion_tokens)
        if self.compute is not None:  # cold, but stopped early
            return max(0, round(self.compute.unit_tokens * units) - self.completion_tokens)
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
            | self._compute_headers()
        )

    def _compute_headers(self) -> dict[str, str]:
        found: dict[str, str] = {}
        if self.attempts > 1:
            found["x-speedup-attempts"] = str(self.attempts)
        compute = self.compute
        if compute is None:
            return found
        name = "x-speedup-samples" if compute.method == "vote" else "x-speedup-rounds"
        found[name] = f"{compute.used}/{compute.allowed}"
        if compute.agreement is not None:
            found["x-speedup-agreement"] = f"{compute.agreement:.2f}"
        if compute.confidence is not None:
            found["x-speedup-vote-confidence"] = f"{compute.confidence:.3f}"
        if compute.stop is not None:
            found[f"x-speedup-{compute.method}-stop"] = compute.stop
        if compute.tally:
            found["x-speedup-votes"] = ",".join(
                f"{quote(key, safe='')}={count}" for key, count in compute.tally.items()
            )
        return found

    def _memory_headers(self) -> dict[str, str]:
        found = {"x-speedup-memory-mode": self.memory_mode, "x-speedup-reflection": self.reflection_id}
        if self.verification is not None:
            found["x-speedup-reuse-verified"] = self.verification.header()
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
        if account.compute is not None:
            method = account.compute.method
            m.compute_units.labels(account.tenant, method, "used").inc(account.compute.used)
            m.compute_units.labels(account.tenant, method, "skipped").inc(account.compute.skipped)
            stops = m.vote_stops if method == "vote" else m.refine_stops
            if account.compute.stop is not None:
                stops.labels(account.tenant, account.compute.stop).inc()
        m.request_latency.labels(tier).observe(account.total_seconds)
        m.proxy_latency.labels(tier).observe(max(0.0, account.total_seconds - account.backend_seconds))
        for observer in self.observers:
            try:
                observer.request_finished(account)
            except Exception as error:  # noqa: BLE001 - accounting must never fail a request
                log.warning("request observer failed: %s", error)
