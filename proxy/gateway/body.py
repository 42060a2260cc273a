"""Reading a request body within the size limit, and parsing it as JSON the proxy can forward and store."""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi import Request

from proxy.gateway.errors import ProxyError
from proxy.gateway.text import has_lone_surrogate

MAX_JSON_DEPTH = 64  # objects and arrays inside each other; chat bodies need a handful


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


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The body's JSON object, or a 400.

    Refused here, before any part of the proxy sees them: NaN and Infinity (which `json.loads`
    accepts and every JSON encoder downstream refuses), numbers too large for a float (1e999),
    lone surrogates (not encodable as UTF-8) and nesting deeper than MAX_JSON_DEPTH.
    """
    try:
        value = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError as error:
        raise _too_deep() from error
    except ValueError as error:  # also UnicodeDecodeError: bytes that are not UTF-8
        raise ProxyError(400, f"request body is not valid JSON: {error}", code="invalid_json") from error
    _check_values(value)
    if not isinstance(value, dict):
        raise ProxyError(400, "request body must be a JSON object", code="invalid_request")
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is too large")
    return value


def _too_deep() -> ProxyError:
    return ProxyError(400, f"request body is nested deeper than {MAX_JSON_DEPTH} levels", code="invalid_json")


def _check_values(value: Any) -> None:
    """Depth and strings of a parsed body, without recursion (the body decides how deep it goes)."""
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            _check_string(item)
        elif isinstance(item, dict | list):
            if depth >= MAX_JSON_DEPTH:
                raise _too_deep()
            if isinstance(item, dict):
                for key in item:
                    _check_string(key)
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)


def _check_string(text: str) -> None:
    if has_lone_surrogate(text):
        raise ProxyError(400, "request body is not valid JSON: a string holds a lone surrogate", code="invalid_json")
