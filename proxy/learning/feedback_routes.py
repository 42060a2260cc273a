"""`POST /v1/feedback`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError

from proxy.gateway.body import parse_json_object, read_body
from proxy.gateway.dependencies import BodyLimit, Tenant, part
from proxy.gateway.errors import ProxyError, invalid
from proxy.learning.feedback import FeedbackRequest, FeedbackResult, FeedbackService


def feedback_service(request: Request) -> FeedbackService | None:
    """None when memory is off."""
    return part(request, "feedback")


router = APIRouter()


@router.post("/v1/feedback")
async def feedback(
    request: Request,
    tenant: Tenant,
    limit: BodyLimit,
    service: Annotated[FeedbackService | None, Depends(feedback_service)],
) -> FeedbackResult:
    raw = await read_body(request, limit)
    try:
        body = FeedbackRequest.model_validate(parse_json_object(raw))
    except ValidationError as error:
        raise invalid("feedback", error) from error
    if service is None:
        raise ProxyError(404, f"no response {body.response_id!r} (memory is off)", code="response_not_found")
    return await service.apply(tenant, body)
