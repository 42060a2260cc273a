"""The error budget on live traffic: reuses checked against a fresh answer, counted per scope.

A share `audit_rate` of reuses is also answered by the backend, in the background, after the
client got the reused answer; the two answers agree or not. From the counts come the estimated
false-reuse rate and its Wilson 95% bounds. A scope whose *lower* bound is above
`max_false_reuse` (wrong more often than the budget, with confidence) loses folded reuse: only
text identical but for case and spacing is reused there, until the evidence says otherwise.

The counts live in an `AuditLedger`: in this replica's memory, or in Redis next to the episodes
(memory_store/redis/audit_ledger.py), so that every replica closes a scope that any replica's audits
found over budget. The request path reads only this replica's copy, refreshed from the ledger in the
background at most every `sync_interval_s`: no I/O while a request waits.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

Z = 1.96  # 95%, two-sided


def wilson(failures: int, trials: int) -> tuple[float, float]:
    """The Wilson score interval of a rate; (0, 1) without trials."""
    if trials == 0:
        return 0.0, 1.0
    p = failures / trials
    denominator = 1 + Z * Z / trials
    centre = (p + Z * Z / (2 * trials)) / denominator
    half = Z * math.sqrt(p * (1 - p) / trials + Z * Z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class AuditCounts:
    agreements: int = 0
    disagreements: int = 0

    @property
    def trials(self) -> int:
        return self.agreements + self.disagreements

    @property
    def rate(self) -> float:
        return self.disagreements / self.trials if self.trials else 0.0

    @property
    def upper_bound(self) -> float:
        return wilson(self.disagreements, self.trials)[1]

    @property
    def lower_bound(self) -> float:
        return wilson(self.disagreements, self.trials)[0]

    def copy(self) -> AuditCounts:
        return AuditCounts(self.agreements, self.disagreements)


ScopeCounts = dict[tuple[str, str], AuditCounts]


class AuditLedger(Protocol):
    """Where audit outcomes are counted: per (tenant, scope) and per tenant."""

    def add(self, tenant: str, scope: str, agreed: bool) -> AuditCounts:
        """Count one outcome; returns the scope's counts after it."""
        ...

    def scopes(self) -> ScopeCounts:
        """Every scope's counts (what the budget decides on)."""
        ...

    def tenants(self) -> dict[str, AuditCounts]: ...


class LocalAuditLedger:
    """This replica's own counts, in memory: a restart starts afresh."""

    def __init__(self) -> None:
        self._scopes: ScopeCounts = {}
        self._tenants: dict[str, AuditCounts] = {}
        self._lock = threading.Lock()

    def add(self, tenant: str, scope: str, agreed: bool) -> AuditCounts:
        with self._lock:
            scope_counts = self._scopes.setdefault((tenant, scope), AuditCounts())
            for counts in (scope_counts, self._tenants.setdefault(tenant, AuditCounts())):
                if agreed:
                    counts.agreements += 1
                else:
                    counts.disagreements += 1
            return scope_counts.copy()

    def scopes(self) -> ScopeCounts:
        with self._lock:
            return {key: c.copy() for key, c in self._scopes.items()}

    def tenants(self) -> dict[str, AuditCounts]:
        with self._lock:
            return {t: c.copy() for t, c in self._tenants.items()}


class FalseReuseEstimate:
    """The error budget per scope, decided on a copy of the ledger's counts; thread-safe."""

    def __init__(
        self,
        max_false_reuse: float,
        ledger: AuditLedger | None = None,
        sync_interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_false_reuse = max_false_reuse
        self.ledger: AuditLedger = ledger or LocalAuditLedger()
        self.sync_interval_s = sync_interval_s
        self._clock = clock
        self._scopes: ScopeCounts = {}
        self._synced_at = clock()
        self._syncing = False
        self._lock = threading.Lock()

    def record(self, tenant: str, scope: str, agreed: bool) -> None:
        """Called from background work (the audit), never on the request path. The audited scope's copy
        is the ledger's count at once; other replicas' audits arrive with the next `sync`."""
        counts = self.ledger.add(tenant, scope, agreed)
        with self._lock:
            self._scopes[(tenant, scope)] = counts

    def sync(self) -> None:
        """This replica's copy from the ledger (other replicas' audits included)."""
        scopes: ScopeCounts | None = None
        try:
            scopes = self.ledger.scopes()
        except Exception as error:  # noqa: BLE001 - a ledger that is down keeps the last copy
            log.warning("audit: ledger not read: %s", error)
        with self._lock:
            if scopes is not None:
                self._scopes = scopes
            self._syncing = False
            self._synced_at = self._clock()

    def folded_reuse_allowed(self, tenant: str, scope: str) -> bool:
        with self._lock:
            counts = self._scopes.get((tenant, scope))
            stale = not self._syncing and self._clock() - self._synced_at >= self.sync_interval_s
            if stale:
                self._syncing = True
        if stale:
            threading.Thread(target=self.sync, name="audit-sync", daemon=True).start()
        return counts is None or counts.lower_bound <= self.max_false_reuse

    def by_tenant(self) -> dict[str, AuditCounts]:
        try:
            return self.ledger.tenants()
        except Exception as error:  # noqa: BLE001 - /metrics must not fail with the ledger
            log.warning("audit: ledger not read: %s", error)
            return {}
