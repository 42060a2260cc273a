"""The incoming chat request: validated where the proxy depends on it, passed through elsewhere."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from proxy.gateway.errors import ProxyError, invalid
from proxy.learning.memory_modes import MemoryMode

ReuseControl = Literal["auto", "allow", "never"]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: Any = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class SpeedupOptions(BaseModel):
    """Per-request control, sent as `"speedup": {...}` in the body (the openai SDK's `extra_body`)."""

    model_config = ConfigDict(extra="forbid")
    reuse: ReuseControl = "auto"
    memory: Literal["on", "off"] = "on"
    memory_mode: MemoryMode | None = None  # overrides the configured mode (proxy/learning/memory_modes.py)


class ChatRequest(BaseModel):
    """The fields the proxy reads; everything else is kept verbatim in `body` for the backend."""

    model_config = ConfigDict(extra="allow")
    messages: list[ChatMessage] = Field(min_length=1)
    model: str = "default"
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=16)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    speedup: SpeedupOptions = Field(default_factory=SpeedupOptions)

    @property
    def client_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


def parse_chat_request(raw: bytes, headers: dict[str, str]) -> tuple[ChatRequest, dict[str, Any]]:
    """The validated view and the body to forward (without the proxy's own `speedup` field)."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise ProxyError(400, f"request body is not valid JSON: {error}", code="invalid_json") from error
    if not isinstance(body, dict):
        raise ProxyError(400, "request body must be a JSON object", code="invalid_request")
    try:
        request = ChatRequest.model_validate(body)
    except ValidationError as error:
        raise invalid("request", error) from error
    reuse_header = headers.get("x-speedup-reuse")
    if reuse_header in ("allow", "never", "auto"):
        request.speedup.reuse = reuse_header  # type: ignore[assignment]
    if headers.get("x-speedup-memory") == "off":
        request.speedup.memory = "off"
    body.pop("speedup", None)
    body.setdefault("model", request.model)
    return request, body


def reuse_allowed(request: ChatRequest) -> bool:
    """Reuse only where the client wants a deterministic answer or says so explicitly."""
    if request.speedup.reuse == "never":
        return False
    return request.speedup.reuse == "allow" or request.temperature == 0
