"""n choices from any backend: passed through where the backend makes n per call (vLLM), fanned out
and merged where it makes one (llama.cpp); whether it can is probed once and remembered."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from proxy.backend.client import BackendStream, OpenAIBackend
from proxy.backend.stream import decode_events, prepend
from proxy.backend.tool_calls import callable_names, recover_completion, recover_stream
from proxy.gateway.errors import ProxyError

log = logging.getLogger(__name__)


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
        first = failures[0]
        raise first if isinstance(first, ProxyError) else ProxyError(502, str(first), code="backend_unavailable")
    queue: asyncio.Queue[tuple[int, dict[str, Any] | None | BaseException]] = asyncio.Queue()

    async def pump(index: int, stream: BackendStream) -> None:
        try:
            async for chunk in decode_events(stream):
                await queue.put((index, chunk))
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
    """One completion with n choices, and the seconds spent waiting on the backend; a choice that is
    a tool call written as text comes back as tool_calls."""
    payload, seconds = await _complete(backend, body, n)
    return recover_completion(payload, body), seconds


async def _complete(backend: OpenAIBackend, body: dict[str, Any], n: int) -> tuple[dict[str, Any], float]:
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
    if n > 1 and _counts_one_choice(payload):
        # llama.cpp's server makes n choices but reports the tokens of one: its usage would hide the
        # cost of the others, so this answer is made again choice by choice, and so is every later one.
        log.warning("the backend reports one choice's usage for n>1 (llama.cpp); fanning out from now on")
        backend.supports_n = False
        return await complete_fanout(backend, body, n)
    if n > 1:
        backend.supports_n = True
    return payload, seconds


def _counts_one_choice(payload: dict[str, Any]) -> bool:
    """llama.cpp's answers carry `timings`, whose `predicted_n` is the usage it reports: one choice's."""
    timings = payload.get("timings")
    return isinstance(timings, dict) and len(payload.get("choices") or []) > 1


async def stream_choices(backend: OpenAIBackend, upstream: dict[str, Any], n: int) -> AsyncIterator[dict[str, Any]]:
    """The chunks of a stream with n choices, a tool call written as text sent as tool_calls. Opened
    before returning, so that a backend error is raised here, while the client can still get a proper
    error response."""
    chunks = await _open_stream(backend, upstream, n)
    return recover_stream(chunks, upstream) if callable_names(upstream) else chunks


async def _open_stream(backend: OpenAIBackend, upstream: dict[str, Any], n: int) -> AsyncIterator[dict[str, Any]]:
    if n > 1 and backend.supports_n is False:
        return await _started(stream_fanout(backend, upstream, n))
    if n > 1 or "n" in upstream:
        upstream = {**upstream, "n": n}
    return await _started(decode_events(await backend.open_stream(upstream)))


async def _started(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    """The chunks once the first has come: a backend that fails at once (an error event, a body that
    is no stream) still gets the client a proper error response rather than a broken stream."""
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        raise ProxyError(502, "backend stream ended before its answer did", code="backend_incomplete") from None
    return prepend(first, chunks)
