"""The error budget on live traffic: reuses checked against a fresh answer, counted per scope.

A share `audit_rate` of reuses is also answered by the backend, in the background, after the
client got the reused answer; the two answers agree or not. From the counts come the estimated
false-reuse rate and its Wilson 95% bounds. A scope whose *lower* bound is above
`max_false_reuse` (wrong more often than the budget, with confidence) loses folded reuse: only
text identical but for case and spacing is reused there, until the evidence says otherwise.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

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


class FalseReuseEstimate:
    """Audit outcomes per (tenant, scope) and per tenant; thread-safe, in memory."""

    def __init__(self, max_false_reuse: float) -> None:
        self.max_false_reuse = max_false_reuse
        self._scopes: dict[tuple[str, str], AuditCounts] = {}
        self._tenants: dict[str, AuditCounts] = {}
        self._lock = threading.Lock()

    def record(self, tenant: str, scope: str, agreed: bool) -> None:
        with self._lock:
            for counts in (
                self._scopes.setdefault((tenant, scope), AuditCounts()),
                self._tenants.setdefault(tenant, AuditCounts()),
            ):
                if agreed:
                    counts.agreements += 1
                else:
                    counts.disagreements += 1

    def folded_reuse_allowed(self, tenant: str, scope: str) -> bool:
        with self._lock:
            counts = self._scopes.get((tenant, scope))
            return counts is None or counts.lower_bound <= self.max_false_reuse

    def by_tenant(self) -> dict[str, AuditCounts]:
        with self._lock:
            return {t: AuditCounts(c.agreements, c.disagreements) for t, c in self._tenants.items()}
