"""Memory that learns: modes, lessons, verification and ratings around the chat pipeline.

Entered by the pipeline at three points of one request, in order: `mode_for` (an input to the
policy), `prepare` (note the scope, inject the nearest lesson above the similarity floor) and,
once a backend answered, `log_response` (before the client sees the answer) and `after_answer`
(background: link the episode to its response, verify it, apply a rating that arrived early,
write lessons). Feedback enters through `rate`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np

from budget.policy import Decision
from memory_store.base import MemoryStore
from memory_store.embedding.embedder import BatchingEmbedder
from memory_store.episode import Episode
from memory_store.reflections import Reflection, ReflectionStore
from memory_store.scope import MemoryKey
from proxy.learning.costs import LearningCosts, LearningCounters
from proxy.learning.lessons import clean_lesson, failed, inject_lesson
from proxy.learning.memory_modes import MemoryModes, reflection_kind
from proxy.learning.reflection_writer import Event, ReflectionWriter
from proxy.learning.response_log import ResponseEntry, ResponseLog
from proxy.learning.verifier import Verifier
from proxy.serving.accounting import Accounting
from proxy.serving.background import BackgroundWork
from proxy.serving.recall import Recollection

log = logging.getLogger(__name__)


class Learning:
    def __init__(
        self,
        *,
        memory: MemoryStore,
        embedder: BatchingEmbedder,
        modes: MemoryModes,
        reflections: ReflectionStore,
        responses: ResponseLog,
        verifier: Verifier,
        writer: ReflectionWriter,
        costs: LearningCosts,
        counters: LearningCounters,
        background: BackgroundWork,
        lesson_floor: float,
    ) -> None:
        self.memory = memory
        self.embedder = embedder
        self.modes = modes
        self.reflections = reflections
        self.responses = responses
        self.verifier = verifier
        self.writer = writer
        self.costs = costs
        self.counters = counters
        self.background = background
        self.lesson_floor = lesson_floor  # below the policy's similarity floor memory backfires

    @property
    def reflection_tokens(self) -> dict[str, int]:
        return self.costs.reflection_tokens

    @property
    def verifier_tokens(self) -> dict[str, int]:
        return self.costs.verifier_tokens

    # -- request path ------------------------------------------------------------------------

    def mode_for(self, tenant: str, model: str, requested: str | None) -> str:
        return self.modes.resolve(tenant, model, requested)  # type: ignore[arg-type]

    async def prepare(
        self, key: MemoryKey, body: dict[str, Any], mode: str, recollection: Recollection, decision: Decision
    ) -> tuple[dict[str, Any], str | None]:
        try:
            system = [m for m in body["messages"][:-1] if m.get("role") in ("system", "developer")]
            await self.responses.anote_scope(key.tenant, key.scope, body.get("model"), system)
            lesson = await self._nearest_lesson(key, mode, recollection, decision)
        except Exception as error:  # noqa: BLE001 - lessons are an optimisation: fail open
            log.warning("lesson lookup failed: %s", error)
            return body, None
        if lesson is None:
            return body, None
        text = clean_lesson(lesson.text, None, self.modes.reflection_max_tokens)
        self.counters.lessons_injected.labels(key.tenant, lesson.kind).inc()
        return inject_lesson(body, text), lesson.id

    async def _nearest_lesson(
        self, key: MemoryKey, mode: str, recollection: Recollection, decision: Decision
    ) -> Reflection | None:
        kind = reflection_kind(mode)
        if kind is None or decision.tier == "reuse" or recollection.failure is not None:
            return None
        future = recollection.vector
        if future is None or not future.done() or future.exception() is not None:
            return None
        found = await self.reflections.anearest(key.tenant, key.scope, kind, future.result(), 3)
        found = [(r, s) for r, s in found if r.text]
        if not found or found[0][1] < self.lesson_floor:
            return None  # below the floor memory backfires: inject nothing
        return found[0][0]

    async def log_response(self, account: Accounting) -> None:
        key = account.memory_key
        if account.response_id is None or key is None:
            return
        source = account.decision.reuse_source
        entry = ResponseEntry(
            response_id=account.response_id,
            tenant=account.tenant,
            tier=account.decision.tier,
            mode=account.memory_mode,
            model=account.model,
            scope=key.scope,
            context_fingerprint=key.context_fingerprint,
            context=list(key.context),
            question=key.question,
            episode_id=source.id if source is not None else None,
        )
        try:
            await self.responses.arecord(entry)
        except Exception as error:  # noqa: BLE001 - a lost log entry only costs the feedback link
            log.warning("response %s not logged: %s", account.response_id, error)

    # -- background --------------------------------------------------------------------------

    async def after_answer(
        self, stored: asyncio.Task[Episode | None], vector: asyncio.Future[np.ndarray], account: Accounting
    ) -> None:
        episode = await stored
        if episode is None:
            return
        try:
            await self._after_store(episode, await vector, account)
        except Exception as error:  # noqa: BLE001 - learning must never disturb serving
            log.warning("learning from episode %s failed: %s", episode.id, error)

    async def _after_store(self, episode: Episode, vector: np.ndarray, account: Accounting) -> None:
        new = bool(account.response_id) and episode.response_id == account.response_id
        changes: dict[str, Any] = {}
        if new and await self._verify(episode, account.model):
            changes["verifier"] = episode.verifier
        rating = None
        if account.response_id:
            entry = await self.responses.aattach_episode(account.tenant, account.response_id, episode.id)
            rating = entry.rating if entry is not None else None
        newly_bad = False
        # A gold episode met here is a correction whose text this answer repeats: the correction wins.
        if rating is not None and episode.rating != "gold" and _rerated(episode, rating):
            newly_bad = rating == "bad"
            episode.rating = changes["rating"] = rating
        if changes:
            await self._save(episode, changes)
        if new or newly_bad:
            event: Event = "failed" if failed(episode) else "new"
            await self.learn(episode, vector, account.memory_mode, account.model, event)

    async def _verify(self, episode: Episode, model: str) -> bool:
        """Check a new answer with the configured verifier; True when a verdict was set."""
        if not self.verifier.enabled:
            return False
        verdict = self.verifier.check_regex(episode.answer)
        if verdict is None:
            judgement = await self.verifier.judge(episode.question, episode.answer, model)
            self.costs.judge_spent(episode.tenant, judgement.prompt_tokens, judgement.completion_tokens, model or "")
            verdict = judgement.verdict
        if verdict is None:
            return False
        episode.verifier = verdict
        return True

    async def rate(self, episode: Episode, rating: str, entry: ResponseEntry) -> bool:
        """Apply a rating; a new bad rating triggers a lesson in the background. True if changed."""
        if not _rerated(episode, rating):
            return False
        episode.rating = rating
        await self._save(episode, {"rating": rating})
        if rating == "bad" and reflection_kind(entry.mode or "") is not None:
            self.background.spawn(self._learn_from_failure(episode, entry))
        return True

    async def _save(self, episode: Episode, changes: dict[str, Any]) -> None:
        """Write only what changed onto the stored episode as it is now: a rating and a verdict set
        by two tasks at once must both survive (stores hand out copies)."""
        current = await self.memory.aget(episode.tenant, episode.id)
        if current is not None:
            await self.memory.aupdate(current.model_copy(update=changes))

    async def _learn_from_failure(self, episode: Episode, entry: ResponseEntry) -> None:
        try:
            vector = await self.embedder.embed(episode.question)
            await self.learn(episode, vector, entry.mode, entry.model, "failed")
        except Exception as error:  # noqa: BLE001 - background work logs, never raises
            log.warning("lesson for failed episode %s not written: %s", episode.id, error)

    async def learn(
        self, episode: Episode, vector: np.ndarray, mode: str | None, model: str | None, event: Event
    ) -> Reflection | None:
        kind = reflection_kind(mode or "")
        if kind is None:
            return None
        try:
            reflection = await self.writer.learn(kind, episode, vector, model, event)
        except Exception as error:  # noqa: BLE001 - a failed lesson only costs the lesson
            log.warning("reflection (%s) for episode %s failed: %s", kind, episode.id, error)
            return None
        if reflection is not None:
            self.counters.reflections_written.labels(episode.tenant, kind).inc()
        return reflection


def _rerated(episode: Episode, rating: str) -> bool:
    """Whether a rating changes the episode: a correction's gold survives a 'good'."""
    if episode.rating == rating:
        return False
    return not (episode.rating == "gold" and rating == "good")
