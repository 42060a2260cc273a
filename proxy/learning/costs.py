"""What learning costs and does: Prometheus counters, per-tenant token tallies, and the stats' listeners."""

from __future__ import annotations

import logging
from collections import Counter as Tally
from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry, Counter

from proxy.learning.reflection_writer import ReflectionCost
from proxy.listeners import tell

log = logging.getLogger(__name__)

CostListener = Callable[[ReflectionCost], None]


class LearningCounters:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.reflection_tokens = Counter(
            "speedup_reflection_tokens",
            "Backend tokens spent writing lessons (background)",
            ["tenant", "kind", "part"],
            registry=r,
        )
        self.reflections_written = Counter(
            "speedup_reflections_written", "Lessons written or rewritten", ["tenant", "kind"], registry=r
        )
        self.lessons_injected = Counter(
            "speedup_lessons_injected", "Requests that got a lesson", ["tenant", "kind"], registry=r
        )
        self.verifier_tokens = Counter(
            "speedup_verifier_tokens", "Backend tokens spent judging answers", ["tenant", "part"], registry=r
        )
        self.feedback = Counter("speedup_feedback", "Feedback received", ["tenant", "tier", "rating"], registry=r)


class LearningCosts:
    """Books backend tokens spent on lessons and on judging answers: counted against the savings."""

    def __init__(self, counters: LearningCounters, listeners: Sequence[CostListener]) -> None:
        self.counters = counters
        self.listeners = listeners
        self.reflection_tokens: Tally[str] = Tally()  # tenant -> backend tokens spent on lessons
        self.verifier_tokens: Tally[str] = Tally()

    def lesson_spent(self, cost: ReflectionCost) -> None:
        self.reflection_tokens[cost.tenant] += cost.total_tokens
        self.counters.reflection_tokens.labels(cost.tenant, cost.kind, "prompt").inc(cost.prompt_tokens)
        self.counters.reflection_tokens.labels(cost.tenant, cost.kind, "completion").inc(cost.completion_tokens)
        self._tell(cost)

    def judge_spent(self, tenant: str, prompt_tokens: int, completion_tokens: int, model: str = "") -> None:
        self.verifier_tokens[tenant] += prompt_tokens + completion_tokens
        self.counters.verifier_tokens.labels(tenant, "prompt").inc(prompt_tokens)
        self.counters.verifier_tokens.labels(tenant, "completion").inc(completion_tokens)
        # A judge's verdict is learning overhead like a lesson: the stats count it against the savings.
        self._tell(ReflectionCost(tenant, "judge", prompt_tokens, completion_tokens, seconds=0.0, model=model))

    def _tell(self, cost: ReflectionCost) -> None:
        tell(self.listeners, cost, what="reflection")
