"""Where the figures live: next to the memory in use, so replicas add up and restarts keep them."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from proxy.config import Settings

# (tenant, minute since the epoch) -> figure name -> increment
Batch = dict[tuple[str, int], dict[str, float]]
# first minute of a step -> figure name -> sum over the step's minutes (and the tenants asked for)
Rows = dict[int, dict[str, float]]

RETENTION_MINUTES = 8 * 24 * 60  # the longest window is 7 days; keep a day more


class StatsStore(Protocol):
    def add(self, batch: Batch) -> None:
        """Add increments; called from the recorder's flush thread only."""
        ...

    def read(self, tenants: list[str] | None, start_minute: int, end_minute: int, step_minutes: int) -> Rows:
        """Sums over [start_minute, end_minute) in steps, for the given tenants (None: all)."""
        ...

    def tenants(self) -> list[str]: ...

    def close(self) -> None: ...


def open_stats_store(settings: Settings) -> StatsStore:
    spec = settings.memory
    if spec.startswith(("redis://", "rediss://", "unix://")):
        from proxy.stats.store_redis import RedisStatsStore

        options = getattr(settings, "redis", None)
        return RedisStatsStore.from_url(spec, prefix=getattr(options, "key_prefix", "speedup"))
    from proxy.stats.store_local import LocalStatsStore

    directory = Path(spec[len("local:") :]) if spec.startswith("local:") else settings.data_dir
    return LocalStatsStore(directory / "stats.sqlite3")
