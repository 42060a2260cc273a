"""Memory that learns: modes, lessons, verification and ratings around the chat pipeline.

On the request path (cheap, in memory): `plan` resolves the memory mode, keeps or drops the
episodic tiers, and injects the nearest lesson above the similarity floor; `request_finished`
logs the response id for feedback. Off the request path: `after_remember` verifies a new
episode, applies a rating that arrived early, and hands the episode to the reflection writer.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter as Tally
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from prometheus_client import Counter

from budget.policy import Decision
from memory_store.episode import Episode
from memory_store.reflections import Reflection, ReflectionStore
from memory_store.scope import MemoryKey
from proxy.learning.lessons import clean_lesson, failed, inject_lesson
from proxy.learning.memory_modes import MemoryMode, reflection_kind, uses_episodes
from proxy.learning.reflection_writer import Event, ReflectionCost, ReflectionWriter
from proxy.learning.response_log import ResponseEntry, ResponseLog
from proxy.learning.verifier import Verifier

if TYPE_CHECKING:
    from proxy.container import AppContainer
    from proxy.gateway.chat_request import ChatRequest
    from proxy.serving.accounting import Accounting
    from proxy.serving.recall import Recollection

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """What memory does to one request: its mode, tier decision, body to send and lesson."""

    mode: MemoryMode
    decision: Decision
    body: dict[str, Any]
    lesson: Reflection | None = None
    lesson_similarity: float = 0.0

    def annotate(self, account: Accounting, key: MemoryKey | None) -> None:
        """Note the mode, lesson and memory coordinates on the request's accounting record."""
        account.memory_mode = self.mode
        account.reflection_id = self.lesson.id if self.lesson is not None else None
        account.memory_key = key


@dataclass
class _Counters:
    reflection_tokens: Counter
    reflections_written: Counter
    lessons_injected: Counter
    verifier_tokens: Counter
    feedback: Counter


def learning_dir(container: AppContainer) -> Path:
    """Reflections and the response log live with local memory, or in data_dir for Redis."""
    spec = container.settings.memory
    return Path(spec[len("local:") :]) if spec.startswith("local:") else container.settings.data_dir


