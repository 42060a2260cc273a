"""Remember: the quality gate and the write of a finished completion as an episode."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import numpy as np

from memory_store.base import MemoryStore
from memory_store.episode import Episode, Usage
from memory_store.scope import MemoryKey
from proxy.metrics import ProxyMetrics
from proxy.serving.accounting import Accounting
from proxy.serving.background import BackgroundWork

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
            context=list(key.context),
            answer=answer,
            usage=usage,
            baseline_completion_tokens=baseline_tokens,
            baseline_seconds=baseline_seconds,
            source_tier=source_tier,
            response_id=response_id,
        )
        stored = await memory.aadd(episode, embedding)
    except Exception as error:  # noqa: BLE001 - a failed write must never reach the client
        log.warning("could not store episode: %s", error)
        metrics.memory_failures.labels("store_error").inc()
        return None
    metrics.episodes_stored.labels(key.tenant).inc()
    return stored


class EpisodeWriter:
    """Turns a finished completion into an episode, in the background, and can wait until it is durable."""

    def __init__(
        self, memory: MemoryStore, metrics: ProxyMetrics, background: BackgroundWork, durable_wait_s: float = 1.0
    ) -> None:
        self.memory = memory
        self.metrics = metrics
        self.background = background
        self.durable_wait_s = durable_wait_s

    def start(
        self, key: MemoryKey, vector: asyncio.Future[np.ndarray], payload: dict[str, Any], account: Accounting
    ) -> asyncio.Task[Episode | None] | None:
        """Start writing the episode of the first choice; None when it fails the quality gate."""
        choices = payload.get("choices") or []
        if not choices:
            return None
        reason = skip_reason(choices[0])
        if reason is not None:
            self.metrics.episodes_skipped.labels(reason).inc()
            return None
        samples = max(1, len(choices))
        last = account.last_usage or account.usage
        completion = int(last.get("completion_tokens") or 0) // samples
        prompt = int(last.get("prompt_tokens") or 0) // samples
        usage = Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)
        decision = account.decision
        cold = decision.tier == "cold"
        return self.background.spawn(
            remember(
                self.memory,
                self.metrics,
                key,
                vector,
                answer=choices[0]["message"]["content"],
                usage=usage,
                baseline_tokens=completion if cold else decision.estimated_cold_tokens,
                baseline_seconds=account.backend_seconds if cold else decision.estimated_cold_seconds,
                source_tier=decision.tier,
                response_id=str(payload.get("id") or ""),
            )
        )

    async def until_durable(self, stored: asyncio.Task[Any] | None, vector: asyncio.Future[np.ndarray]) -> None:
        """Answer only once the episode is written (or spooled), so a crash right after the response
        loses nothing; bounded, because memory must never hold up an answer for long, and skipped
        when the embedding is still running past the memory deadline."""
        if stored is None or not vector.done():
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(stored), self.durable_wait_s)
