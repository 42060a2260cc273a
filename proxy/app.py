"""The FastAPI gateway: OpenAI-compatible routes plus health and metrics."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from proxy.admin.routes import admin_router
from proxy.container import AppContainer
from proxy.gateway.auth import tenant_for
from proxy.gateway.errors import ProxyError, install_error_handlers
from proxy.learning.feedback import feedback_router
from proxy.serving.pipeline import ChatPipeline
from proxy.stats.routes import stats_router


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


def create_app(container: AppContainer) -> FastAPI:
    app = FastAPI(title="speedup-proxy", version="0.1.0", docs_url=None, redoc_url=None)
    app.state.container = container
    install_error_handlers(app)
    pipeline = ChatPipeline(container)
    settings = container.settings
    app.include_router(stats_router(container))
    app.include_router(feedback_router(container))
    app.include_router(admin_router(container))

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> Response:
        tenant = tenant_for(request, settings)
        raw = await read_body(request, settings.max_body_bytes)
        headers = {k.lower(): v for k, v in request.headers.items()}
        return await pipeline.handle(raw, headers, tenant)

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        tenant_for(request, settings)
        return await container.backend.models()

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        memory: dict[str, Any] = {"backend": "off"}
        status = "ok"
        if container.memory is not None:
            try:
                memory = container.memory.health()
            except Exception as error:  # noqa: BLE001 - health reports faults, never raises them
                memory = {"error": str(error)}
            if memory.get("degraded") or memory.get("error"):
                status = "degraded"
        body = {"status": status, "backend": container.backend.base_url, "memory": memory}
        return JSONResponse(body)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(container.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app
