"""What a sampled answer says, reduced to a key that votes: equal keys are the same answer.

Math answers vote by their final value (`\\boxed{}`, `#### x`, "Answer: x", or the last number);
free text without a number has no such key and votes by the similarity of the answers'
embeddings instead (proxy/serving/vote.py).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from budget.patterns import RegexPattern
from budget.reuse.text import normalise_text

AnswerKind = Literal["auto", "number", "boxed", "hash", "regex", "text"]

_NUMBER = r"-?\$?\d[\d,]*(?:\.\d+)?"
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_HASH = re.compile(r"####\s*(" + _NUMBER + ")")
_STATED = re.compile(r"(?i)(?:final answer|answer)\s*(?:is\b|:|=)[^\d\n-]{0,40}(" + _NUMBER + ")")
_ANY_NUMBER = re.compile(_NUMBER)


class AnswerFormat(BaseModel):
    """How a sample's answer is found. `auto`: a stated final answer, else the last number, else free text."""

    model_config = ConfigDict(extra="forbid")
    kind: AnswerKind = "auto"
    pattern: RegexPattern | None = Field(
        None, max_length=500, description="for kind 'regex': group 1 (or the match) votes"
    )


def normalize_value(raw: str) -> str:
    """'$1,200.50' and '1200.5' are one answer."""
    text = raw.strip().replace("$", "").replace(",", "").rstrip(".")
    try:
        value = float(text)
    except ValueError:
        return " ".join(text.lower().split())
    return str(int(value)) if value.is_integer() else repr(value)


def _last(pattern: re.Pattern[str], text: str) -> str | None:
    found = pattern.findall(text)
    return normalize_value(found[-1]) if found else None


def stated_answer(text: str) -> str | None:
    """A final answer the text states in one of the usual forms, or None."""
    return _last(_BOXED, text) or _last(_HASH, text) or _last(_STATED, text)


def answer_key(text: str, answer: AnswerFormat) -> str | None:
    """The key a sample votes with; None means it votes by text similarity (or, for a strict kind, abstains)."""
    kind = answer.kind
    if kind == "text":
        return None
    if kind == "boxed":
        return _last(_BOXED, text)
    if kind == "hash":
        return _last(_HASH, text)
    if kind == "regex":
        match = re.search(answer.pattern or "", text)
        if match is None:
            return None
        return normalize_value(match.group(1) if match.groups() else match.group(0))
    # auto and number: a stated final answer, else the last number ("Tom has 7 apples." votes 7);
    # auto leaves text without a number to vote by similarity.
    return stated_answer(text) or _last(_ANY_NUMBER, text)


def votes_by_text(answer: AnswerFormat) -> bool:
    """Samples without a key vote by similarity of their text only in the free-text kinds."""
    return answer.kind in ("auto", "text")


def same_answer(first: str, second: str) -> bool | None:
    """Whether two solutions of one task reach the same answer (`auto` keys), or equal text where
    neither states one; None where only their meaning can tell (free texts that differ)."""
    fmt = AnswerFormat()
    a, b = answer_key(first, fmt), answer_key(second, fmt)
    if a is not None or b is not None:
        return a == b
    text = normalise_text(first)
    if text == normalise_text(second):
        return text != ""
    return None
