"""Injecting solved episodes into a request as few-shot turns."""

from __future__ import annotations

from typing import Any

from memory_store.episode import Episode

LOOK_ALIKE_LABEL = "(A different question from the one I will ask next; its answer does not answer mine.) "


def inject_exemplars(
    body: dict[str, Any], exemplars: list[Episode], look_alikes: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """A copy of the body with each exemplar as a user/assistant pair after the system messages.

    The most similar exemplar goes last, closest to the question it helps with. An exemplar in
    `look_alikes` (a near-twin with another polarity, entity or owner) is labelled as a different
    question, so that the model learns from it without copying its answer.
    """
    messages = list(body["messages"])
    head = 0
    while head < len(messages) and messages[head].get("role") in ("system", "developer"):
        head += 1
    shots: list[dict[str, Any]] = []
    for episode in reversed(exemplars):
        label = LOOK_ALIKE_LABEL if episode.id in look_alikes else ""
        shots.append({"role": "user", "content": label + episode.question})
        shots.append({"role": "assistant", "content": episode.answer})
    return {**body, "messages": messages[:head] + shots + messages[head:]}


def with_budget(body: dict[str, Any], max_tokens: int | None) -> dict[str, Any]:
    """The body with the completion budget set, in whichever field the client used."""
    updated = dict(body)
    if max_tokens is None:
        return updated
    if "max_completion_tokens" in updated:
        updated["max_completion_tokens"] = max_tokens
    if "max_completion_tokens" not in updated or "max_tokens" in updated:
        updated["max_tokens"] = max_tokens
    return updated
