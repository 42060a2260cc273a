"""Writing lessons: asks the backend model for a reflection and files it under its cluster.

Runs only in the background. Per kind of lesson:
- reflect:            a new lesson for each failed episode (rated bad or failing the verifier).
- multi_case_reflect: one lesson per cluster, distilled afresh from the new episode and its
                      nearest similar episodes whenever that set of cases changes.
- reflect_update:     one lesson per cluster, rewritten from the old lesson and each new episode.
                      A cluster gets its first lesson from a failure, or once it holds
                      `min_cluster_size` similar episodes.
A cluster is the nearest lesson of the kind whose centroid is within `cluster_similarity`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from memory_store.base import MemoryStore
from memory_store.episode import Episode
from memory_store.reflections import Reflection, ReflectionKind, ReflectionStore
from proxy.backend.client import OpenAIBackend
from proxy.lessons import clean_lesson, failed, multi_case_messages, reflect_messages, update_messages
from proxy.memory_modes import MemoryModes

log = logging.getLogger(__name__)

Event = Literal["new", "failed"]


@dataclass(frozen=True)
class ReflectionCost:
    """Backend tokens spent on one reflection call (also when nothing usable came back)."""

    tenant: str
    kind: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    reflection_id: str | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class _Draft:
    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float


class ReflectionWriter:
    def __init__(
        self,
        backend: OpenAIBackend,
        memory: MemoryStore,
        store: ReflectionStore,
        config: MemoryModes,
        on_cost: Callable[[ReflectionCost], None],
    ) -> None:
        self.backend = backend
        self.memory = memory
        self.store = store
        self.config = config
        self.on_cost = on_cost
        self._locks: dict[tuple[str, str, str], asyncio.Lock] = {}

    async def learn(
        self, kind: ReflectionKind, episode: Episode, vector: np.ndarray, model: str | None, event: Event
    ) -> Reflection | None:
        """Write or rewrite the lesson this episode calls for; None when it calls for none."""
        lock = self._locks.setdefault((episode.tenant, episode.scope, kind), asyncio.Lock())
        async with lock:  # one writer per cluster family: no duplicate clusters from concurrent episodes
            if kind == "reflect":
                return await self._reflect(episode, vector, model)
            if kind == "multi_case_reflect":
                return await self._multi_case(episode, vector, model)
            return await self._update(episode, vector, model, event)

    # -- the three kinds ---------------------------------------------------------------------

    async def _reflect(self, episode: Episode, vector: np.ndarray, model: str | None) -> Reflection | None:
        if not failed(episode):
            return None
        for known, _ in self.store.nearest(episode.tenant, episode.scope, "reflect", vector, 3):
            if episode.id in known.source_episode_ids:
                return None  # already reflected on this failure
        draft = await self._write(episode.tenant, "reflect", model, reflect_messages(episode))
        if draft is None:
            return None
        reflection = Reflection(
            tenant=episode.tenant,
            scope=episode.scope,
            kind="reflect",
            text=draft.text,
            vector=_unit(vector).tolist(),
            tokens=draft.completion_tokens,
            cost_tokens=draft.prompt_tokens + draft.completion_tokens,
            source_episode_ids=[episode.id],
        )
        return self._store(reflection, draft)

    async def _multi_case(self, episode: Episode, vector: np.ndarray, model: str | None) -> Reflection | None:
        similar = await self._similar(episode, vector, self.config.multi_case_size)
        cases = [episode, *similar[: self.config.multi_case_size - 1]]
        if len(cases) < 2 and not failed(episode):
            return None
        cluster = self._cluster(episode, "multi_case_reflect", vector)
        if cluster is not None and {c.id for c in cases} <= set(cluster.source_episode_ids):
            return None  # the same cases: the lesson would not change
        draft = await self._write(episode.tenant, "multi_case_reflect", model, multi_case_messages(cases))
        if draft is None:
            return None
        if cluster is None:
            reflection = Reflection(
                tenant=episode.tenant,
                scope=episode.scope,
                kind="multi_case_reflect",
                text=draft.text,
                vector=_unit(vector).tolist(),
                tokens=draft.completion_tokens,
                cost_tokens=draft.prompt_tokens + draft.completion_tokens,
                source_episode_ids=[c.id for c in cases],
            )
            return self._store(reflection, draft)
        revised = self._revise(cluster, draft, vector, episode.id)
        for case in cases[1:]:
            if case.id not in revised.source_episode_ids:
                revised.source_episode_ids.append(case.id)
        return self._store(revised, draft)

    async def _update(self, episode: Episode, vector: np.ndarray, model: str | None, event: Event) -> Reflection | None:
        cluster = self._cluster(episode, "reflect_update", vector)
        if cluster is None:
            if not failed(episode) and self.config.min_cluster_size > 1:
                similar = await self._similar(episode, vector, self.config.min_cluster_size)
                if len(similar) + 1 < self.config.min_cluster_size:
                    return None  # a one-off question: not worth a lesson yet
            draft = await self._write(episode.tenant, "reflect_update", model, update_messages(None, episode))
            if draft is None:
                return None
            reflection = Reflection(
                tenant=episode.tenant,
                scope=episode.scope,
                kind="reflect_update",
                text=draft.text,
                vector=_unit(vector).tolist(),
                tokens=draft.completion_tokens,
                cost_tokens=draft.prompt_tokens + draft.completion_tokens,
                source_episode_ids=[episode.id],
            )
            return self._store(reflection, draft)
        if episode.id in cluster.source_episode_ids and event != "failed":
            return None  # this episode is already folded in
        draft = await self._write(episode.tenant, "reflect_update", model, update_messages(cluster.text, episode))
        if draft is None:
            return None
        return self._store(self._revise(cluster, draft, vector, episode.id), draft)

    # -- helpers -----------------------------------------------------------------------------

    def _cluster(self, episode: Episode, kind: ReflectionKind, vector: np.ndarray) -> Reflection | None:
        found = self.store.nearest(episode.tenant, episode.scope, kind, vector, 1)
        if found and found[0][1] >= self.config.cluster_similarity:
            return found[0][0]
        return None

    async def _similar(self, episode: Episode, vector: np.ndarray, k: int) -> list[Episode]:
        """Other usable episodes of the scope within the cluster similarity, best first."""
        neighbours = await asyncio.to_thread(self.memory.search, episode.tenant, episode.scope, vector, k + 1)
        return [
            n.episode
            for n in neighbours
            if n.episode.id != episode.id and n.similarity >= self.config.cluster_similarity
        ][:k]

    @staticmethod
    def _revise(cluster: Reflection, draft: _Draft, vector: np.ndarray, episode_id: str) -> Reflection:
        revised = cluster.model_copy(deep=True)
        revised.text = draft.text
        revised.tokens = draft.completion_tokens
        revised.cost_tokens += draft.prompt_tokens + draft.completion_tokens
        revised.revisions += 1
        revised.updated_at = time.time()
        revised.absorb(vector, episode_id)
        return revised

    def _store(self, reflection: Reflection, draft: _Draft) -> Reflection:
        stored = self.store.put(reflection)
        self._spent(reflection.tenant, reflection.kind, draft, stored.id)
        return stored

    def _spent(self, tenant: str, kind: str, draft: _Draft, reflection_id: str | None) -> None:
        cost = ReflectionCost(tenant, kind, draft.prompt_tokens, draft.completion_tokens, draft.seconds, reflection_id)
        try:
            self.on_cost(cost)
        except Exception as error:  # noqa: BLE001 - accounting must not lose the lesson
            log.warning("reflection cost listener failed: %s", error)

    async def _write(self, tenant: str, kind: str, model: str | None, messages: list[dict[str, str]]) -> _Draft | None:
        body: dict[str, Any] = {
            "model": model or "default",
            "messages": messages,
            "max_tokens": self.config.reflection_max_tokens,
            "temperature": 0,
        }
        payload, seconds = await self.backend.complete(body)
        usage = payload.get("usage") or {}
        choice = (payload.get("choices") or [{}])[0]
        raw = (choice.get("message") or {}).get("content") or ""
        draft = _Draft(
            text=clean_lesson(raw, choice.get("finish_reason"), self.config.reflection_max_tokens),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            seconds=seconds,
        )
        if not draft.text:
            self._spent(tenant, kind, draft, None)  # paid for, but nothing to keep
            return None
        return draft


def _unit(vector: np.ndarray) -> np.ndarray:
    flat = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(flat))
    return flat / norm if norm > 0 else flat
