"""Prometheus view of a replica's Redis memory: degraded state, spool depth, feed and rebuilds."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric


class RedisMemoryCollector:
    def __init__(self, memory: Any) -> None:
        self.memory = memory

    def collect(self) -> Iterable[Metric]:
        m = self.memory
        yield GaugeMetricFamily(
            "speedup_memory_degraded",
            "1 while Redis is unreachable or slow (mirror reads, spooled writes)",
            value=1 if m.degraded else 0,
        )
        yield GaugeMetricFamily(
            "speedup_memory_spool_depth", "Writes spooled on local disk, waiting for Redis", value=m.spool.depth
        )
        yield GaugeMetricFamily(
            "speedup_memory_feed_lag_seconds",
            "Age of the last change-feed entry when it was applied",
            value=m.feed_lag_s,
        )
        yield GaugeMetricFamily(
            "speedup_memory_mirror_episodes", "Episodes in this replica's search mirror", value=m.mirror.count()
        )
        yield CounterMetricFamily(
            "speedup_memory_feed_events", "Change-feed entries applied to the mirror", value=m.feed_events
        )
        yield CounterMetricFamily("speedup_memory_mirror_rebuilds", "Full mirror rebuilds from Redis", value=m.rebuilds)
        yield CounterMetricFamily(
            "speedup_memory_spool_flushed", "Spooled writes replayed to Redis", value=m.spool.flushed
        )
