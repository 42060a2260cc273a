"""Remember: the quality gate and the write of a finished completion as an episode."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np

from memory_store.base import MemoryStore
from memory_store.episode import Episode, Usage
from memory_store.scope import MemoryKey
from proxy.metrics import ProxyMetrics

log = logging.getLogger(__name__)

_REFUSALS = ("i'm sorry, but i can", "i cannot help", "i can't help", "i can't assist", "i cannot assist")


def skip_reason(choice: dict[str, Any]) -> str | None:
    """Why a choice must not become an episode, or None when it is good to keep."""
    if choice.get("finish_reason") != "stop":
        return f"finish_{choice.get('finish_reason')}"
    message = choice.get("message") or {}
    if message.get("tool_calls") or message.get("function_call"):
        return "tool_call"
    content = message.get("content")
    if not isinstance(content, str) or not content.strip():
        return "empty"
    if content.strip().lower().startswith(_REFUSALS):
        return "refusal"
    return None


async def remember(
    memory: MemoryStore,
    metrics: ProxyMetrics,
    key: MemoryKey,
    vector: asyncio.Future[np.ndarray],
    answer: str,
    usage: Usage,
    baseline_tokens: int,
    baseline_seconds: float,
    source_tier: str,
    response_id: str,
) -> Episode | None:
    try:
        embedding = await asyncio.wait_for(vector, timeout=30)
        episode = Episode(
            tenant=key.tenant,
            scope=key.scope,
            question=key.question,
            context_fingerprint=key.context_fingerprint,
            answer=answer,
            usage=usage,
            baseline_completion_tokens=baseline_tokens,
            baseline_seconds=baseline_seconds,
            source_tier=source_tier,
            response_id=response_id,
        )
        stored = await asyncio.to_thread(memory.add, episode, embedding)
    except Exception as error:  # noqa: BLE001 - a failed write must never reach the client
        log.warning("could not store episode: %s", error)
        metrics.memory_failures.labels("store_error").inc()
        return None
    metrics.episodes_stored.labels(key.tenant).inc()
    return stored
