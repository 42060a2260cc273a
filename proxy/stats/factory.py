"""Opens the stats store that sits next to the memory in use."""

from __future__ import annotations

from proxy.config import Settings
from proxy.stats.store import StatsStore


def open_stats_store(settings: Settings) -> StatsStore:
    if settings.memory.kind == "redis":
        from proxy.stats.store_redis import RedisStatsStore

        assert settings.memory.url is not None  # MemorySpec guarantees it for kind 'redis'
        return RedisStatsStore.from_url(settings.memory.url, prefix=settings.redis.key_prefix)
    from proxy.stats.store_local import LocalStatsStore

    return LocalStatsStore(settings.memory_dir / "stats.sqlite3")
