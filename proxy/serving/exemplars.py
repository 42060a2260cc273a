"""Injecting solved episodes into a request as few-shot turns."""

from __future__ import annotations

from typing import Any

from memory_store.episode import Episode


def inject_exemplars(body: dict[str, Any], exemplars: list[Episode]) -> dict[str, Any]:
    """A copy of the body with each exemplar as a user/assistant pair after the system messages.

    The most similar exemplar goes last, closest to the question it helps with.
    """
    messages = list(body["messages"])
    head = 0
    while head < len(messages) and messages[head].get("role") in ("system", "developer"):
        head += 1
    shots: list[dict[str, Any]] = []
    for episode in reversed(exemplars):
        shots.append({"role": "user", "content": episode.question})
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
