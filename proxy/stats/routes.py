"""Routes: GET /v1/speedup/stats (JSON) and GET /dashboard (the ops page and its bundled assets)."""

from __future__ import annotations

import asyncio
import hmac
from importlib import resources
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from proxy.container import AppContainer
from proxy.gateway.auth import bearer_token, is_admin, tenant_for
from proxy.gateway.errors import ProxyError
from proxy.stats.report import build_report
from proxy.stats.summary import WINDOWS

ASSETS = {
    "uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "uPlot.min.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "uPlot.LICENSE": "text/plain; charset=utf-8",
}
_NO_STORE = {"cache-control": "no-store"}


def _asset(name: str) -> bytes:
    return resources.files("proxy").joinpath("static", name).read_bytes()


def stats_scope(request: Request, container: AppContainer, tenant: str | None) -> list[str] | None:
    """The tenants the caller may see: an admin any one or all (None), a tenant key only its own."""
    settings = container.settings
    if is_admin(request, settings):
        return None if not tenant else [tenant]
    own = tenant_for(request, settings)
    if tenant and tenant != own:
        raise ProxyError(403, "a tenant key sees only its own stats", code="forbidden_tenant")
    return [own]


def dashboard_allowed(request: Request, container: AppContainer) -> bool:
    settings = container.settings
    if is_admin(request, settings):
        return True
    key = request.query_params.get("key")
    return bool(key and settings.admin_key and hmac.compare_digest(settings.admin_key.encode(), key.encode()))


def stats_router(container: AppContainer) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/speedup/stats")
    async def stats(
        request: Request,
        window: str = Query("1h", description="1h, 24h or 7d"),
        tenant: str | None = Query(None, description="admin only: one tenant (default: all)"),
    ) -> JSONResponse:
        chosen = WINDOWS.get(window)
        if chosen is None:
            raise ProxyError(400, f"window must be one of {', '.join(WINDOWS)}", code="invalid_window", param="window")
        scope = stats_scope(request, container, tenant)
        recorder = container.stats
        if recorder is None:
            raise ProxyError(503, "stats are off", code="stats_unavailable")
        try:
            body: dict[str, Any] = await asyncio.to_thread(
                build_report, recorder, container.memory, container.settings.pricing, chosen, scope
            )
        except Exception as error:  # noqa: BLE001 - the store being down is a 503, not a crash
            raise ProxyError(503, f"stats store unavailable: {error}", code="stats_unavailable") from error
        if is_admin(request, container.settings):
            body["tenants"] = await asyncio.to_thread(_known_tenants, container)
        return JSONResponse(body, headers=_NO_STORE)

    @router.get("/dashboard", response_model=None)
    async def dashboard(request: Request) -> Response:
        if not dashboard_allowed(request, container):
            status = 401 if bearer_token(request) is None and "key" not in request.query_params else 403
            raise ProxyError(status, "admin key required: open /dashboard?key=ADMIN_KEY", code="admin_only")
        return HTMLResponse(_asset("dashboard.html"), headers=_NO_STORE)

    @router.get("/dashboard/static/{name}", response_model=None)
    async def asset(name: str) -> Response:
        media_type = ASSETS.get(name)
        if media_type is None:
            raise ProxyError(404, "no such asset", code="not_found")
        return Response(_asset(name), media_type=media_type, headers={"cache-control": "max-age=300"})

    return router


def _known_tenants(container: AppContainer) -> list[str]:
    names: set[str] = set()
    for source in (container.stats.store if container.stats else None, container.memory):
        try:
            names.update(source.tenants() if source is not None else [])
        except Exception:  # noqa: BLE001 - the list is a convenience for the dashboard
            continue
    return sorted(names)
