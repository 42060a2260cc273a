"""A backend's SSE stream as parsed chunks."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from proxy.backend.client import BackendStream
from proxy.gateway.errors import ProxyError


async def decode_events(stream: BackendStream) -> AsyncIterator[dict[str, Any]]:
    try:
        async for data in stream.events():
            if data == "[DONE]":
                break
            try:
                yield json.loads(data)
            except ValueError as error:
                raise ProxyError(502, "backend sent a malformed stream event") from error
    finally:
        await stream.aclose()


async def prepend(first: dict[str, Any], rest: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()  # type: ignore[attr-defined]
