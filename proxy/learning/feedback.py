"""Feedback: `POST /v1/feedback` rates a completion the proxy served, and may correct it.

- bad:  the response's episode is never reused or injected again; for a reuse, the source
        episode is demoted. In reflect modes a lesson about the failure is written (background).
- good: the episode is marked good (a correction's gold stays gold).
- correction: becomes a gold episode for the same question, scope and context, reusable.
Tenant-scoped: a tenant can only rate its own responses (anything else is 404).
A rating that arrives before the episode is written is kept and applied when it is.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from memory_store.episode import Episode, Usage
from proxy.container import AppContainer
from proxy.gateway.auth import tenant_for
from proxy.gateway.errors import ProxyError
from proxy.learning.response_log import ResponseEntry
from proxy.learning.service import Learning

log = logging.getLogger(__name__)


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    response_id: str = Field(min_length=1, max_length=200)
    rating: Literal["good", "bad"]
    correction: str | None = Field(None, min_length=1, max_length=100_000)


class FeedbackResult(BaseModel):
    response_id: str
    rating: str
    tier: str
    status: Literal["applied", "pending"] = Field(
        description="pending: the episode is still being written; the rating is applied when it is"
    )
    episode_id: str | None = None
    gold_episode_id: str | None = None


async def apply_feedback(container: AppContainer, tenant: str, feedback: FeedbackRequest) -> FeedbackResult:
    learning: Learning | None = container.learning
    if learning is None or container.memory is None:
        raise ProxyError(404, f"no response {feedback.response_id!r} (memory is off)", code="response_not_found")
    entry = await asyncio.to_thread(learning.responses.set_rating, tenant, feedback.response_id, feedback.rating)
    if entry is None:
        raise ProxyError(404, f"no response {feedback.response_id!r} for this API key", code="response_not_found")
    result = FeedbackResult(response_id=entry.response_id, rating=feedback.rating, tier=entry.tier, status="pending")
    episode = None
    if entry.episode_id is not None:
        episode = await asyncio.to_thread(container.memory.get, tenant, entry.episode_id)
    if episode is not None:
        await learning.rate(episode, feedback.rating, entry)
        result.status = "applied"
        result.episode_id = episode.id
    if feedback.correction is not None:
        gold = await add_correction(container, learning, entry, feedback.correction, episode)
        result.gold_episode_id = gold.id
    learning.counters.feedback.labels(tenant, entry.tier, feedback.rating).inc()
    for listener in container.feedback_listeners:
        try:
            listener(tenant, entry.tier, feedback.rating)
        except Exception as error:  # noqa: BLE001 - stats must not fail feedback
            log.warning("feedback listener failed: %s", error)
    return result


async def add_correction(
    container: AppContainer, learning: Learning, entry: ResponseEntry, correction: str, original: Episode | None
) -> Episode:
    """The corrected answer as a gold episode of the asked question."""
    assert container.memory is not None
    vector = await learning.embedder.embed(entry.question)
    estimate = max(1, len(correction) // 4)
    tokens = max(estimate, original.usage.completion_tokens if original is not None else 0)
    gold = Episode(
        tenant=entry.tenant,
        scope=entry.scope,
        question=entry.question,
        context_fingerprint=entry.context_fingerprint,
        answer=correction.strip(),
        usage=Usage(completion_tokens=tokens, total_tokens=tokens),
        baseline_completion_tokens=original.baseline_completion_tokens if original is not None else tokens,
        baseline_seconds=original.baseline_seconds if original is not None else 0.0,
        source_tier="feedback",
        rating="gold",
    )
    stored = await asyncio.to_thread(container.memory.add, gold, vector)
    if stored.rating != "gold":  # the correction repeats a stored answer: promote that one
        stored.rating = "gold"
        await asyncio.to_thread(container.memory.update, stored)
    container.metrics.episodes_stored.labels(entry.tenant).inc()
    return stored


def feedback_router(container: AppContainer) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/feedback")
    async def feedback(request: Request) -> FeedbackResult:
        from proxy.app import read_body  # the app includes this router: import at call time

        tenant = tenant_for(request, container.settings)  # authenticate before reading the body
        raw = await read_body(request, container.settings.max_body_bytes)
        try:
            body = FeedbackRequest.model_validate_json(raw)
        except ValidationError as error:
            first = error.errors()[0]
            param = ".".join(str(p) for p in first["loc"]) or None
            raise ProxyError(400, f"invalid feedback: {param}: {first['msg']}", param=param) from error
        return await apply_feedback(container, tenant, body)

    return router
