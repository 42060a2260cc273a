"""API keys to tenants, the admin key, and who may see the proxy's health details and metrics."""

from __future__ import annotations

import hmac

from fastapi import Request

from proxy.gateway.errors import ProxyError

LOCAL_TENANT = "local"


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key")


def _same(secret: str, token: str | None) -> bool:
    if not secret or not token:  # empty never matches; settings refuse empty keys, this holds if one slips in
        return False
    return hmac.compare_digest(secret.encode(), token.encode())


class Authenticator:
    """Who is calling: a tenant by its API key, and whether the caller holds the admin key.

    protect_observability (None: on when api_keys are configured): /metrics and the details of
    /healthz (backend URL, memory report) are for admins only.
    """

    def __init__(
        self, api_keys: dict[str, str], admin_key: str | None, protect_observability: bool | None = None
    ) -> None:
        self.api_keys = dict(api_keys)
        self.admin_key = admin_key
        self.protect_observability = bool(api_keys) if protect_observability is None else protect_observability

    def tenant_for(self, request: Request) -> str:
        """The tenant of the caller; without configured keys everyone is the one local tenant."""
        if not self.api_keys:
            return LOCAL_TENANT
        token = bearer_token(request)
        for key, tenant in self.api_keys.items():
            if _same(key, token):
                return tenant
        raise ProxyError(401, "Incorrect API key provided.", code="invalid_api_key")

    def is_admin(self, request: Request) -> bool:
        if self.admin_key is None:
            return not self.api_keys  # an unauthenticated loopback proxy is administered locally
        return _same(self.admin_key, bearer_token(request))

    def admin_key_matches(self, key: str | None) -> bool:
        return self.admin_key is not None and _same(self.admin_key, key)

    def require_admin(self, request: Request) -> None:
        if not self.is_admin(request):
            raise ProxyError(401 if not bearer_token(request) else 403, "admin key required", code="admin_only")

    def may_observe(self, request: Request) -> bool:
        """Whether the caller may read metrics and health details."""
        return not self.protect_observability or self.is_admin(request)

    def require_observer(self, request: Request) -> None:
        if not self.may_observe(request):
            self.require_admin(request)
