"""Figures in Redis, shared by every replica: one hash per tenant and minute, and per tenant and hour.

Keys follow memory_store/redis/keys.py (a tenant's keys share the `{prefix}:{<tenant>}:` hash tag):

    {prefix}:{<tenant>}:stats:m:<minute>   hash: figure -> sum over that minute (2-day TTL)
    {prefix}:{<tenant>}:stats:h:<hour>     hash: figure -> sum over that hour (8-day TTL)
    {prefix}:stats:tenants                 set: tenants that have figures

Minute hashes serve the 1h and 24h windows and expire after two days; hour hashes serve the
7d window and expire after eight. Every write is HINCRBYFLOAT, so replicas add to the same
figures without coordination, and latency histograms merge bucket by bucket.
"""

from __future__ import annotations

from typing import Any

import redis

from memory_store.redis.keys import RedisKeys
from proxy.stats.store import RETENTION_MINUTES, Batch, Rows

PREFIX = "speedup"
MINUTE_TTL_S = 2 * 24 * 3600
HOUR_TTL_S = RETENTION_MINUTES * 60


class RedisStatsStore:
    def __init__(self, client: redis.Redis, prefix: str = PREFIX) -> None:
        self.client = client
        self.keys = RedisKeys(prefix)
        self._tenants_key = f"{prefix}:stats:tenants"

    @classmethod
    def from_url(cls, url: str, prefix: str = PREFIX) -> RedisStatsStore:
        client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=2.0, socket_connect_timeout=2.0)
        return cls(client, prefix)

    def _minute_key(self, tenant: str, minute: int) -> str:
        return f"{self.keys.tenant_base(tenant)}:stats:m:{minute}"

    def _hour_key(self, tenant: str, hour: int) -> str:
        return f"{self.keys.tenant_base(tenant)}:stats:h:{hour}"

    def add(self, batch: Batch) -> None:
        if not batch:
            return
        pipe = self.client.pipeline(transaction=False)
        hours: dict[tuple[str, int], dict[str, float]] = {}
        for (tenant, minute), figures in batch.items():
            key = self._minute_key(tenant, minute)
            for name, value in figures.items():
                pipe.hincrbyfloat(key, name, value)
            pipe.expire(key, MINUTE_TTL_S)
            hour = hours.setdefault((tenant, minute // 60), {})
            for name, value in figures.items():
                hour[name] = hour.get(name, 0.0) + value
        for (tenant, hour_number), figures in hours.items():
            key = self._hour_key(tenant, hour_number)
            for name, value in figures.items():
                pipe.hincrbyfloat(key, name, value)
            pipe.expire(key, HOUR_TTL_S)
        pipe.sadd(self._tenants_key, *{tenant for tenant, _ in batch})
        pipe.execute()

    def read(self, tenants: list[str] | None, start_minute: int, end_minute: int, step_minutes: int) -> Rows:
        names = self.tenants() if tenants is None else tenants
        hourly = step_minutes % 60 == 0 and start_minute % 60 == 0
        pipe = self.client.pipeline(transaction=False)
        starts: list[int] = []
        for tenant in names:
            if hourly:
                for hour in range(start_minute // 60, -(-end_minute // 60)):
                    pipe.hgetall(self._hour_key(tenant, hour))
                    starts.append(hour * 60)
            else:
                for minute in range(start_minute, end_minute):
                    pipe.hgetall(self._minute_key(tenant, minute))
                    starts.append(minute)
        rows: Rows = {}
        found: list[dict[str, Any]] = pipe.execute() if starts else []
        for minute, figures in zip(starts, found, strict=True):
            if not figures:
                continue
            step = start_minute + (minute - start_minute) // step_minutes * step_minutes
            target = rows.setdefault(step, {})
            for name, value in figures.items():
                target[name] = target.get(name, 0.0) + float(value)
        return rows

    def tenants(self) -> list[str]:
        return sorted(self.client.smembers(self._tenants_key))  # type: ignore[arg-type]

    def close(self) -> None:
        self.client.close()
