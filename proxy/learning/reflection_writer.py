"""Writing lessons: clusters episodes of similar questions and asks the backend model for lessons.

Runs only in the background. Every new episode joins the nearest cluster of the mode's kind
(the nearest centroid within `cluster_similarity`, in its tenant and scope) or starts one. A
cluster gets lessons only once it holds `min_cluster_size` episodes: lessons are paid for
question types that recur, never for one-off questions. Then, per kind:

- reflect:            a lesson about what went wrong, written from each failed episode
                      (rated bad or failing the verifier); the cluster keeps the latest.
- multi_case_reflect: a lesson distilled afresh from the newest `multi_case_size` episodes of
                      the cluster (good and bad), whenever a new episode joins or one fails.
- reflect_update:     one lesson per cluster: the first distilled from its episodes, then
                      rewritten from the old lesson and each new (or newly failed) episode.

A cluster without a lesson yet is a Reflection with empty text; it is never injected.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from memory_store.base import MemoryStore
from memory_store.episode import Episode
from memory_store.reflections import Reflection, ReflectionKind, ReflectionStore
from proxy.backend.client import OpenAIBackend
from proxy.learning.lessons import clean_lesson, failed, multi_case_messages, reflect_messages, update_messages
from proxy.learning.memory_modes import MemoryModes

log = logging.getLogger(__name__)

Event = Literal["new", "failed"]
ClusterKey = tuple[str, str, ReflectionKind]


@dataclass(frozen=True)
class ReflectionCost:
    """Backend tokens spent on one reflection call (also when nothing usable came back)."""

    tenant: str
    kind: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    reflection_id: str | None = None
    model: str = ""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class _KeyLock:
    """A per-cluster-key lock and the writers holding or awaiting it (the entry goes when none is left)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


@dataclass
class _Draft:
    text: str  # empty: the model's reply held no usable lesson (it was still paid for)
    raw: str
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
        self._locks: dict[ClusterKey, _KeyLock] = {}

    @property
    def lock_count(self) -> int:
        """Tenant, scope and kind triples with a writer at work or waiting."""
        return len(self._locks)

    @asynccontextmanager
    async def _writing(self, key: ClusterKey) -> AsyncIterator[None]:
        """One writer per key at a time; the key's lock is dropped when its last writer leaves."""
        held = self._locks.get(key)
        if held is None:
            held = self._locks[key] = _KeyLock()
        held.users += 1
        try:
            async with held.lock:
                yield
        finally:
            held.users -= 1
            if not held.users:
                del self._locks[key]

    async def learn(
        self, kind: ReflectionKind, episode: Episode, vector: np.ndarray, model: str | None, event: Event
    ) -> Reflection | None:
        """File the episode under its cluster and write the lesson it calls for.

        Returns the cluster when a lesson was (re)written, else None.
        """
        async with self._writing((episode.tenant, episode.scope, kind)):  # concurrent episodes cannot split a cluster
            cluster, joined = await self._join(kind, episode, vector)
            prompt = await self._prompt(kind, cluster, episode, joined, event)
            draft = None
            if prompt is not None:
                try:
                    draft = await self._write(model, *prompt)
                except Exception as error:  # noqa: BLE001 - keep the membership even when the lesson fails
                    log.warning("lesson (%s) not written: %s", kind, error)
            if draft is None:
                if joined:
                    await self.store.aput(cluster)  # membership changed; the lesson did not
                return None
            cluster.cost_tokens += draft.prompt_tokens + draft.completion_tokens
            if draft.text:
                cluster.text = draft.text
                cluster.tokens = draft.completion_tokens
                cluster.revisions += 1
                cluster.updated_at = time.time()
            else:
                log.info("no usable lesson (%s) in %r", kind, draft.raw[:300])
            stored = await self.store.aput(cluster)
            self._spent(episode.tenant, kind, draft, stored.id)
            return stored if draft.text else None

    # -- clusters ----------------------------------------------------------------------------

    async def _join(self, kind: ReflectionKind, episode: Episode, vector: np.ndarray) -> tuple[Reflection, bool]:
        """A working copy of the episode's cluster (new if none is close enough); True if it joined now."""
        for found, similarity in await self.store.anearest(episode.tenant, episode.scope, kind, vector, 1):
            if similarity >= self.config.cluster_similarity:
                cluster = found.model_copy(deep=True)
                if episode.id in cluster.source_episode_ids:
                    return cluster, False
                cluster.absorb(vector, episode.id)
                return cluster, True
        flat = np.asarray(vector, dtype=np.float32).reshape(-1)
        norm = float(np.linalg.norm(flat))
        seed = Reflection(
            tenant=episode.tenant,
            scope=episode.scope,
            kind=kind,
            text="",
            vector=(flat / norm if norm > 0 else flat).tolist(),
            revisions=0,
            source_episode_ids=[episode.id],
        )
        return seed, True

    async def _members(self, cluster: Reflection, besides: Episode) -> list[Episode]:
        """The cluster's other episodes still in memory (bad ones too), newest first."""
        ids = [i for i in reversed(cluster.source_episode_ids) if i != besides.id][: self.config.multi_case_size * 2]
        found = [await self.memory.aget(cluster.tenant, i) for i in ids]
        return [e for e in found if e is not None]

    async def _prompt(
        self, kind: ReflectionKind, cluster: Reflection, episode: Episode, joined: bool, event: Event
    ) -> tuple[list[dict[str, str]], list[Episode]] | None:
        """The request for a lesson and the cases it shows, or None when nothing calls for one."""
        if cluster.members < self.config.min_cluster_size:
            return None  # a one-off so far
        news = joined or event == "failed"
        if kind == "reflect":
            if failed(episode) and news:
                return reflect_messages(episode), [episode]
            if joined and not cluster.text:  # the cluster just recurred: reflect on an earlier failure
                earlier = [e for e in await self._members(cluster, episode) if failed(e)]
                return (reflect_messages(earlier[0]), earlier[:1]) if earlier else None
            return None
        if not news:
            return None
        if kind == "reflect_update" and cluster.text:
            return update_messages(cluster.text, episode), [episode]
        others = await self._members(cluster, episode)
        cases = [episode, *others][: self.config.multi_case_size]
        return (multi_case_messages(cases) if len(cases) > 1 else update_messages(None, episode)), cases

    # -- the backend call --------------------------------------------------------------------

    def _spent(self, tenant: str, kind: str, draft: _Draft, reflection_id: str | None) -> None:
        cost = ReflectionCost(tenant, kind, draft.prompt_tokens, draft.completion_tokens, draft.seconds, reflection_id)
        try:
            self.on_cost(cost)
        except Exception as error:  # noqa: BLE001 - accounting must not lose the lesson
            log.warning("reflection cost listener failed: %s", error)

    async def _write(self, model: str | None, messages: list[dict[str, str]], cases: list[Episode]) -> _Draft:
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
        shown = [text for case in cases for text in (case.question, case.answer)]
        return _Draft(
            text=clean_lesson(raw, choice.get("finish_reason"), self.config.reflection_max_tokens, shown),
            raw=raw,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            seconds=seconds,
        )
