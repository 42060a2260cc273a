"""The similarity-based budget policy: how much compute a request gets, given what memory holds.

Tiers, after Pan & Zhao (arXiv 2505.20643):
- reuse:  the same question (S1, or an S2 paraphrase with the same numbers and names) in the same
          conversation and scope, where reuse is allowed -> answer from memory, no backend call.
- guided: similar but not the same (S2 with other numbers, S3) -> up to `max_exemplars` solved
          episodes as few-shot turns, `max_tokens` shrunk to what those episodes needed.
- cold:   below the similarity floor (S4 and unrelated) -> nothing injected, the client's budget;
          memory at low similarity backfires (more tokens, lower accuracy).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from budget.compute.plan import token_ladder
from budget.reuse.judge import Asked, Candidate, is_look_alike, judge
from memory_store.episode import MAX_QUESTION_CHARS, Episode, Neighbour

Tier = Literal["reuse", "guided", "cold"]


class PolicyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Where familiarity is full: the guided tier's `n` is lowered most from here up.
    reuse_similarity: float = Field(0.85, ge=0.0, le=1.0)
    # A question that matches a stored one once wording that cannot change the answer is folded away
    # (budget/reuse/) is reused from this similarity up; identical text needs none. On the
    # calibration pairs of bench/data no look-alike was served at any floor (docs/REUSE.md); typos
    # push MiniLM's similarity of true repeats down to about 0.6.
    folded_similarity: float = Field(0.55, ge=0.0, le=1.0)
    # The unsure band's floor: a refused pair from this similarity up with no hard difference is put
    # to the reuse verifier, when one is configured (budget/reuse/equivalence.py, docs/REUSE.md).
    verify_similarity: float = Field(0.6, ge=0.0, le=1.0)
    # The error budget on live traffic (budget/reuse/audit.py): `audit_rate` of reuses are also
    # answered afresh in the background and compared (answer cosine >= `audit_agreement` agrees);
    # where the false-reuse rate is above `max_false_reuse` with confidence, only identical text is
    # reused. The audit's tokens count against the savings.
    max_false_reuse: float = Field(0.01, gt=0.0, lt=1.0)
    audit_rate: float = Field(0.02, ge=0.0, le=1.0)
    audit_agreement: float = Field(0.80, ge=0.0, le=1.0)
    # How stale this replica's copy of the shared audit counts may get (budget/reuse/audit.py).
    audit_sync_interval_s: float = Field(5.0, gt=0.0, le=3600.0)
    # Calibrated on GSM-Symbolic with MiniLM (docs/BENCHMARKS.md): S3 pairs score 0.49-0.93 with
    # median 0.84, different-template (S4) pairs 0.43-0.70; below this floor nothing is injected.
    guided_similarity: float = Field(0.66, ge=0.0, le=1.0)
    max_exemplars: int = Field(3, ge=0, le=8)
    guided_budget_factor: float = Field(1.5, gt=0)
    guided_budget_margin: int = Field(48, ge=0)
    guided_min_tokens: int = Field(64, ge=1)
    default_max_tokens: int = Field(1024, ge=1)
    # A guided answer cut off at its budget is retried at these multiples of it, then at the client's limit.
    ladder_factors: list[float] = Field(default_factory=lambda: [2.0], max_length=4)
    lower_n: bool = True

    @model_validator(mode="after")
    def _ordered(self) -> PolicyConfig:
        if self.guided_similarity > self.reuse_similarity:
            raise ValueError("guided_similarity must not exceed reuse_similarity")
        if any(f <= 1.0 for f in self.ladder_factors) or self.ladder_factors != sorted(self.ladder_factors):
            raise ValueError("ladder_factors must be increasing multiples above 1")
        return self


class RequestFacts(BaseModel):
    """What the policy needs to know about the request, independent of the HTTP shape.

    `memory_usable` is False when memory is off for the request or recall failed (fail open);
    `episodes_allowed` is False when the request's memory mode does not use the episodic tiers.
    """

    question: str = ""
    context_fingerprint: str = ""
    context: tuple[str, ...] = ()
    has_tools: bool = False
    reuse_allowed: bool = False
    client_max_tokens: int | None = None
    client_n: int = 1
    memory_usable: bool = True
    episodes_allowed: bool = True
    folded_reuse_allowed: bool = True  # False where the audit found the scope over its error budget


class Decision(BaseModel):
    tier: Tier
    similarity: float = 0.0
    reuse_source: Episode | None = None
    # "identical", "folded" or "verified" (budget/reuse/judge.py): identical reuses are not audited
    reuse_reason: str = ""
    # Refused, but a verifier model may settle it (the unsure band): served if it says "Same".
    verify_source: Episode | None = None
    verify_similarity: float = 0.0
    exemplars: list[Episode] = Field(default_factory=list)
    look_alikes: frozenset[str] = frozenset()  # exemplars that are near-twins of another question
    max_tokens: int | None = None
    # max_tokens of each attempt, in order: a call cut off at one rung is retried at the next.
    ladder: list[int | None] = Field(default_factory=lambda: [None])
    n: int = 1
    # 0 (nothing like it in memory) to 1 (answered before): the prior of adaptive compute (budget/compute/).
    familiarity: float = 0.0
    estimated_cold_tokens: int = 0
    estimated_cold_seconds: float = 0.0

    @property
    def episode_ids(self) -> list[str]:
        if self.reuse_source is not None:
            return [self.reuse_source.id]
        return [episode.id for episode in self.exemplars]


class BudgetPolicy:
    def __init__(self, config: PolicyConfig, verifying: bool = False) -> None:
        self.config = config
        self.verifying = verifying  # a reuse verifier is configured: name the unsure band's candidate

    def decide(self, facts: RequestFacts, neighbours: list[Neighbour]) -> Decision:
        """The one place a request's tier is chosen."""
        if not facts.memory_usable:
            return self._cold(facts, 0.0)
        usable = [n for n in neighbours if n.episode.usable]
        best = usable[0].similarity if usable else 0.0
        if not facts.episodes_allowed:
            return self._cold(facts, best)
        source, reason, unsure = self._reuse_source(facts, usable)
        if source is not None:
            return _reuse(source.episode, source.similarity, reason)
        decision = self._not_reused(facts, usable, best)
        if unsure is not None:
            decision.verify_source, decision.verify_similarity = unsure.episode, unsure.similarity
        return decision

    @staticmethod
    def verified(decision: Decision) -> Decision:
        """The unsure band's candidate, served: the verifier said it is the same question."""
        assert decision.verify_source is not None
        return _reuse(decision.verify_source, decision.verify_similarity, "verified")

    def _not_reused(self, facts: RequestFacts, usable: list[Neighbour], best: float) -> Decision:
        close = [n for n in usable if n.similarity >= self.config.guided_similarity]
        close = close[: self.config.max_exemplars]
        if not close or self.config.max_exemplars == 0:
            return self._cold(facts, best)
        exemplars = [n.episode for n in close]
        needed = max(e.usage.completion_tokens for e in exemplars)
        budget = max(
            self.config.guided_min_tokens,
            math.ceil(needed * self.config.guided_budget_factor) + self.config.guided_budget_margin,
        )
        ceiling = facts.client_max_tokens or self.config.default_max_tokens
        familiarity = self._familiarity(best, exemplars)
        return Decision(
            tier="guided",
            similarity=best,
            exemplars=exemplars,
            look_alikes=frozenset(e.id for e in exemplars if _look_alike(e, facts.question)),
            max_tokens=min(budget, ceiling),
            ladder=token_ladder(min(budget, ceiling), facts.client_max_tokens, self.config.ladder_factors),
            n=self._guided_n(facts.client_n, familiarity),
            familiarity=familiarity,
            estimated_cold_tokens=round(sum(e.baseline_completion_tokens for e in exemplars) / len(exemplars)),
            estimated_cold_seconds=sum(e.baseline_seconds for e in exemplars) / len(exemplars),
        )

    @staticmethod
    def _cold(facts: RequestFacts, similarity: float) -> Decision:
        limit = facts.client_max_tokens
        return Decision(tier="cold", similarity=similarity, max_tokens=limit, ladder=[limit], n=facts.client_n)

    def _reuse_source(
        self, facts: RequestFacts, neighbours: list[Neighbour]
    ) -> tuple[Neighbour | None, str, Neighbour | None]:
        """The episode to serve and why: "identical" (also a cut question proven by its digest) or
        "folded"; else the first the verifier may settle, if any."""
        unsure: Neighbour | None = None
        if not facts.reuse_allowed or facts.client_n != 1:
            return None, "", None
        verify_similarity = self.config.verify_similarity if self.verifying else None
        asked = Asked(facts.question, facts.context, facts.context_fingerprint, facts.has_tools)
        limit = facts.client_max_tokens
        for neighbour in neighbours:
            episode = neighbour.episode
            if limit is not None and not 0 < episode.usage.completion_tokens <= limit:
                continue  # longer than the client allows (or of unknown length): the backend answers instead
            if episode.question_capped or len(facts.question) > MAX_QUESTION_CHARS:
                # Too long to compare word by word (or stored cut): only the very same text, by its digest.
                if episode.asks(facts.question) and episode.context_fingerprint == facts.context_fingerprint:
                    return neighbour, "identical", None
                continue
            candidate = Candidate(
                episode.question, tuple(episode.context), episode.context_fingerprint, neighbour.similarity
            )
            verdict = judge(
                candidate, asked, self.config.folded_similarity, facts.folded_reuse_allowed, verify_similarity
            )
            if verdict.reuse:
                return neighbour, verdict.reason, None
            if verdict.verifiable and unsure is None:
                unsure = neighbour
        return None, "", unsure

    def _familiarity(self, similarity: float, exemplars: list[Episode]) -> float:
        """How familiar a guided question is: by similarity between the guided and reuse floors, full
        when every exemplar's answer was verified (rated good, gold, or passed the verifier)."""
        if exemplars and all(e.rating in ("good", "gold") or e.verifier == "pass" for e in exemplars):
            return 1.0
        span = max(1e-6, self.config.reuse_similarity - self.config.guided_similarity)
        return min(1.0, max(0.0, (similarity - self.config.guided_similarity) / span))

    def _guided_n(self, client_n: int, familiarity: float) -> int:
        """Fewer samples on familiar questions: the closer the match, the fewer are needed."""
        if client_n <= 1 or not self.config.lower_n:
            return client_n
        return max(1, math.ceil(client_n * (1.0 - 0.5 * familiarity)))


def _reuse(episode: Episode, similarity: float, reason: str) -> Decision:
    return Decision(
        tier="reuse",
        similarity=similarity,
        reuse_source=episode,
        reuse_reason=reason,
        n=1,
        familiarity=1.0,
        estimated_cold_tokens=episode.baseline_completion_tokens,
        estimated_cold_seconds=episode.baseline_seconds,
    )


def _look_alike(exemplar: Episode, question: str) -> bool:
    if exemplar.question_capped or len(question) > MAX_QUESTION_CHARS:
        return False  # long texts are not compared word by word
    return is_look_alike(exemplar.question, question)
