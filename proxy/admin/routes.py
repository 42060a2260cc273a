"""Admin endpoints for memory management: list, search, show, delete and export, per tenant.

All require the admin key (`Authenticator.require_admin`). Episodes and lessons never cross tenants.

    GET    /admin/tenants
    GET    /admin/tenants/{t}/episodes?limit=&offset=&q=     (q: semantic search via the embedder)
    GET    /admin/tenants/{t}/episodes/{id}
    DELETE /admin/tenants/{t}/episodes/{id}
    GET    /admin/tenants/{t}/reflections?limit=&offset=&kind=
    GET    /admin/tenants/{t}/reflections/{id}
    DELETE /admin/tenants/{t}/reflections/{id}
    GET    /admin/tenants/{t}/export                          (JSONL: one episode a line)
    DELETE /admin/tenants/{t}                                 (all of the tenant's memory)
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from proxy.admin.service import AdminMemory, export_line
from proxy.gateway.dependencies import admin_caller, required
from proxy.gateway.errors import ProxyError
from proxy.gateway.text import has_control_characters


def admin_memory(request: Request) -> AdminMemory:
    return required(request, "admin", "memory")


Admin = Annotated[AdminMemory, Depends(admin_memory)]


def printable_tenant(request: Request) -> None:
    """Every route's `{tenant}`: no control characters (they end up in headers, logs and file names)."""
    tenant = request.path_params.get("tenant")
    if tenant is not None and has_control_characters(tenant):
        raise ProxyError(400, "a tenant name must not hold control characters", code="invalid_tenant", param="tenant")


# The admin key is checked first: without it nothing of the request is looked at.
router = APIRouter(prefix="/admin", dependencies=[Depends(admin_caller), Depends(printable_tenant)])


def _not_found(kind: str, item: str, tenant: str) -> ProxyError:
    return ProxyError(404, f"no {kind} {item!r} for tenant {tenant!r}", code=f"{kind}_not_found")


@router.get("/tenants")
async def tenants(admin: Admin) -> dict[str, Any]:
    return {"tenants": await admin.tenant_rows()}


@router.get("/tenants/{tenant}/episodes")
async def episodes(
    tenant: str,
    admin: Admin,
    limit: int = Query(50, ge=1, le=1000),
    offset: int = Query(0, ge=0),
    q: str | None = Query(None, min_length=1, max_length=2000),
) -> dict[str, Any]:
    if q is not None:
        return {"tenant": tenant, "query": q, "episodes": await admin.search(tenant, q, limit)}
    page = await admin.memory.alist_episodes(tenant, limit, offset)
    total = await admin.memory.acount(tenant)
    return {"tenant": tenant, "total": total, "offset": offset, "episodes": [e.model_dump() for e in page]}


@router.get("/tenants/{tenant}/episodes/{episode_id}")
async def episode(tenant: str, episode_id: str, admin: Admin) -> dict[str, Any]:
    found = await admin.memory.aget(tenant, episode_id)
    if found is None:
        raise _not_found("episode", episode_id, tenant)
    return found.model_dump()


@router.delete("/tenants/{tenant}/episodes/{episode_id}")
async def delete_episode(tenant: str, episode_id: str, admin: Admin) -> dict[str, Any]:
    if not await admin.memory.adelete(tenant, episode_id):
        raise _not_found("episode", episode_id, tenant)
    return {"deleted": episode_id}


@router.get("/tenants/{tenant}/reflections")
async def reflections(
    tenant: str,
    admin: Admin,
    limit: int = Query(50, ge=1, le=1000),
    offset: int = Query(0, ge=0),
    kind: str | None = None,
) -> dict[str, Any]:
    page = await admin.reflections.alist_reflections(tenant, limit, offset, kind)
    total = await admin.reflections.acount(tenant)
    return {"tenant": tenant, "total": total, "offset": offset, "reflections": [r.public() for r in page]}


@router.get("/tenants/{tenant}/reflections/{reflection_id}")
async def reflection(tenant: str, reflection_id: str, admin: Admin) -> dict[str, Any]:
    found = await admin.reflections.aget(tenant, reflection_id)
    if found is None:
        raise _not_found("reflection", reflection_id, tenant)
    return found.public()


@router.delete("/tenants/{tenant}/reflections/{reflection_id}")
async def delete_reflection(tenant: str, reflection_id: str, admin: Admin) -> dict[str, Any]:
    if not await admin.reflections.adelete(tenant, reflection_id):
        raise _not_found("reflection", reflection_id, tenant)
    return {"deleted": reflection_id}


@router.get("/tenants/{tenant}/export")
async def export(tenant: str, admin: Admin) -> StreamingResponse:
    episodes = await admin.all_episodes(tenant)
    scopes = await admin.responses.ascopes(tenant)

    async def lines() -> AsyncIterator[bytes]:
        for item in sorted(episodes, key=lambda e: (e.created_at, e.id)):
            yield export_line(item, scopes).encode()

    return StreamingResponse(
        lines(),
        media_type="application/x-ndjson",
        headers={"content-disposition": attachment(f"{tenant}-episodes.jsonl")},
    )


def attachment(filename: str) -> str:
    """A content-disposition for any file name: an ASCII fallback, and the name itself per RFC 5987."""
    fallback = re.sub(r"[^A-Za-z0-9._-]", "_", filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


@router.delete("/tenants/{tenant}")
async def delete_tenant(tenant: str, admin: Admin) -> dict[str, Any]:
    return await admin.delete_tenant(tenant)
