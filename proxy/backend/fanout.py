"""n choices from any backend: passed through where the backend makes n per call (vLLM), fanned out
and merged where it makes one (llama.cpp); whether it can is probed once and remembered."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from proxy.backend.client import OpenAIBackend
from proxy.backend.stream import decode_events, prepend
from proxy.gateway.errors import ProxyError


def add_usage(total: dict[str, int], usage: dict[str, Any] | None) -> dict[str, int]:
    for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
        total[name] = total.get(name, 0) + int((usage or {}).get(name) or 0)
    return total


async def complete_fanout(backend: OpenAIBackend, body: dict[str, Any], n: int) -> tuple[dict[str, Any], float]:
    single = {**body, "n": 1}
    results = await asyncio.gather(*(backend.complete(single) for _ in range(n)))
    merged = dict(results[0][0])
    usage: dict[str, int] = {}
    choices = []
    for index, (payload, _) in enumerate(results):
        for choice in payload.get("choices", [])[:1]:
            choices.append({**choice, "index": index})
        add_usage(usage, payload.get("usage"))
    merged["choices"] = choices
    merged["usage"] = usage
    return merged, max(seconds for _, seconds in results)


async def stream_fanout(backend: OpenAIBackend, body: dict[str, Any], n: int) -> AsyncIterator[dict[str, Any]]:
    """Chunks of n concurrent streams, each choice renumbered; one summed usage chunk at the end.

    All streams are opened before the first chunk is yielded, so a backend error still
    reaches the client as a proper error response rather than a broken stream.
    """
    single = {**body, "n": 1, "stream_options": {"include_usage": True}}
    streams = await asyncio.gather(*(backend.open_stream(single) for _ in range(n)), return_exceptions=True)
    failures = [s for s in streams if isinstance(s, BaseException)]
    if failures:
        for stream in streams:
            if not isinstance(stream, BaseException):
                await stream.aclose()
        raise failures[0] if isinstance(failures[0], ProxyError) else ProxyError(502, str(failures[0]))
    queue: asyncio.Queue[tuple[int, dict[str, Any] | None | BaseException]] = asyncio.Queue()

    async def pump(index: int, stream: Any) -> None:
        try:
            async for data in stream.events():
                if data == "[DONE]":
                    break
                await queue.put((index, json.loads(data)))
            await queue.put((index, None))
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            await queue.put((index, error))
        finally:
            await stream.aclose()

    pumps = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    usage: dict[str, int] = {}
    last: dict[str, Any] = {}
    open_streams = n
    try:
        while open_streams:
            index, item = await queue.get()
            if item is None:
                open_streams -= 1
                continue
            if isinstance(item, BaseException):
                raise item
            add_usage(usage, item.get("usage"))
            last = item
            choices = [{**c, "index": index} for c in item.get("choices", [])]
            if choices:
                yield {**{k: v for k, v in item.items() if k != "usage"}, "choices": choices}
        yield {**{k: v for k, v in last.items() if k != "usage"}, "choices": [], "usage": usage}
    finally:
        for task in pumps:
            task.cancel()


async def complete_choices(backend: OpenAIBackend, body: dict[str, Any], n: int) -> tuple[dict[str, Any], float]:
    """One completion with n choices, and the seconds spent waiting on the backend."""
    if n > 1 and backend.supports_n is False:
        return await complete_fanout(backend, body, n)
    send = {**body, "n": n} if (n > 1 or "n" in body) else body
    try:
        payload, seconds = await backend.complete(send)
    except ProxyError as error:
        if n > 1 and backend.supports_n is None and error.status == 400:
            backend.supports_n = False
            return await complete_fanout(backend, body, n)
        raise
    if n > 1:
        backend.supports_n = True
    return payload, seconds


async def stream_choices(backend: OpenAIBackend, upstream: dict[str, Any], n: int) -> AsyncIterator[dict[str, Any]]:
    """The chunks of a stream with n choices. Opened before returning, so that a backend
    error is raised here, while the client can still get a proper error response."""
    if n > 1 and backend.supports_n is False:
        chunks = stream_fanout(backend, upstream, n)
        first = await anext(chunks)
        return prepend(first, chunks)
    if n > 1 or "n" in upstream:
        upstream = {**upstream, "n": n}
    return decode_events(await backend.open_stream(upstream))
