"""Reading a request body within the size limit."""

from __future__ import annotations

from fastapi import Request

from proxy.gateway.errors import ProxyError


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ProxyError(413, f"request body larger than {limit} bytes", code="request_too_large")
    received = bytearray()
    async for part in request.stream():
        received += part
        if len(received) > limit:
            raise ProxyError(413, f"request body larger than {limit} bytes", code="request_too_large")
    return bytes(received)
