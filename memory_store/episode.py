"""The episode: one finished, good completion remembered for later requests."""

from __future__ import annotations

import hashlib
import time
import uuid

from pydantic import BaseModel, Field


def new_episode_id() -> str:
    return "ep_" + uuid.uuid4().hex[:20]


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class Episode(BaseModel):
    """A solved question within one scope.

    `baseline_completion_tokens` is what a cold call for this question is expected to
    cost; for an episode made by a cold call it is its own completion length, for one
    made by a guided call it is the estimate inherited from the exemplars, so that
    savings estimates never drift downwards as guided episodes accumulate.
    """

    id: str = Field(default_factory=new_episode_id)
    tenant: str
    scope: str
    question: str
    context_fingerprint: str
    context: list[str] = Field(default_factory=list)  # the earlier turns, "role: text" (memory_store/scope.py)
    answer: str
    usage: Usage = Field(default_factory=Usage)
    baseline_completion_tokens: int = 0
    baseline_seconds: float = 0.0
    created_at: float = Field(default_factory=time.time)
    last_used_at: float = Field(default_factory=time.time)
    hits: int = 0
    source_tier: str = "cold"
    rating: str | None = None  # "good" | "bad" | "gold" | None
    response_id: str | None = None
    verifier: str | None = None

    @property
    def content_key(self) -> str:
        """Identity for idempotent writes: one episode per scope, context, question and answer."""
        raw = "\x1f".join([self.tenant, self.scope, self.context_fingerprint, self.question, self.answer])
        return hashlib.sha256(raw.encode()).hexdigest()[:32]

    @property
    def usable(self) -> bool:
        """May be reused or injected: never when rated bad, nor when unrated and failing the verifier."""
        if self.rating in ("good", "gold"):
            return True
        return self.rating != "bad" and self.verifier != "fail"


class Neighbour(BaseModel):
    """An episode found by a similarity search, with its cosine similarity to the query."""

    episode: Episode
    similarity: float
