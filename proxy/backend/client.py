"""The upstream OpenAI-compatible server (llama.cpp, vLLM, ...), reached over HTTP."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

from proxy.gateway.errors import ProxyError


def _backend_error(status: int, raw: bytes) -> ProxyError:
    try:
        detail = json.loads(raw)
        error = detail.get("error", detail) if isinstance(detail, dict) else detail
        message = error.get("message") if isinstance(error, dict) else str(error)
    except (ValueError, AttributeError):
        message = raw.decode(errors="replace")[:500]
    message = message or f"backend answered {status}"
    if status >= 500:
        return ProxyError(502, f"backend error ({status}): {message}", code="backend_error")
    return ProxyError(status, message, code="backend_rejected")


class BackendStream:
    """An open streaming response whose status has been checked; iterate its SSE data payloads."""

    def __init__(self, response: httpx.Response, started: float) -> None:
        self._response = response
        self.started = started

    async def events(self) -> AsyncIterator[str]:
        try:
            async for line in self._response.aiter_lines():
                if line.startswith("data:"):
                    yield line[5:].strip()
        except httpx.TimeoutException as error:
            raise ProxyError(504, "backend timed out mid-stream", code="backend_timeout") from error
        except httpx.HTTPError as error:
            raise ProxyError(502, f"backend stream broke: {error}", code="backend_unavailable") from error

    async def aclose(self) -> None:
        await self._response.aclose()


class OpenAIBackend:
    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout_s: float = 300.0,
        connect_timeout_s: float = 1.5,
        supports_n: bool | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.supports_n = supports_n
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        )

    async def complete(self, body: dict[str, Any]) -> tuple[dict[str, Any], float]:
        """A non-streaming chat completion and the seconds it took."""
        started = time.perf_counter()
        with _translated_errors():
            try:
                response = await self._client.post("/chat/completions", json=body)
            except httpx.RemoteProtocolError:
                # A pooled keep-alive connection the server had already dropped: nothing was
                # answered, so one retry on a fresh connection is safe.
                response = await self._client.post("/chat/completions", json=body)
        if response.status_code != 200:
            raise _backend_error(response.status_code, response.content)
        try:
            payload = response.json()
        except ValueError as error:
            raise ProxyError(502, "backend sent a body that is not JSON", code="backend_error") from error
        return payload, time.perf_counter() - started

    async def open_stream(self, body: dict[str, Any]) -> BackendStream:
        started = time.perf_counter()
        # llama.cpp's server sometimes drops a kept-alive connection after a stream, failing
        # the next request on it; streams therefore get a connection of their own.
        request = self._client.build_request("POST", "/chat/completions", json=body, headers={"Connection": "close"})
        with _translated_errors():
            response = await self._client.send(request, stream=True)
        if response.status_code != 200:
            raw = await response.aread()
            await response.aclose()
            raise _backend_error(response.status_code, raw)
        return BackendStream(response, started)

    async def models(self) -> dict[str, Any]:
        with _translated_errors():
            response = await self._client.get("/models")
        if response.status_code != 200:
            raise _backend_error(response.status_code, response.content)
        return response.json()

    async def aclose(self) -> None:
        await self._client.aclose()


@contextlib.contextmanager
def _translated_errors() -> Iterator[None]:
    """Transport failures as the client should see them: 502 unreachable, 504 too slow."""
    try:
        yield
    except httpx.TimeoutException as error:
        raise _timeout(error) from error
    except httpx.HTTPError as error:
        raise ProxyError(502, f"backend unavailable: {error}", code="backend_unavailable") from error


def _timeout(error: httpx.TimeoutException) -> ProxyError:
    if isinstance(error, httpx.ConnectTimeout | httpx.PoolTimeout):
        return ProxyError(502, "backend unreachable (connect timeout)", code="backend_unavailable")
    return ProxyError(504, "backend timed out", code="backend_timeout")
