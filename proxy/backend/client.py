"""The upstream OpenAI-compatible server (llama.cpp, vLLM, ...), reached over HTTP.

Nothing a backend sends is trusted: a completion is parsed strictly (no NaN or Infinity, which
could not be rendered again) and checked against the fields the proxy reads before anything is
stored or returned; a failure becomes a ProxyError with a short, plain-text message.
"""

from __future__ import annotations

import contextlib
import html
import json
import math
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
from pydantic import BaseModel, Field, NonNegativeInt, ValidationError

from proxy.gateway.errors import ProxyError

MESSAGE_LIMIT = 200

_INVISIBLE = re.compile(r"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")


class BackendUsage(BaseModel):
    prompt_tokens: NonNegativeInt | None = None
    completion_tokens: NonNegativeInt | None = None
    total_tokens: NonNegativeInt | None = None


class _Message(BaseModel):
    content: str | None = None
    tool_calls: list[Any] | None = None
    function_call: dict[str, Any] | None = None


class _Choice(BaseModel):
    index: NonNegativeInt = 0
    message: _Message
    finish_reason: str | None = None


class _Completion(BaseModel):
    """The fields of a completion the proxy reads; others pass through unchecked."""

    id: str | None = None
    choices: list[_Choice] = Field(min_length=1)
    usage: BackendUsage | None = None


def backend_message(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """A backend's words fit for a client's error message: plain text (an HTML error page loses its
    tags), one line, at most `limit` characters."""
    plain = _SPACE.sub(" ", html.unescape(_TAG.sub(" ", _INVISIBLE.sub(" ", text)))).strip()
    return plain if len(plain) <= limit else plain[: limit - 1] + "…"


def load_json(raw: bytes | str) -> Any:
    """JSON as a backend sent it, refusing NaN and Infinity (ValueError), which the proxy could not render."""
    return json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999
        raise ValueError(f"{text} is out of range")
    return value


def _message_of(detail: Any) -> str:
    error = detail.get("error", detail) if isinstance(detail, dict) else detail
    message = error.get("message") if isinstance(error, dict) else error
    if isinstance(message, str):
        return message
    return "" if error is None else json.dumps(error)


def _body_message(raw: bytes) -> str:
    try:
        return _message_of(load_json(raw))
    except ValueError:
        return raw.decode(errors="replace")


def _backend_error(status: int, raw: bytes) -> ProxyError:
    message = backend_message(_body_message(raw)) or f"backend answered {status}"
    if status >= 500:
        return ProxyError(502, f"backend error ({status}): {message}", code="backend_error")
    return ProxyError(status, message, code="backend_rejected")


def checked(payload: Any, shape: type[BaseModel], what: str) -> dict[str, Any]:
    """A parsed backend payload, once it is known to be an object of `shape` and not an error report."""
    if not isinstance(payload, dict):
        raise malformed(f"{what}: not an object")
    if payload.get("error"):
        message = backend_message(_message_of(payload)) or "no message"
        raise ProxyError(502, f"backend error: {message}", code="backend_error")
    try:
        shape.model_validate(payload)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        says = "should be an object" if first["type"] == "model_type" else first["msg"]
        raise malformed(f"{what}: {where}: {says}") from error
    return payload


def malformed(what: str) -> ProxyError:
    return ProxyError(502, backend_message(f"backend sent a malformed {what}"), code="backend_malformed")


def parsed(raw: bytes | str, model: type[BaseModel], what: str) -> dict[str, Any]:
    """A backend's JSON (a completion or a stream event), checked against the fields the proxy reads."""
    try:
        payload = load_json(raw)
    except ValueError as error:
        raise malformed(f"{what}: not JSON") from error
    return checked(payload, model, what)


def _completion(raw: bytes) -> dict[str, Any]:
    return parsed(raw, _Completion, "completion")


class _Attempt:
    """What httpcore's trace shows of one request: whether it opened a connection, whether an answer began."""

    def __init__(self) -> None:
        self.fresh = False
        self.answered = False

    async def trace(self, name: str, info: dict[str, Any]) -> None:
        if name == "connection.connect_tcp.started":
            self.fresh = True
        elif name == "http11.receive_response_headers.complete":
            self.answered = True

    def unsent(self, error: httpx.HTTPError) -> bool:
        """True when the backend cannot have begun a generation: no connection was made, or a kept-alive
        connection had been dropped by the server before any answer (it closes idle ones at will).
        A fresh connection that fails, or any failure after the answer began, may have cost a whole
        generation: never retried."""
        if isinstance(error, httpx.ConnectError):
            return True
        dropped = isinstance(error, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError)
        return dropped and not self.fresh and not self.answered


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
            message = backend_message(f"backend stream broke: {error}")
            raise ProxyError(502, message, code="backend_unavailable") from error

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
        """A non-streaming chat completion, checked, and the seconds it took."""
        started = time.perf_counter()
        with _translated_errors():
            response = await self._post_once_more_if_unsent(body)
        if response.status_code != 200:
            raise _backend_error(response.status_code, response.content)
        return _completion(response.content), time.perf_counter() - started

    async def _post_once_more_if_unsent(self, body: dict[str, Any]) -> httpx.Response:
        attempt = _Attempt()
        try:
            return await self._client.post("/chat/completions", json=body, extensions={"trace": attempt.trace})
        except httpx.HTTPError as error:
            if not attempt.unsent(error):
                raise
        return await self._client.post("/chat/completions", json=body)

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
        message = backend_message(f"backend unavailable: {error}")
        raise ProxyError(502, message, code="backend_unavailable") from error


def _timeout(error: httpx.TimeoutException) -> ProxyError:
    if isinstance(error, httpx.ConnectTimeout | httpx.PoolTimeout):
        return ProxyError(502, "backend unreachable (connect timeout)", code="backend_unavailable")
    return ProxyError(504, "backend timed out", code="backend_timeout")
