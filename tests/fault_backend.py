"""Backends that lie: an OpenAI-compatible app that fails on cue, and a raw server that drops connections.

`FaultBackend.mode` picks the fault; "ok" answers properly. Each fault has a non-streaming form and a
streaming one (the streaming-only faults answer a non-streaming request properly).
"""

from __future__ import annotations

import asyncio
import json
import socket
import socketserver
import threading
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from tests.conftest import ServerThread, stub_url

ANSWER = "The answer is 42."
HTML_PAGE = (
    "<html><head><title>503 Service Unavailable</title><style>body { color: red; }</style></head><body>"
    + "<h1>503 Service Unavailable</h1><p>The upstream is &quot;down&quot;.</p>" * 20
    + "</body></html>"
)
STATUSES = {"status_400": 400, "status_429": 429, "status_500": 500, "status_503": 503}
BODY_MODES = [
    *STATUSES,
    "truncated_json",
    "error_body",
    "list_body",
    "nan",
    "choices_strings",
    "choices_missing",
    "choices_empty",
    "usage_string",
    "hang",
    "cut_body",
]
STREAM_ONLY_MODES = ["error_mid_stream", "no_done", "number_event", "string_event"]

_BASE = {"id": "chatcmpl-fault", "object": "chat.completion.chunk", "created": 0, "model": "fault"}
_ROLE = {**_BASE, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
_TEXT = {**_BASE, "choices": [{"index": 0, "delta": {"content": "The answer"}, "finish_reason": None}]}
_FINISH = {**_BASE, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
_ERROR = {"error": {"message": "model crashed <b>badly</b>", "type": "server_error", "code": 500}}
_USAGE = {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}


def completion(**changes: Any) -> dict[str, Any]:
    message = {"role": "assistant", "content": ANSWER}
    body = {
        "id": "chatcmpl-fault",
        "object": "chat.completion",
        "created": 0,
        "model": "fault",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": dict(_USAGE),
    }
    return {**body, **changes}


def _data(payload: Any) -> str:
    return "data: " + (payload if isinstance(payload, str) else json.dumps(payload)) + "\n\n"


_NAN_BODY = json.dumps(completion(logprobs=float("nan")))  # json.dumps writes NaN, as a lying backend may
_NAN_CHUNK = json.dumps({**_TEXT, "logprobs": float("nan")})
_DONE = "data: [DONE]\n\n"

# What each fault sends as a non-streaming body (JSON text) and as a stream (SSE lines).
_BODIES: dict[str, str] = {
    "truncated_json": json.dumps(completion())[:60],
    "error_body": json.dumps(_ERROR),
    "list_body": json.dumps([completion()]),
    "nan": _NAN_BODY,
    "choices_strings": json.dumps(completion(choices=["x"])),
    "choices_missing": json.dumps({k: v for k, v in completion().items() if k != "choices"}),
    "choices_empty": json.dumps(completion(choices=[])),
    "usage_string": json.dumps(completion(usage="lots")),
}
_STREAMS: dict[str, list[str]] = {
    "truncated_json": [_data(_ROLE), 'data: {"id": "chatcmpl-fault", "choi\n\n', _DONE],
    "error_body": [_data(_ERROR), _DONE],
    "list_body": [_data([_TEXT]), _DONE],
    "nan": [_data(_ROLE), "data: " + _NAN_CHUNK + "\n\n", _data(_FINISH), _DONE],
    "choices_strings": [_data(_ROLE), _data({**_BASE, "choices": ["x"]}), _DONE],
    "choices_missing": [_data(_BASE), _data(_BASE), _DONE],
    "choices_empty": [_data({**_BASE, "choices": []}), _DONE],
    "usage_string": [_data(_ROLE), _data(_TEXT), _data(_FINISH), _data({**_BASE, "choices": [], "usage": "lots"})],
    "error_mid_stream": [_data(_ROLE), _data(_TEXT), _data(_ERROR), _DONE],
    "no_done": [_data(_ROLE), _data(_TEXT)],
    "number_event": [_data(_ROLE), _data(_TEXT), _data("5"), _data(_FINISH), _DONE],
    "string_event": [_data(_ROLE), _data(_TEXT), _data('"x"'), _data(_FINISH), _DONE],
}


def _ok_stream() -> list[str]:
    text = {**_BASE, "choices": [{"index": 0, "delta": {"content": ANSWER}, "finish_reason": None}]}
    usage = {**_BASE, "choices": [], "usage": _USAGE}
    return [_data(_ROLE), _data(text), _data(_FINISH), _data(usage), _DONE]


class _CutResponse(Response):
    """Headers and the first part of a body, then the connection closes: a backend that died mid-answer."""

    def __init__(self, first: bytes, media_type: str, length: int | None) -> None:
        super().__init__(media_type=media_type)
        self.first = first
        self.length = length

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", self.media_type.encode())]
        if self.length is not None:
            headers.append((b"content-length", str(self.length).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": self.first, "more_body": True})
        # Returning now, the response unfinished, makes uvicorn close the connection.


class FaultBackend:
    """The fault app on its own server; `calls` counts chat requests."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.calls = 0
        app = FastAPI()

        @app.post("/v1/chat/completions", response_model=None)
        async def chat(request: Request) -> Response:
            body = await request.json()
            self.calls += 1
            return await self._answer(bool(body.get("stream")))

        self.server = ServerThread(app).start()
        self.url = stub_url(self.server)

    async def _answer(self, stream: bool) -> Response:
        mode = self.mode
        if mode in STATUSES:
            return _status(STATUSES[mode])
        if mode == "hang":
            await asyncio.sleep(60)
        if mode == "cut_body":
            return _cut(stream)
        if not stream:
            if mode not in _BODIES:  # "ok", and the streaming-only faults
                return JSONResponse(completion())
            return Response(_BODIES[mode], media_type="application/json")
        lines = _ok_stream() if mode == "ok" else _STREAMS[mode]
        return StreamingResponse(_iterate(lines), media_type="text/event-stream")

    def stop(self) -> None:
        self.server.server.force_exit = True  # a hanging request must not hold up the test
        self.server.stop()


def _status(status: int) -> Response:
    if status == 503:
        return Response(HTML_PAGE, status_code=503, media_type="text/html")
    message = f"backend says no ({status}) " + "and explains at length " * 30
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error"}}, status_code=status)


def _cut(stream: bool) -> Response:
    if stream:
        first = (_data(_ROLE) + _data(_TEXT)).encode()
        return _CutResponse(first, "text/event-stream", None)
    body = json.dumps(completion()).encode()
    return _CutResponse(body[: len(body) // 2], "application/json", len(body))


async def _iterate(lines: list[str]) -> AsyncIterator[str]:
    for line in lines:
        yield line


class DroppingBackend:
    """A raw HTTP/1.1 backend that reads a request and closes the connection without a byte of answer:
    on a connection's first request (`drop="fresh"`) or on any later one (`drop="reused"`, as a server
    that drops an idle kept-alive connection looks to a client); other requests get a completion."""

    def __init__(self, drop: str) -> None:
        self.drop = drop
        self.calls = 0
        backend = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                served = 0
                while _read_request(self.rfile):
                    backend.calls += 1
                    served += 1
                    reused = served > 1
                    if reused == (backend.drop == "reused"):
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    body = json.dumps(completion()).encode()
                    head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
                    self.wfile.write(head.encode() + body)
                    self.wfile.flush()

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _read_request(rfile: Any) -> bool:
    """Reads one request (headers and body); False when the client closed the connection."""
    length = 0
    line = rfile.readline()
    if not line:
        return False
    while line not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
        line = rfile.readline()
    rfile.read(length)
    return True
