"""API keys to tenants, and the admin key."""

from __future__ import annotations

import hmac

from fastapi import Request

from proxy.config import LOCAL_TENANT, Settings
from proxy.gateway.errors import ProxyError


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key")


def tenant_for(request: Request, settings: Settings) -> str:
    """The tenant of the caller; without configured keys everyone is the one local tenant."""
    if not settings.api_keys:
        return LOCAL_TENANT
    token = bearer_token(request)
    if token is not None:
        for key, tenant in settings.api_keys.items():
            if hmac.compare_digest(key.encode(), token.encode()):
                return tenant
    raise ProxyError(401, "Incorrect API key provided.", code="invalid_api_key")


def is_admin(request: Request, settings: Settings) -> bool:
    token = bearer_token(request)
    if settings.admin_key is None:
        return not settings.api_keys  # an unauthenticated loopback proxy is administered locally
    return token is not None and hmac.compare_digest(settings.admin_key.encode(), token.encode())


def require_admin(request: Request, settings: Settings) -> None:
    if not is_admin(request, settings):
        raise ProxyError(401 if bearer_token(request) is None else 403, "admin key required", code="admin_only")
