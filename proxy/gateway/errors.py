"""Errors in OpenAI's envelope: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    502: "api_error",
    503: "api_error",
    504: "timeout_error",
}


class ProxyError(Exception):
    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param

    def envelope(self) -> dict[str, Any]:
        return error_envelope(self.status, self.message, code=self.code, param=self.param)


def invalid(what: str, error: ValidationError) -> ProxyError:
    """A 400 naming the first field pydantic refused."""
    first = error.errors()[0]
    param = ".".join(str(p) for p in first["loc"]) or None
    return ProxyError(400, f"invalid {what}: {param}: {first['msg']}", param=param)


def error_envelope(status: int, message: str, *, code: str | None = None, param: str | None = None) -> dict:
    return {
        "error": {
            "message": message,
            "type": _TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error"),
            "param": param,
            "code": code,
        }
    }


def error_response(error: ProxyError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error.envelope(), status_code=error.status, headers=headers)


async def _proxy_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ProxyError)
    return error_response(error)


async def _http_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    return JSONResponse(error_envelope(error.status_code, str(error.detail)), status_code=error.status_code)


async def _validation_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    first = error.errors()[0] if error.errors() else {}
    param = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
    return JSONResponse(
        error_envelope(400, f"invalid request: {first.get('msg', 'malformed')}", param=param),
        status_code=400,
    )


class CatchAll:
    """Any exception no handler took: a 500 in the envelope, logged, and the connection kept.

    Starlette's last-resort handler answers and then re-raises, and uvicorn closes a kept-alive
    connection on an exception, failing the next request of whoever pooled it. This middleware,
    inside Starlette's, answers and swallows instead. A response already under way cannot be
    turned into an error: that one is re-raised, and closing the connection is what ends it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def noting_start(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, noting_start)
        except Exception:
            log.exception("unexpected error in %s %r", scope.get("method"), scope.get("path"))
            if started:
                raise
            envelope = error_envelope(500, "internal error in the proxy (logged)", code="internal_error")
            await JSONResponse(envelope, status_code=500)(scope, receive, send)


def install_error_handlers(app: Any) -> None:
    app.add_exception_handler(ProxyError, _proxy_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_middleware(CatchAll)
