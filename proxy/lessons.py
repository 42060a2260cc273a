"""Lesson text: the prompts that ask the model for a lesson, its clean-up, and its injection."""

from __future__ import annotations

import re
from typing import Any

from memory_store.episode import Episode

LESSON_PREFIX = "Lesson from similar past questions: "
_CASE_ANSWER_CHARS = 900
_CASE_QUESTION_CHARS = 600

_SYSTEM = (
    "You write short lessons that help answer future questions of the same kind. A lesson is one or two "
    "sentences: the method that works or the mistake to avoid. Do not repeat the specific numbers or names. "
    "Reply with the lesson only."
)


def verdict(episode: Episode) -> str:
    """How the episode's answer was judged, in words for the prompt."""
    if episode.rating == "gold":
        return "this is the corrected, right answer"
    if episode.rating == "good":
        return "judged correct"
    if episode.rating == "bad" or episode.verifier == "fail":
        return "judged WRONG"
    if episode.verifier == "pass":
        return "passed the automatic check"
    return "not checked"


def failed(episode: Episode) -> bool:
    return episode.rating == "bad" or (episode.rating is None and episode.verifier == "fail")


def _case(episode: Episode, number: int | None = None) -> str:
    head = f"Case {number}" if number is not None else "Case"
    question = _clip(episode.question, _CASE_QUESTION_CHARS)
    answer = _clip(episode.answer, _CASE_ANSWER_CHARS)
    return f"{head}\nQuestion: {question}\nAnswer given: {answer}\nVerdict: {verdict(episode)}"


def _clip(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def reflect_messages(episode: Episode) -> list[dict[str, str]]:
    """Ask for a lesson about one failed answer (mode `reflect`)."""
    prompt = f"{_case(episode)}\n\nWhat went wrong, as a general lesson for similar questions?"
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": prompt}]


def multi_case_messages(episodes: list[Episode]) -> list[dict[str, str]]:
    """Ask for one lesson distilled from several similar cases at once (mode `multi_case_reflect`)."""
    cases = "\n\n".join(_case(e, i + 1) for i, e in enumerate(episodes))
    prompt = f"{cases}\n\nThese questions are of the same kind. Write one general lesson for solving them."
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": prompt}]


def update_messages(previous: str | None, episode: Episode) -> list[dict[str, str]]:
    """Ask for the cluster's lesson rewritten in the light of a new case (mode `reflect_update`)."""
    if previous:
        prompt = (
            f"Current lesson: {previous}\n\nNew {_case(episode)}\n\n"
            "Rewrite the current lesson so it also covers the new case. Keep it general and short."
        )
    else:
        prompt = f"{_case(episode)}\n\nWrite a general lesson for questions of this kind."
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": prompt}]


_LEAD = re.compile(r"^\s*(?:\*\*)?(?:new |updated |rewritten |general )?lesson(?: learned)?\s*:?(?:\*\*)?\s*", re.I)
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


def clean_lesson(text: str, finish_reason: str | None, max_tokens: int) -> str:
    """The lesson without labels or markup, cut to whole sentences and to about `max_tokens`."""
    text = _LEAD.sub("", text.strip()).strip().strip('"').strip()
    text = re.sub(r"\s+", " ", text.replace("**", ""))
    limit = max_tokens * 5  # ~4 characters a token; a little slack for short words
    cut = finish_reason == "length" or len(text) > limit
    text = text[:limit]
    if cut:
        ends = [m.end() for m in _SENTENCE_END.finditer(text)]
        whole_sentences = bool(ends) and ends[-1] >= len(text) // 3
        text = text[: ends[-1]] if whole_sentences else text.rsplit(" ", 1)[0].rstrip(",;:") + "..."
    return text.strip()


def inject_lesson(body: dict[str, Any], lesson: str) -> dict[str, Any]:
    """A copy of the body with the lesson as a note after the system prompt.

    Appended to the first system message when it is plain text (many chat templates
    accept only one system message), otherwise given as a new first system message.
    """
    note = LESSON_PREFIX + lesson
    messages = list(body["messages"])
    first = messages[0] if messages else {}
    if first.get("role") in ("system", "developer") and isinstance(first.get("content"), str):
        messages[0] = {**first, "content": f"{first['content'].rstrip()}\n\n{note}"}
    else:
        messages.insert(0, {"role": "system", "content": note})
    return {**body, "messages": messages}
