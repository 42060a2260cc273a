"""A fast OpenAI-compatible stub backend: for the overhead benchmark and for failure tests.

It answers instantly with a fixed text, or misbehaves on cue (`mode`): "ok", "hang"
(never answers), "error" (HTTP 500), "reject_n" (400 for n>1, like llama.cpp).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

ANSWER = "The answer is 42."


def create_stub_app(answer: str = ANSWER, mode: str = "ok", delay_s: float = 0.0, jitter: float = 0.0) -> FastAPI:
    """`delay_s` is the answer time; with `jitter` j it is drawn uniformly from delay_s x [1-j, 1+j]."""
    app = FastAPI()
    app.state.mode = mode
    app.state.calls = 0
    app.state.bodies = []

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "stub", "object": "model", "owned_by": "bench"}]}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> Response:
        body = await request.json()
        app.state.calls += 1
        app.state.bodies.append(body)
        if app.state.mode == "hang":
            await asyncio.sleep(3600)
        if app.state.mode == "error":
            return JSONResponse({"error": {"message": "stub exploded", "type": "server_error"}}, status_code=500)
        if app.state.mode == "reject_n" and body.get("n", 1) > 1:
            return JSONResponse({"error": {"message": "Only one completion choice is allowed"}}, status_code=400)
        if delay_s:
            await asyncio.sleep(delay_s * random.uniform(1 - jitter, 1 + jitter))
        words = answer.split(" ")
        limit = body.get("max_tokens") or body.get("max_completion_tokens") or 10_000
        cut = len(words) > limit
        text = " ".join(words[:limit])
        finish = "length" if cut else "stop"
        usage = {"prompt_tokens": 10, "completion_tokens": min(len(words), limit)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        completion_id = "chatcmpl-stub" + uuid.uuid4().hex[:8]
        created = int(time.time())
        if not body.get("stream"):
            n = body.get("n", 1)
            return JSONResponse(
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": body.get("model", "stub"),
                    "choices": [
                        {"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
                        for i in range(n)
                    ],
                    "usage": {k: v * n if k != "prompt_tokens" else v for k, v in usage.items()},
                }
            )

        async def events() -> Any:
            base = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": "stub"}
            yield f"data: {json.dumps({**base, 'choices': [{'index': 0, 'delta': {'role': 'assistant'}}]})}\n\n"
            for i, word in enumerate(text.split(" ")):
                piece = word if i == 0 else " " + word
                choice = {"index": 0, "delta": {"content": piece}, "finish_reason": None}
                yield f"data: {json.dumps({**base, 'choices': [choice]})}\n\n"
            choice = {"index": 0, "delta": {}, "finish_reason": finish}
            yield f"data: {json.dumps({**base, 'choices': [choice]})}\n\n"
            if (body.get("stream_options") or {}).get("include_usage"):
                yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def main() -> None:
    import argparse

    import uvicorn

    parser = argparse.ArgumentParser(description="fast OpenAI-compatible stub backend")
    parser.add_argument("--port", type=int, default=8499)
    parser.add_argument("--mode", default="ok", choices=["ok", "hang", "error", "reject_n"])
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--jitter", type=float, default=0.0)
    args = parser.parse_args()
    uvicorn.run(
        create_stub_app(mode=args.mode, delay_s=args.delay, jitter=args.jitter),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
