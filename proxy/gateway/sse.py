"""Server-sent events in the shape OpenAI's chat completion streams use."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

DONE = b"data: [DONE]\n\n"

_PIECE = re.compile(r"\s*\S+|\s+")


def event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def text_pieces(text: str, words_per_piece: int = 1) -> Iterator[str]:
    """Split text the way a model streams it: small pieces that concatenate back exactly."""
    pieces = _PIECE.findall(text)
    for start in range(0, len(pieces), words_per_piece):
        yield "".join(pieces[start : start + words_per_piece])


def completion_chunks(
    completion_id: str,
    model: str,
    created: int,
    content: str,
    finish_reason: str,
    usage: dict[str, int] | None,
) -> Iterator[bytes]:
    """A whole answer replayed as a proper stream: role, content pieces, finish, optional usage."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    yield event(chunk({"role": "assistant", "content": ""}))
    for piece in text_pieces(content):
        yield event(chunk({"content": piece}))
    yield event(chunk({}, finish_reason))
    if usage is not None:
        yield event(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": usage,
            }
        )
    yield DONE


async def iterate(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    """A body for StreamingResponse from events already made."""
    for chunk in chunks:
        yield chunk
