"""Prometheus metrics, kept in a registry owned by the app (no process-global state)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class _EpisodeGauge:
    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterable[Metric]:
        gauge = GaugeMetricFamily("speedup_episodes", "Episodes in memory", labels=["tenant"])
        try:
            counts = self._counts()
        except Exception:  # noqa: BLE001 - a scrape must never fail because memory is down
            counts = {}
        for tenant, count in counts.items():
            gauge.add_metric([tenant], count)
        yield gauge


class _FalseReuseGauge:
    def __init__(self, estimates: Callable[[], dict[str, tuple[float, float, int]]]) -> None:
        self._estimates = estimates

    def collect(self) -> Iterable[Metric]:
        rate = GaugeMetricFamily(
            "speedup_false_reuse_rate", "Audited share of reuses that disagreed", labels=["tenant"]
        )
        upper = GaugeMetricFamily(
            "speedup_false_reuse_upper_bound", "Wilson 95% upper bound of the false-reuse rate", labels=["tenant"]
        )
        for tenant, (estimate, bound, _) in self._estimates().items():
            rate.add_metric([tenant], estimate)
            upper.add_metric([tenant], bound)
        yield rate
        yield upper


class ProxyMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("speedup_requests", "Chat requests by tier", ["tenant", "tier"], registry=r)
        self.prompt_tokens = Counter(
            "speedup_backend_prompt_tokens", "Prompt tokens sent to the backend", ["tenant"], registry=r
        )
        self.completion_tokens = Counter(
            "speedup_backend_completion_tokens", "Completion tokens made by the backend", ["tenant"], registry=r
        )
        self.saved_tokens = Counter(
            "speedup_saved_tokens",
            "Completion tokens saved against the cold estimate",
            ["tenant", "tier"],
            registry=r,
        )
        self.saved_seconds = Counter(
            "speedup_saved_seconds",
            "Backend seconds saved against the cold estimate",
            ["tenant", "tier"],
            registry=r,
        )
        self.escalations = Counter(
            "speedup_escalations",
            "Guided calls cut off and retried at the next rung of the token ladder",
            ["tenant"],
            registry=r,
        )
        self.compute_units = Counter(
            "speedup_compute_units",
            "Adaptive compute: samples (vote) or rounds (refine) used, and skipped against the client's maximum",
            ["tenant", "method", "kind"],
            registry=r,
        )
        self.vote_stops = Counter(
            "speedup_vote_stops",
            "Why votes ended: agreement, confident_sample, no_consensus, max_samples, no_answer or cut_off",
            ["tenant", "reason"],
            registry=r,
        )
        self.refine_stops = Counter(
            "speedup_refine_stops",
            "Why refines ended: passed (a check passed), converged (a revision kept its answer) or max_rounds",
            ["tenant", "reason"],
            registry=r,
        )
        self.request_latency = Histogram(
            "speedup_request_latency_seconds",
            "Whole request latency",
            ["tier"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.proxy_latency = Histogram(
            "speedup_proxy_added_latency_seconds",
            "Latency added by the proxy (total minus backend time)",
            ["tier"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.memory_failures = Counter(
            "speedup_memory_failures",
            "Memory or embedder faults that made a request fail open",
            ["stage"],
            registry=r,
        )
        self.backend_errors = Counter(
            "speedup_backend_errors", "Backend failures returned to clients", ["code"], registry=r
        )
        self.episodes_stored = Counter("speedup_episodes_stored", "Episodes written to memory", ["tenant"], registry=r)
        self.episodes_skipped = Counter(
            "speedup_episodes_skipped", "Completions not stored, by reason", ["reason"], registry=r
        )
        self.reuse_audits = Counter(
            "speedup_reuse_audits",
            "Reuses checked against a fresh backend answer, by outcome (agree, disagree)",
            ["tenant", "outcome"],
            registry=r,
        )
        self.reuse_verifications = Counter(
            "speedup_reuse_verifications",
            "Unsure-band pairs put to the reuse verifier, by outcome (same, different, error)",
            ["tenant", "outcome"],
            registry=r,
        )
        self.reuse_verification_seconds = Histogram(
            "speedup_reuse_verification_seconds",
            "Time the reuse verifier took on one pair",
            buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0),
            registry=r,
        )

    def watch_false_reuse(self, estimates: Callable[[], dict[str, tuple[float, float, int]]]) -> None:
        """Gauges of the audited false-reuse rate and its 95% upper bound, per tenant."""
        self.registry.register(_FalseReuseGauge(estimates))

    def watch_episodes(self, counts: Callable[[], dict[str, int]]) -> None:
        self.registry.register(_EpisodeGauge(counts))

    def render(self) -> bytes:
        return generate_latest(self.registry)
