"""The episode: one finished, good completion remembered for later requests."""

from __future__ import annotations

import hashlib
import time
import uuid

from pydantic import BaseModel, Field, model_validator

# The most characters of a question that memory keeps (and embeds): a longer one is cut to its
# beginning, and its full text is then known only by `question_digest`.
MAX_QUESTION_CHARS = 8_000


def new_episode_id() -> str:
    return "ep_" + uuid.uuid4().hex[:20]


def question_digest(question: str) -> str:
    """sha256 of the full question: what identifies a question once only its beginning is kept."""
    return hashlib.sha256(question.encode()).hexdigest()


def cap_question(question: str, max_chars: int = MAX_QUESTION_CHARS) -> tuple[str, str | None]:
    """The question as memory keeps it, and the digest of its full text when it had to be cut (else None)."""
    if len(question) <= max_chars:
        return question, None
    return question[:max_chars], question_digest(question)


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
    question_digest: str | None = Field(
        None, description="sha256 of the full question when `question` holds only its beginning; else None"
    )

    @model_validator(mode="after")
    def _cap_question(self) -> Episode:
        """No store ever holds more than MAX_QUESTION_CHARS of a question (a 1.5 MB one costs 1.5 MB an episode)."""
        if len(self.question) > MAX_QUESTION_CHARS:
            self.question, digest = cap_question(self.question)
            self.question_digest = self.question_digest or digest
        return self

    @property
    def content_key(self) -> str:
        """Identity for idempotent writes: one episode per scope, context, question and answer."""
        parts = [self.tenant, self.scope, self.context_fingerprint, self.question, self.answer]
        if self.question_digest is not None:  # two long questions may share their kept beginning
            parts.append(self.question_digest)
        raw = "\x1f".join(parts)
        return hashlib.sha256(raw.encode()).hexdigest()[:32]

    @property
    def question_capped(self) -> bool:
        """Only the question's beginning is kept: reuse must then prove the full text by its digest."""
        return self.question_digest is not None

    def asks(self, question: str) -> bool:
        """Whether `question` is exactly this episode's full question (for a capped one, by its digest)."""
        if self.question_digest is None:
            return question == self.question
        return len(question) > len(self.question) and question_digest(question) == self.question_digest

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
