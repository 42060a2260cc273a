"""Opens the stats store that sits next to the memory in use."""

from __future__ import annotations

from pathlib import Path

from proxy.config import Settings
from proxy.stats.store import StatsStore


def open_stats_store(settings: Settings) -> StatsStore:
    spec = settings.memory
    if spec.startswith(("redis://", "rediss://", "unix://")):
        from proxy.stats.store_redis import RedisStatsStore

        options = getattr(settings, "redis", None)
        return RedisStatsStore.from_url(spec, prefix=getattr(options, "key_prefix", "speedup"))
    from proxy.stats.store_local import LocalStatsStore

    directory = Path(spec[len("local:") :]) if spec.startswith("local:") else settings.data_dir
    return LocalStatsStore(directory / "stats.sqlite3")