class Learning:
    def __init__(self, container: AppContainer, reflections: ReflectionStore, responses: ResponseLog) -> None:
        assert container.memory is not None and container.embedder is not None
        self.c = container
        self.memory = container.memory
        self.embedder = container.embedder
        self.config = container.settings.memory_modes
        self.reflections = reflections
        self.responses = responses
        self.verifier = Verifier(self.config.verifier, container.backend)
        self.writer = ReflectionWriter(container.backend, self.memory, reflections, self.config, self._spent)
        self.reflection_tokens: Tally[str] = Tally()  # tenant -> backend tokens spent on lessons
        self.verifier_tokens: Tally[str] = Tally()
        r = container.metrics.registry
        self.counters = _Counters(
            reflection_tokens=Counter(
                "speedup_reflection_tokens",
                "Backend tokens spent writing lessons (background)",
                ["tenant", "kind", "part"],
                registry=r,
            ),
            reflections_written=Counter(
                "speedup_reflections_written", "Lessons written or rewritten", ["tenant", "kind"], registry=r
            ),
            lessons_injected=Counter(
                "speedup_lessons_injected", "Requests that got a lesson", ["tenant", "kind"], registry=r
            ),
            verifier_tokens=Counter(
                "speedup_verifier_tokens", "Backend tokens spent judging answers", ["tenant", "part"], registry=r
            ),
            feedback=Counter("speedup_feedback", "Feedback received", ["tenant", "tier", "rating"], registry=r),
        )

    @classmethod
    def open(cls, container: AppContainer) -> Learning:
        assert container.embedder is not None
        directory = learning_dir(container)
        reflections = ReflectionStore(directory / "reflections.sqlite3", container.embedder.dim)
        responses = ResponseLog(directory / "responses.sqlite3", container.settings.memory_modes.response_log_size)
        return cls(container, reflections, responses)

    def close(self) -> None:
        self.reflections.close()
        self.responses.close()

    # -- request path ------------------------------------------------------------------------

    def plan(
        self,
        tenant: str,
        request: ChatRequest,
        body: dict[str, Any],
        key: MemoryKey | None,
        recollection: Recollection,
        decision: Decision,
    ) -> Plan:
        mode = self.config.resolve(tenant, request.model, request.speedup.memory_mode)
        plan = Plan(mode=mode, decision=decision, body=body)
        if key is None:
            return plan
        if not uses_episodes(mode) and decision.tier != "cold":
            plan.decision = Decision(
                tier="cold", similarity=decision.similarity, max_tokens=request.client_max_tokens, n=request.n
            )
        try:
            system = [m for m in body["messages"][:-1] if m.get("role") in ("system", "developer")]
            self.responses.note_scope(tenant, key.scope, request.model, system)
            self._add_lesson(plan, key, recollection)
        except Exception as error:  # noqa: BLE001 - lessons are an optimisation: fail open
            log.warning("lesson lookup failed: %s", error)
        return plan

    def _add_lesson(self, plan: Plan, key: MemoryKey, recollection: Recollection) -> None:
        kind = reflection_kind(plan.mode)
        if kind is None or plan.decision.tier == "reuse" or recollection.failure is not None:
            return
        future = recollection.vector
        if future is None or not future.done() or future.exception() is not None:
            return
        found = [(r, s) for r, s in self.reflections.nearest(key.tenant, key.scope, kind, future.result(), 3) if r.text]
        if not found or found[0][1] < self.c.policy.config.guided_similarity:
            return  # below the floor memory backfires: inject nothing
        plan.lesson, plan.lesson_similarity = found[0]
        plan.body = inject_lesson(plan.body, clean_lesson(plan.lesson.text, None, self.config.reflection_max_tokens))
        self.counters.lessons_injected.labels(key.tenant, kind).inc()

    def request_finished(self, account: Accounting) -> None:
        """RequestObserver: log the response id so that feedback can find its way back."""
        key = account.memory_key
        if account.response_id is None or key is None:
            return
        source = account.decision.reuse_source
        self.responses.record(
            ResponseEntry(
                response_id=account.response_id,
                tenant=account.tenant,
                tier=account.decision.tier,
                mode=account.memory_mode,
                model=account.model,
                scope=key.scope,
                context_fingerprint=key.context_fingerprint,
                question=key.question,
                episode_id=source.id if source is not None else None,
            )
        )

    # -- background --------------------------------------------------------------------------

    async def after_remember(
        self, work: Coroutine[Any, Any, Episode | None], vector: asyncio.Future[np.ndarray], account: Accounting
    ) -> Episode | None:
        episode = await work
        if episode is None:
            return None
        try:
            await self._after_store(episode, await vector, account)
        except Exception as error:  # noqa: BLE001 - learning must never disturb serving
            log.warning("learning from episode %s failed: %s", episode.id, error)
        return episode

    async def _after_store(self, episode: Episode, vector: np.ndarray, account: Accounting) -> None:
        new = bool(account.response_id) and episode.response_id == account.response_id
        changed = False
        if new and self.verifier.enabled:
            verdict = self.verifier.check_regex(episode.answer)
            if verdict is None:
                judgement = await self.verifier.judge(episode.question, episode.answer, account.model)
                self._spent_judging(
                    episode.tenant, judgement.prompt_tokens, judgement.completion_tokens, account.model or ""
                )
                verdict = judgement.verdict
            if verdict is not None:
                episode.verifier = verdict
                changed = True
        rating = None
        if account.response_id:
            entry = await asyncio.to_thread(self.responses.attach_episode, account.response_id, episode.id)
            rating = entry.rating if entry is not None else None
        newly_bad = False
        # A gold episode met here is a correction whose text this answer repeats: the correction wins.
        if rating is not None and episode.rating != "gold" and _rerated(episode, rating):
            newly_bad = rating == "bad"
            episode.rating = rating
            changed = True
        if changed:
            await asyncio.to_thread(self.memory.update, episode)
        if new or newly_bad:
            event: Event = "failed" if failed(episode) else "new"
            await self.learn(episode, vector, account.memory_mode, account.model, event)

    async def rate(self, episode: Episode, rating: str, entry: ResponseEntry) -> bool:
        """Apply a rating; a new bad rating triggers a lesson in the background. True if changed."""
        if not _rerated(episode, rating):
            return False
        episode.rating = rating
        await asyncio.to_thread(self.memory.update, episode)
        if rating == "bad" and reflection_kind(entry.mode or "") is not None:
            self.c.spawn(self._learn_from_failure(episode, entry))
        return True

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

    # -- accounting --------------------------------------------------------------------------

    def _spent(self, cost: ReflectionCost) -> None:
        self.reflection_tokens[cost.tenant] += cost.total_tokens
        self.counters.reflection_tokens.labels(cost.tenant, cost.kind, "prompt").inc(cost.prompt_tokens)
        self.counters.reflection_tokens.labels(cost.tenant, cost.kind, "completion").inc(cost.completion_tokens)
        self._tell_listeners(cost)

    def _spent_judging(self, tenant: str, prompt_tokens: int, completion_tokens: int, model: str = "") -> None:
        self.verifier_tokens[tenant] += prompt_tokens + completion_tokens
        self.counters.verifier_tokens.labels(tenant, "prompt").inc(prompt_tokens)
        self.counters.verifier_tokens.labels(tenant, "completion").inc(completion_tokens)
        # A judge's verdict is learning overhead like a lesson: the stats count it against the savings.
        self._tell_listeners(
            ReflectionCost(tenant, "judge", prompt_tokens, completion_tokens, seconds=0.0, model=model)
        )

    def _tell_listeners(self, cost: ReflectionCost) -> None:
        for listener in self.c.reflection_listeners:
            try:
                listener(cost)
            except Exception as error:  # noqa: BLE001 - listeners must not break accounting
                log.warning("reflection listener failed: %s", error)


def _rerated(episode: Episode, rating: str) -> bool:
    """Whether a rating changes the episode: a correction's gold survives a 'good'."""
    if episode.rating == rating:
        return False
    return not (episode.rating == "gold" and rating == "good")
