"""Routes: GET /v1/speedup/stats (JSON) and GET /dashboard (the ops page and its bundled assets)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from memory_store.base import MemoryStore
from proxy.gateway.auth import Authenticator, bearer_token
from proxy.gateway.dependencies import Auth, part
from proxy.gateway.errors import ProxyError
from proxy.stats.pricing import Pricing
from proxy.stats.recorder import StatsRecorder
from proxy.stats.report import build_report
from proxy.stats.summary import WINDOWS, Window

ASSETS = {
    "uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "uPlot.min.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "uPlot.LICENSE": "text/plain; charset=utf-8",
}
_NO_STORE = {"cache-control": "no-store"}


@dataclass(frozen=True)
class StatsSources:
    """Where a report comes from: this replica's recorder (and its store), memory, prices."""

    recorder: StatsRecorder
    memory: MemoryStore | None
    pricing: Pricing

    def report(self, window: Window, tenants: list[str] | None) -> dict[str, Any]:
        """Blocking: reads the stats store and memory."""
        return build_report(self.recorder, self.memory, self.pricing, window, tenants)

    def known_tenants(self) -> list[str]:
        """Blocking: every tenant with figures or memory, for the dashboard's picker."""
        names: set[str] = set()
        for source in (self.recorder.store, self.memory):
            try:
                names.update(source.tenants() if source is not None else [])
            except Exception:  # noqa: BLE001 - the list is a convenience for the dashboard
                continue
        return sorted(names)


def stats_sources(request: Request) -> StatsSources:
    return part(request, "stats")


Sources = Annotated[StatsSources, Depends(stats_sources)]


def _asset(name: str) -> bytes:
    return resources.files("proxy").joinpath("static", name).read_bytes()


def stats_scope(request: Request, auth: Authenticator, tenant: str | None) -> list[str] | None:
    """The tenants the caller may see: an admin any one or all (None), a tenant key only its own."""
    if auth.is_admin(request):
        return None if not tenant else [tenant]
    own = auth.tenant_for(request)
    if tenant and tenant != own:
        raise ProxyError(403, "a tenant key sees only its own stats", code="forbidden_tenant")
    return [own]


router = APIRouter()


@router.get("/v1/speedup/stats")
async def stats(
    request: Request,
    auth: Auth,
    sources: Sources,
    window: str = Query("1h", description="1h, 24h or 7d"),
    tenant: str | None = Query(None, description="admin only: one tenant (default: all)"),
) -> JSONResponse:
    chosen = WINDOWS.get(window)
    if chosen is None:
        raise ProxyError(400, f"window must be one of {', '.join(WINDOWS)}", code="invalid_window", param="window")
    scope = stats_scope(request, auth, tenant)
    try:
        body = await asyncio.to_thread(sources.report, chosen, scope)
    except Exception as error:  # noqa: BLE001 - the store being down is a 503, not a crash
        raise ProxyError(503, f"stats store unavailable: {error}", code="stats_unavailable") from error
    if auth.is_admin(request):
        body["tenants"] = await asyncio.to_thread(sources.known_tenants)
    return JSONResponse(body, headers=_NO_STORE)


@router.get("/dashboard", response_model=None)
async def dashboard(request: Request, auth: Auth) -> Response:
    if not (auth.is_admin(request) or auth.admin_key_matches(request.query_params.get("key"))):
        status = 401 if bearer_token(request) is None and "key" not in request.query_params else 403
        raise ProxyError(status, "admin key required: open /dashboard?key=ADMIN_KEY", code="admin_only")
    return HTMLResponse(_asset("dashboard.html"), headers=_NO_STORE)


@router.get("/dashboard/static/{name}", response_model=None)
async def asset(name: str) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise ProxyError(404, "no such asset", code="not_found")
    return Response(_asset(name), media_type=media_type, headers={"cache-control": "max-age=300"})
