"""Recall: embed the question and find the nearest episodes, within a deadline, failing open."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import numpy as np

from memory_store.base import MemoryStore
from memory_store.embedding.embedder import BatchingEmbedder
from memory_store.episode import Neighbour
from memory_store.scope import MemoryKey
from proxy.metrics import ProxyMetrics

log = logging.getLogger(__name__)


@dataclass
class Recollection:
    neighbours: list[Neighbour] = field(default_factory=list)
    # The embedding keeps running past the deadline so the answer can still be remembered.
    vector: asyncio.Future[np.ndarray] | None = None
    failure: str | None = None


async def recall(
    embedder: BatchingEmbedder,
    memory: MemoryStore,
    key: MemoryKey,
    k: int,
    deadline_s: float,
    metrics: ProxyMetrics,
) -> Recollection:
    loop = asyncio.get_running_loop()
    started = loop.time()
    vector_task = asyncio.ensure_future(embedder.embed(key.question))
    try:
        vector = await asyncio.wait_for(asyncio.shield(vector_task), deadline_s)
    except TimeoutError:
        metrics.memory_failures.labels("embed_timeout").inc()
        return Recollection(vector=vector_task, failure="embed_timeout")
    except Exception as error:  # noqa: BLE001 - fail open on any embedder fault
        log.warning("embedder failed, serving cold: %s", error)
        metrics.memory_failures.labels("embed_error").inc()
        return Recollection(failure="embed_error")
    try:
        neighbours = await memory.asearch(key.tenant, key.scope, vector, k)
    except Exception as error:  # noqa: BLE001 - fail open on any memory fault
        log.warning("memory search failed, serving cold: %s", error)
        metrics.memory_failures.labels("search_error").inc()
        return Recollection(vector=vector_task, failure="search_error")
    if loop.time() - started > deadline_s:
        metrics.memory_failures.labels("search_timeout").inc()
        return Recollection(vector=vector_task, failure="search_timeout")
    return Recollection(neighbours=neighbours, vector=vector_task)
