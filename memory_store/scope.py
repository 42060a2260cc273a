"""Where an episode may be used: tenant, model, and everything in a request that changes answers."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel

# Sampling and output-shaping fields: two requests that differ in any of them may get
# different answers, so their episodes must not shape each other's responses.
ANSWER_SHAPING_FIELDS = (
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "response_format",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "presence_penalty",
    "frequency_penalty",
    "repeat_penalty",
    "logit_bias",
    "seed",
    "stop",
    "logprobs",
    "top_logprobs",
    "grammar",
    "json_schema",
    "reasoning_effort",
)


CONTEXT_TURNS = 8  # the earlier turns kept for comparing follow-ups; older ones only count in the fingerprint
CONTEXT_TURN_CHARS = 500


class MemoryKey(BaseModel):
    """The memory coordinates of one chat request."""

    tenant: str
    scope: str
    question: str
    context_fingerprint: str
    has_tools: bool
    # The earlier user and assistant turns, "role: text", for deciding whether a follow-up is the same.
    context: tuple[str, ...] = ()


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:24]


def message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        )
    return ""


def memory_key(tenant: str, body: dict[str, Any]) -> MemoryKey | None:
    """None when the request has no final user question to remember (e.g. ends in a tool result)."""
    messages = body.get("messages") or []
    if not messages or not isinstance(messages[-1], dict) or messages[-1].get("role") != "user":
        return None
    question = message_text(messages[-1]).strip()
    if not question or not isinstance(messages[-1].get("content"), str | list):
        return None
    if isinstance(messages[-1].get("content"), list) and any(
        isinstance(part, dict) and part.get("type") != "text" for part in messages[-1]["content"]
    ):
        return None  # images or audio: the text alone does not identify the question
    earlier = [m for m in messages[:-1] if isinstance(m, dict)]
    system = [m for m in earlier if m.get("role") in ("system", "developer")]
    history = [m for m in earlier if m.get("role") not in ("system", "developer")]
    shaping = {name: body[name] for name in ANSWER_SHAPING_FIELDS if body.get(name) is not None}
    scope = _digest({"model": body.get("model"), "system": system, "shaping": shaping})
    return MemoryKey(
        tenant=tenant,
        scope=scope,
        question=question,
        context_fingerprint=_digest(history),
        has_tools=bool(body.get("tools") or body.get("functions")),
        context=tuple(f"{m.get('role')}: {message_text(m)[:CONTEXT_TURN_CHARS]}" for m in history[-CONTEXT_TURNS:]),
    )
