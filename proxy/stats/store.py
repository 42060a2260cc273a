"""Where the figures live: next to the memory in use, so replicas add up and restarts keep them."""

from __future__ import annotations

from typing import Protocol

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
