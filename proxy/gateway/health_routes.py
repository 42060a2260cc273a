"""GET /healthz and GET /metrics."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from memory_store.base import MemoryStore
from proxy.backend.client import OpenAIBackend
from proxy.gateway.chat_routes import backend
from proxy.gateway.dependencies import part
from proxy.metrics import ProxyMetrics


def memory_store(request: Request) -> MemoryStore | None:
    return part(request, "memory")


def proxy_metrics(request: Request) -> ProxyMetrics:
    return part(request, "metrics")


router = APIRouter()


@router.get("/healthz")
async def healthz(
    memory: Annotated[MemoryStore | None, Depends(memory_store)],
    upstream: Annotated[OpenAIBackend, Depends(backend)],
) -> JSONResponse:
    report: dict[str, Any] = {"backend": "off"}
    status = "ok"
    if memory is not None:
        try:
            report = await memory.ahealth()
        except Exception as error:  # noqa: BLE001 - health reports faults, never raises them
            report = {"error": str(error)}
        if report.get("degraded") or report.get("error"):
            status = "degraded"
    return JSONResponse({"status": status, "backend": upstream.base_url, "memory": report})


@router.get("/metrics")
async def metrics(registry: Annotated[ProxyMetrics, Depends(proxy_metrics)]) -> Response:
    return Response(registry.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
