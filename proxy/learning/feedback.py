"""Feedback: rates a completion the proxy served, and may correct it.

- bad:  the response's episode is never reused or injected again; for a reuse, the source
        episode is demoted. In reflect modes a lesson about the failure is written (background).
- good: the episode is marked good (a correction's gold stays gold).
- correction: becomes a gold episode for the same question, scope and context, reusable.
Tenant-scoped: a tenant can only rate its own responses (anything else is 404).
A rating that arrives before the episode is written is kept and applied when it is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from memory_store.base import MemoryStore
from memory_store.embedding.embedder import BatchingEmbedder
from memory_store.episode import Episode, Usage
from proxy.gateway.errors import ProxyError
from proxy.gateway.text import has_control_characters_in_prose
from proxy.learning.costs import LearningCounters
from proxy.learning.response_log import ResponseEntry, ResponseLog
from proxy.learning.service import Learning
from proxy.listeners import tell
from proxy.metrics import ProxyMetrics

log = logging.getLogger(__name__)

RatingListener = Callable[[str, str, str], None]  # (tenant, tier, rating)


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    response_id: str = Field(min_length=1, max_length=200)
    rating: Literal["good", "bad"]
    correction: str | None = Field(None, max_length=100_000)

    @field_validator("correction")
    @classmethod
    def _a_real_answer(cls, correction: str | None) -> str | None:
        """Stripped, then checked: it becomes a gold answer, reused as it is."""
        if correction is None:
            return None
        correction = correction.strip()
        if not correction:
            raise ValueError("a correction must not be empty or only whitespace")
        if has_control_characters_in_prose(correction):
            raise ValueError("a correction must not hold control characters other than tab and line breaks")
        return correction


class FeedbackResult(BaseModel):
    response_id: str
    rating: str
    tier: str
    status: Literal["applied", "pending"] = Field(
        description="pending: the episode is still being written; the rating is applied when it is"
    )
    episode_id: str | None = None
    gold_episode_id: str | None = None


class FeedbackService:
    def __init__(
        self,
        *,
        memory: MemoryStore,
        responses: ResponseLog,
        learning: Learning,
        embedder: BatchingEmbedder,
        metrics: ProxyMetrics,
        counters: LearningCounters,
        listeners: Sequence[RatingListener],
    ) -> None:
        self.memory = memory
        self.responses = responses
        self.learning = learning
        self.embedder = embedder
        self.metrics = metrics
        self.counters = counters
        self.listeners = listeners

    async def apply(self, tenant: str, feedback: FeedbackRequest) -> FeedbackResult:
        entry = await self.responses.aset_rating(tenant, feedback.response_id, feedback.rating)
        if entry is None:
            raise ProxyError(404, f"no response {feedback.response_id!r} for this API key", code="response_not_found")
        result = FeedbackResult(
            response_id=entry.response_id, rating=feedback.rating, tier=entry.tier, status="pending"
        )
        episode = None
        if entry.episode_id is not None:
            episode = await self.memory.aget(tenant, entry.episode_id)
        if episode is not None:
            await self.learning.rate(episode, feedback.rating, entry)
            result.status = "applied"
            result.episode_id = episode.id
        if feedback.correction is not None:
            gold = await self.add_correction(entry, feedback.correction, episode)
            result.gold_episode_id = gold.id
        self.counters.feedback.labels(tenant, entry.tier, feedback.rating).inc()
        tell(self.listeners, tenant, entry.tier, feedback.rating, what="feedback")
        return result

    async def add_correction(self, entry: ResponseEntry, correction: str, original: Episode | None) -> Episode:
        """The corrected answer as a gold episode of the asked question."""
        vector = await self.embedder.embed(entry.question)
        estimate = max(1, len(correction) // 4)
        tokens = max(estimate, original.usage.completion_tokens if original is not None else 0)
        gold = Episode(
            tenant=entry.tenant,
            scope=entry.scope,
            question=entry.question,
            question_digest=entry.question_digest,
            context_fingerprint=entry.context_fingerprint,
            context=entry.context,
            answer=correction,
            usage=Usage(completion_tokens=tokens, total_tokens=tokens),
            baseline_completion_tokens=original.baseline_completion_tokens if original is not None else tokens,
            baseline_seconds=original.baseline_seconds if original is not None else 0.0,
            source_tier="feedback",
            rating="gold",
        )
        stored = await self.memory.aadd(gold, vector)
        if stored.rating != "gold":  # the correction repeats a stored answer: promote that one
            stored.rating = "gold"
            await self.memory.aupdate(stored)
        self.metrics.episodes_stored.labels(entry.tenant).inc()
        return stored
