"""The incoming chat request: validated where the proxy depends on it, passed through elsewhere."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from budget.compute.answers import AnswerFormat
from proxy.gateway.body import parse_json_object
from proxy.gateway.errors import ProxyError, invalid
from proxy.learning.memory_modes import MemoryMode

ReuseControl = Literal["auto", "allow", "never"]
MAX_TOKENS = 2**31 - 1  # backends keep token counts in 32-bit integers


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: Any = None

    @field_validator("content")
    @classmethod
    def _text_or_parts(cls, content: Any) -> Any:
        """A string, null, or a list of typed parts whose text parts hold strings (memory reads them)."""
        if content is None or isinstance(content, str):
            return content
        if not isinstance(content, list):
            raise ValueError("content must be a string, a list of content parts or null")
        for part in content:
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise ValueError("each content part must be an object with a string 'type'")
            if part["type"] == "text" and not isinstance(part.get("text"), str):
                raise ValueError("a text content part needs a string 'text'")
        return content


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = Field(False, strict=True)  # strict: see ChatRequest


class SampleOptions(BaseModel):
    """`"samples": {"max": 8, "mode": "vote"}`: up to `max` samples, stopped early, the majority returned."""

    model_config = ConfigDict(extra="forbid")
    max: int = Field(ge=1, le=64, strict=True)
    mode: Literal["vote"] = "vote"
    answer: AnswerFormat = Field(default_factory=AnswerFormat)


class RefineOptions(BaseModel):
    """`"refine": {"max_rounds": 3}`: draft, check, revise only if the check fails."""

    model_config = ConfigDict(extra="forbid")
    max_rounds: int = Field(ge=1, le=16, strict=True)


class SpeedupOptions(BaseModel):
    """Per-request control, sent as `"speedup": {...}` in the body (the openai SDK's `extra_body`)."""

    model_config = ConfigDict(extra="forbid")
    reuse: ReuseControl = "auto"
    memory: Literal["on", "off"] = "on"
    memory_mode: MemoryMode | None = None  # overrides the configured mode (proxy/learning/memory_modes.py)
    samples: SampleOptions | None = None
    refine: RefineOptions | None = None

    @model_validator(mode="after")
    def _one_method(self) -> SpeedupOptions:
        if self.samples is not None and self.refine is not None:
            raise ValueError("ask for samples or refine, not both")
        return self


class ChatRequest(BaseModel):
    """The fields the proxy reads; everything else is kept verbatim in `body` for the backend.

    The fields read are strict, as at OpenAI: `"stream": "false"` or `"temperature": "0"` is a 400,
    so the value validated is always the value forwarded.
    """

    model_config = ConfigDict(extra="allow")
    messages: list[ChatMessage] = Field(min_length=1)
    model: str = "default"
    stream: bool = Field(False, strict=True)
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=16, strict=True)
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS, strict=True)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS, strict=True)
    temperature: float | None = Field(None, ge=0, le=2, strict=True)
    speedup: SpeedupOptions = Field(default_factory=SpeedupOptions)

    @model_validator(mode="after")
    def _one_answer(self) -> ChatRequest:
        adaptive = self.speedup.samples is not None or self.speedup.refine is not None
        if adaptive and self.n != 1:
            raise ValueError("speedup samples and refine return one choice: leave n at 1")
        if adaptive and self.model_extra and self.model_extra.get("tools"):
            raise ValueError("speedup samples and refine do not apply to requests with tools")
        return self

    @property
    def adaptive(self) -> bool:
        """The client asked for one reliable answer, bought with as few samples or rounds as it needs."""
        return self.speedup.samples is not None or self.speedup.refine is not None

    @property
    def client_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


def parse_chat_request(raw: bytes, headers: dict[str, str]) -> tuple[ChatRequest, dict[str, Any]]:
    """The validated view and the body to forward (without the proxy's own `speedup` field)."""
    body = parse_json_object(raw)
    _header_twins(body, headers)
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


def _header_twins(body: dict[str, Any], headers: dict[str, str]) -> None:
    """`X-Speedup-Samples: 8` (or `vote:8`) and `X-Speedup-Refine: 3`, for clients that cannot add body fields."""
    samples, refine = headers.get("x-speedup-samples"), headers.get("x-speedup-refine")
    if samples is None and refine is None:
        return
    speedup = body.get("speedup")
    if speedup is None:
        speedup = body["speedup"] = {}
    if not isinstance(speedup, dict):
        return  # the body's own `speedup` is refused by validation
    if samples is not None:
        mode, _, count = samples.strip().rpartition(":")
        if not count.isdigit() or mode not in ("", "vote"):
            raise invalid_header("x-speedup-samples", "a sample count, e.g. 8 or vote:8")
        speedup["samples"] = {**(speedup.get("samples") or {}), "max": int(count), "mode": mode or "vote"}
    if refine is not None:
        if not refine.strip().isdigit():
            raise invalid_header("x-speedup-refine", "a number of rounds, e.g. 3")
        speedup["refine"] = {**(speedup.get("refine") or {}), "max_rounds": int(refine)}


def invalid_header(name: str, expected: str) -> ProxyError:
    return ProxyError(400, f"header {name} must be {expected}", code="invalid_header")


def reuse_allowed(request: ChatRequest) -> bool:
    """Reuse only where the client wants a deterministic answer (temperature 0, or one reliable
    answer by vote or refine) or says so explicitly."""
    if request.speedup.reuse == "never":
        return False
    return request.speedup.reuse == "allow" or request.temperature == 0 or request.adaptive
