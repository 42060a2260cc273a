"""The reuse tier's answer: a stored episode served as a completion, whole or as SSE chunks."""

from __future__ import annotations

import time
import uuid

from fastapi.responses import JSONResponse, StreamingResponse

from memory_store.episode import Episode
from proxy.gateway.chat_request import ChatRequest
from proxy.gateway.sse import completion_chunks, iterate

ZERO_USAGE = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


def new_completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex


def reuse_response(
    request: ChatRequest, source: Episode, completion_id: str, headers: dict[str, str]
) -> JSONResponse | StreamingResponse:
    created = int(time.time())
    if request.stream:
        usage = ZERO_USAGE if request.include_usage else None
        chunks = completion_chunks(completion_id, request.model, created, source.answer, "stop", usage)
        return StreamingResponse(iterate(chunks), media_type="text/event-stream", headers=headers)
    payload = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": request.model,
        "system_fingerprint": "speedup-reuse",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": source.answer},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": dict(ZERO_USAGE),
    }
    return JSONResponse(payload, headers=headers)
