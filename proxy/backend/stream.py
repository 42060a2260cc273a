"""A backend's SSE stream as parsed chunks, each checked, and the stream checked to have finished."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel, NonNegativeInt

from proxy.backend.client import BackendStream, BackendUsage, parsed
from proxy.gateway.errors import ProxyError


class _Delta(BaseModel):
    content: str | None = None


class _ChunkChoice(BaseModel):
    index: NonNegativeInt = 0
    delta: _Delta | None = None
    finish_reason: str | None = None


class _Chunk(BaseModel):
    """The fields of a stream chunk the proxy reads; others pass through unchecked."""

    id: str | None = None
    choices: list[_ChunkChoice] = []
    usage: BackendUsage | None = None


class _Progress:
    """Which choices a stream has begun and finished: it is whole only when each one it began finished."""

    def __init__(self) -> None:
        self.begun: set[int] = set()
        self.finished: set[int] = set()

    def note(self, chunk: dict[str, Any]) -> None:
        for choice in chunk.get("choices") or []:
            index = choice.get("index", 0)
            self.begun.add(index)
            if choice.get("finish_reason"):
                self.finished.add(index)

    def check(self) -> None:
        # A backend that dies may still close its stream cleanly, even with [DONE]: without a finish
        # reason for every choice the answer is cut off, and must not pass for a whole one.
        if not self.begun or self.begun - self.finished:
            raise ProxyError(502, "backend stream ended before its answer did", code="backend_incomplete")


def parse_chunk(data: str) -> dict[str, Any]:
    return parsed(data, _Chunk, "stream event")


async def decode_events(stream: BackendStream) -> AsyncIterator[dict[str, Any]]:
    """The chunks of a stream up to [DONE]; a ProxyError for a broken, malformed or unfinished one."""
    progress = _Progress()
    try:
        async for data in stream.events():
            if data == "[DONE]":
                break
            chunk = parse_chunk(data)
            progress.note(chunk)
            yield chunk
        progress.check()
    finally:
        await stream.aclose()


async def prepend(first: dict[str, Any], rest: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()  # type: ignore[attr-defined]
