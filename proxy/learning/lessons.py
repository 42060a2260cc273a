"""Lesson text: the prompts that ask the model for a lesson, its clean-up, and its injection."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from memory_store.episode import Episode

LESSON_PREFIX = "Lesson from similar past questions: "
_CASE_ANSWER_CHARS = 900
_CASE_QUESTION_CHARS = 600

LESSON_SYSTEM = (
    "You are an expert tutor. You summarise how to answer a type of question as a short general rule, "
    "without any specific numbers or names."
)
_RULE = "In one or two sentences, give the general rule for answering this type of question"
_PLAIN = "Do not use numbers or names. Write plain sentences, not a list."


def verdict(episode: Episode) -> str:
    """How the episode's answer was judged, in words for the prompt."""
    if episode.rating == "gold":
        return "correct (a corrected answer)"
    if episode.rating == "good":
        return "correct"
    if episode.rating == "bad" or episode.verifier == "fail":
        return "WRONG"
    if episode.verifier == "pass":
        return "passed an automatic check"
    return "not checked"


def failed(episode: Episode) -> bool:
    return episode.rating == "bad" or (episode.rating is None and episode.verifier == "fail")


def _case(episode: Episode) -> str:
    question = _clip(episode.question, _CASE_QUESTION_CHARS)
    answer = _clip(episode.answer, _CASE_ANSWER_CHARS)
    return f"Question: {question}\nAnswer given: {answer}\nVerdict: {verdict(episode)}"


def _clip(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _messages(prompt: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": LESSON_SYSTEM}, {"role": "user", "content": prompt}]


def reflect_messages(episode: Episode) -> list[dict[str, str]]:
    """Ask for a lesson about one failed answer (mode `reflect`)."""
    return _messages(f"{_case(episode)}\n\n{_RULE} and the mistake to avoid. {_PLAIN}")


def multi_case_messages(episodes: list[Episode]) -> list[dict[str, str]]:
    """Ask for one lesson distilled from several similar cases at once."""
    cases = "\n\n".join(_case(e) for e in episodes)
    avoid = " and the mistake to avoid" if any(failed(e) for e in episodes) else ""
    return _messages(f"{cases}\n\nThese questions are of the same type. {_RULE}{avoid}. {_PLAIN}")


def update_messages(previous: str | None, episode: Episode) -> list[dict[str, str]]:
    """Ask for the cluster's lesson rewritten in the light of a new case (mode `reflect_update`)."""
    avoid = " and the mistake to avoid" if failed(episode) else ""
    if not previous:
        return _messages(f"{_case(episode)}\n\n{_RULE}{avoid}. {_PLAIN}")
    return _messages(
        f"{_case(episode)}\n\nCurrent rule for this type of question: {previous}\n\n"
        f"Write a better general rule for this type of question{avoid}, in one or two sentences. {_PLAIN}"
    )


_LEAD = re.compile(r"^\s*(?:\*\*)?(?:new |updated |improved |current |general )?(?:lesson|rule)\s*:(?:\*\*)?\s*", re.I)
_LIST_MARK = re.compile(r"^\s*(?:\d+[.)]|[-*\u2022])\s+", re.M)
_STOP = re.compile(r"[.!?:](?=\s|$)")  # ends a sentence, or a heading such as "Identify the total:"
_FILLER = re.compile(r"follow these|let's|here is|here's|step by step|break it down|as follows", re.I)


def _fragments(line: str) -> list[str]:
    pieces, start = [], 0
    for stop in _STOP.finditer(line):
        pieces.append(line[start : stop.end()])
        start = stop.end()
    pieces.append(line[start:])
    return [p.strip() for p in pieces if p.strip()]


def _plain(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


# What the writer's own prompts say, made plain: a small model often hands them back as its "lesson".
_INSTRUCTIONS = tuple(
    _plain(text)
    for text in (
        LESSON_SYSTEM,
        _RULE,
        _PLAIN,
        "These questions are of the same type.",
        "This question is of the same type.",
    )
)
_CAPITALISED = re.compile(r"\b[A-Z][a-z]+\b")
# A capitalised word after a lower-case word, mid-sentence ("gives 5 to Tom"): a name when the cases have it.
_MID_SENTENCE_CAPITALISED = re.compile(r"(?<=[a-z,] )[A-Z][a-z]+\b")


def _anonymised(text: str, capitalised: set[str]) -> str:
    """One instance's people become anyone: the rule is about the type of question."""
    names = {word for word in _MID_SENTENCE_CAPITALISED.findall(text) if word in capitalised}
    if not names:
        return text
    return _CAPITALISED.sub(lambda m: "the person" if m.group() in names else m.group(), text)


def clean_lesson(text: str, finish_reason: str | None, max_tokens: int, copied_from: Sequence[str] = ()) -> str:
    """The lesson as plain sentences, about `max_tokens` long.

    Labels, markup and list marks go; list headings ("Identify the total:") become sentences;
    a sentence cut off by the token limit, filler ("follow these steps") and any sentence with a
    digit (it re-solves one instance instead of stating a rule) are dropped. Empty means the model
    gave no usable lesson. Sentences copied from `copied_from` (the cases' questions and answers) or
    from the writer's own instructions go too; names of the cases' people become "the person".
    """
    sources = [_plain(source) for source in copied_from]
    capitalised = {word for source in copied_from for word in _CAPITALISED.findall(source)}
    text = _LEAD.sub("", text.strip().replace("**", ""))
    lines = [line.strip() for line in _LIST_MARK.sub("", text).splitlines() if line.strip()]
    fragments = [f for line in lines for f in _fragments(line)]
    if finish_reason == "length" and fragments and not _STOP.search(fragments[-1][-1]):
        fragments.pop()  # cut off mid-sentence
    kept = []
    for fragment in fragments:
        words = fragment.rstrip(".!?:").split()
        if len(words) < 2 or re.search(r"\d", fragment) or _FILLER.search(fragment):
            continue
        plain = _plain(fragment)
        if any(plain in source for source in sources) or any(i in plain or plain in i for i in _INSTRUCTIONS):
            continue  # an echo of the case or of the instructions, not a rule
        sentence = _anonymised(" ".join(words), capitalised) + (fragment[-1] if fragment[-1] in ".!?" else ".")
        kept.append(sentence[0].upper() + sentence[1:])
    limit = max_tokens * 5  # ~4 characters a token, with a little slack
    lesson = ""
    for sentence in kept:
        if len(lesson) + len(sentence) + 1 > limit:
            break
        lesson = f"{lesson} {sentence}".strip()
    if not lesson and kept:  # one overlong sentence: cut at a word
        lesson = kept[0][:limit].rsplit(" ", 1)[0].rstrip(",;:") + "..."
    return lesson.strip('"').strip()


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
