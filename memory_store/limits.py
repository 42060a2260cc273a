"""Bounded memory: per-tenant capacity (evicting the least useful episodes) and an optional TTL.

Usefulness is recency plus a bonus for hits: `last_used_at + hit_weight_s * ln(1 + hits)`,
so an episode reused e-fold more often is worth `hit_weight_s` more seconds of recency.
The TTL counts from an episode's creation: an answer older than `ttl_s` is dropped even if
it is still used, so that stale answers age out. Both apply to every memory backend.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric
from pydantic import BaseModel, Field


class MemoryLimits(BaseModel):
    capacity_per_tenant: int | None = Field(
        None, ge=1, description="most episodes kept per tenant; the least useful are evicted (None: unbounded)"
    )
    ttl_s: float | None = Field(None, gt=0, description="episodes older than this (since creation) expire")
    hit_weight_s: float = Field(86_400.0, ge=0, description="seconds of recency one e-fold of hits is worth")

    model_config = {"extra": "forbid"}


def usefulness(last_used_at: float, hits: int, hit_weight_s: float) -> float:
    """Eviction score: the lowest is evicted first."""
    return last_used_at + hit_weight_s * math.log1p(max(hits, 0))


def expired(created_at: float, now: float, limits: MemoryLimits) -> bool:
    return limits.ttl_s is not None and created_at < now - limits.ttl_s


class LimitCounters:
    """Evictions and expiries done by this process, exported as Prometheus counters."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.evicted = 0
        self.expired = 0

    def count(self, evicted: int = 0, expired: int = 0) -> None:
        with self._lock:
            self.evicted += evicted
            self.expired += expired

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "speedup_memory_removed", "Episodes removed by memory limits, by reason", labels=["reason"]
        )
        family.add_metric(["capacity"], self.evicted)
        family.add_metric(["ttl"], self.expired)
        yield family

    def register(self, registry: CollectorRegistry) -> None:
        registry.register(self)
