"""The OpenAI-compatible routes: POST /v1/chat/completions and GET /v1/models."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from proxy.backend.client import OpenAIBackend
from proxy.gateway.body import read_body
from proxy.gateway.dependencies import BodyLimit, Tenant, part
from proxy.serving.pipeline import ChatPipeline


def chat_pipeline(request: Request) -> ChatPipeline:
    return part(request, "pipeline")


def backend(request: Request) -> OpenAIBackend:
    return part(request, "backend")


router = APIRouter()


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(
    request: Request, tenant: Tenant, limit: BodyLimit, pipeline: Annotated[ChatPipeline, Depends(chat_pipeline)]
) -> Response:
    raw = await read_body(request, limit)
    headers = {k.lower(): v for k, v in request.headers.items()}
    return await pipeline.handle(raw, headers, tenant)


@router.get("/v1/models")
async def models(tenant: Tenant, upstream: Annotated[OpenAIBackend, Depends(backend)]) -> dict[str, Any]:
    return await upstream.models()
