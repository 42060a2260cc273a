"""The reuse decision for one stored episode: the same question, in the same conversation context?"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from budget.reuse.compare import Comparison, compare
from budget.reuse.context import same_context
from budget.reuse.equivalence import hard_difference
from budget.reuse.text import normalise_text

Reason = Literal[
    "identical", "folded", "verified", "different_question", "different_context", "tools_need_identical",
    "below_similarity", "over_error_budget",
]  # fmt: skip


@dataclass(frozen=True)
class Candidate:
    """A stored episode as the decision sees it."""

    question: str
    context: tuple[str, ...]
    context_fingerprint: str
    similarity: float


@dataclass(frozen=True)
class Asked:
    question: str
    context: tuple[str, ...]
    context_fingerprint: str
    has_tools: bool


@dataclass(frozen=True)
class ReuseVerdict:
    reuse: bool
    reason: Reason
    verifiable: bool = False  # refused, but in the unsure band a verifier model may settle


def judge(
    candidate: Candidate,
    asked: Asked,
    folded_similarity: float,
    folded_allowed: bool = True,
    verify_similarity: float | None = None,
) -> ReuseVerdict:
    """Identical text (but for case and spacing) needs nothing more; a folded match also needs the
    calibrated similarity and a scope whose audited false-reuse rate is within the budget. A refused
    pair from `verify_similarity` up with no hard difference (budget/reuse/equivalence.py) is
    `verifiable`: the same question in other words, if a verifier model says so."""
    if asked.has_tools and candidate.question != asked.question:
        return ReuseVerdict(False, "tools_need_identical")
    if candidate.context_fingerprint != asked.context_fingerprint and not same_context(
        list(candidate.context), list(asked.context)
    ):
        return ReuseVerdict(False, "different_context")
    if normalise_text(candidate.question) == normalise_text(asked.question):
        return ReuseVerdict(True, "identical")
    if candidate.similarity < folded_similarity:  # cheap checks first: folding is the costly one
        return ReuseVerdict(False, "below_similarity")
    if not folded_allowed:
        return ReuseVerdict(False, "over_error_budget")
    if compare(candidate.question, asked.question).verdict == "different":
        verifiable = (
            verify_similarity is not None
            and candidate.similarity >= verify_similarity
            and hard_difference(candidate.question, asked.question) is None
        )
        return ReuseVerdict(False, "different_question", verifiable)
    return ReuseVerdict(True, "folded")


def is_look_alike(stored: str, asked: str) -> bool:
    """A near-twin that differs in a word or two but not in its numbers: the shape of a negation,
    antonym, other entity or owner. Shown as an exemplar it would be copied; S3 variants (other
    numbers, other names) are not look-alikes."""
    comparison: Comparison = compare(stored, asked)
    if comparison.same:
        return False
    if comparison.reordered:  # the same words in another order: a reversed direction
        return True
    changed = comparison.removed + comparison.added
    if any(token[0].isdigit() for token in changed):
        return False
    return 1 <= len(changed) <= 3
