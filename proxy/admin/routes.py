"""Admin endpoints for memory management: list, search, show, delete and export, per tenant.

All require the admin key (proxy/auth.require_admin). Episodes and lessons never cross tenants.

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

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from memory_store.base import MemoryStore
from memory_store.episode import Episode
from proxy.container import AppContainer
from proxy.gateway.auth import require_admin
from proxy.gateway.errors import ProxyError
from proxy.learning.response_log import ScopeNote
from proxy.learning.service import Learning

_PAGE = 1000


def _memory(container: AppContainer) -> tuple[MemoryStore, Learning]:
    if container.memory is None or container.learning is None:
        raise ProxyError(404, "memory is off on this proxy", code="memory_off")
    return container.memory, container.learning


async def all_episodes(memory: MemoryStore, tenant: str) -> list[Episode]:
    episodes: list[Episode] = []
    while True:
        page = await asyncio.to_thread(memory.list_episodes, tenant, _PAGE, len(episodes))
        episodes += page
        if len(page) < _PAGE:
            return episodes


async def search_episodes(container: AppContainer, tenant: str, text: str, limit: int) -> list[dict[str, Any]]:
    """Usable episodes of every scope of the tenant, nearest to the text first."""
    memory, learning = _memory(container)
    vector = await learning.embedder.embed(text)
    scopes = {e.scope for e in await all_episodes(memory, tenant)}
    found = []
    for scope in scopes:
        found += await asyncio.to_thread(memory.search, tenant, scope, vector, limit)
    found.sort(key=lambda n: n.similarity, reverse=True)
    return [n.episode.model_dump() | {"similarity": round(n.similarity, 4)} for n in found[:limit]]


def export_line(episode: Episode, scopes: dict[str, ScopeNote]) -> str:
    """An episode with the model and system messages of its scope (when the proxy saw them)."""
    note = scopes.get(episode.scope)
    extra = {"model": note.model, "system": note.system} if note is not None else {"model": None, "system": None}
    return json.dumps(episode.model_dump() | extra, ensure_ascii=False) + "\n"


def admin_router(container: AppContainer) -> APIRouter:
    def admin_only(request: Request) -> None:
        require_admin(request, container.settings)

    router = APIRouter(prefix="/admin", dependencies=[Depends(admin_only)])

    @router.get("/tenants")
    async def tenants() -> dict[str, Any]:
        memory, learning = _memory(container)
        names = sorted(set(await asyncio.to_thread(memory.tenants)) | set(learning.reflections.tenants()))
        rows = [
            {
                "tenant": name,
                "episodes": await asyncio.to_thread(memory.count, name),
                "reflections": learning.reflections.count(name),
                "reflection_tokens": learning.reflection_tokens.get(name, 0),
            }
            for name in names
        ]
        return {"tenants": rows}

    @router.get("/tenants/{tenant}/episodes")
    async def episodes(
        tenant: str,
        limit: int = Query(50, ge=1, le=1000),
        offset: int = Query(0, ge=0),
        q: str | None = Query(None, min_length=1, max_length=2000),
    ) -> dict[str, Any]:
        memory, _ = _memory(container)
        if q is not None:
            return {"tenant": tenant, "query": q, "episodes": await search_episodes(container, tenant, q, limit)}
        page = await asyncio.to_thread(memory.list_episodes, tenant, limit, offset)
        total = await asyncio.to_thread(memory.count, tenant)
        return {"tenant": tenant, "total": total, "offset": offset, "episodes": [e.model_dump() for e in page]}

    @router.get("/tenants/{tenant}/episodes/{episode_id}")
    async def episode(tenant: str, episode_id: str) -> dict[str, Any]:
        memory, _ = _memory(container)
        found = await asyncio.to_thread(memory.get, tenant, episode_id)
        if found is None:
            raise ProxyError(404, f"no episode {episode_id!r} for tenant {tenant!r}", code="episode_not_found")
        return found.model_dump()

    @router.delete("/tenants/{tenant}/episodes/{episode_id}")
    async def delete_episode(tenant: str, episode_id: str) -> dict[str, Any]:
        memory, _ = _memory(container)
        if not await asyncio.to_thread(memory.delete, tenant, episode_id):
            raise ProxyError(404, f"no episode {episode_id!r} for tenant {tenant!r}", code="episode_not_found")
        return {"deleted": episode_id}

    @router.get("/tenants/{tenant}/reflections")
    async def reflections(
        tenant: str,
        limit: int = Query(50, ge=1, le=1000),
        offset: int = Query(0, ge=0),
        kind: str | None = None,
    ) -> dict[str, Any]:
        _, learning = _memory(container)
        page = learning.reflections.list_reflections(tenant, limit, offset, kind)
        total = learning.reflections.count(tenant)
        return {"tenant": tenant, "total": total, "offset": offset, "reflections": [r.public() for r in page]}

    @router.get("/tenants/{tenant}/reflections/{reflection_id}")
    async def reflection(tenant: str, reflection_id: str) -> dict[str, Any]:
        _, learning = _memory(container)
        found = learning.reflections.get(tenant, reflection_id)
        if found is None:
            raise ProxyError(404, f"no reflection {reflection_id!r} for tenant {tenant!r}", code="reflection_not_found")
        return found.public()

    @router.delete("/tenants/{tenant}/reflections/{reflection_id}")
    async def delete_reflection(tenant: str, reflection_id: str) -> dict[str, Any]:
        _, learning = _memory(container)
        if not await asyncio.to_thread(learning.reflections.delete, tenant, reflection_id):
            raise ProxyError(404, f"no reflection {reflection_id!r} for tenant {tenant!r}", code="reflection_not_found")
        return {"deleted": reflection_id}

    @router.get("/tenants/{tenant}/export")
    async def export(tenant: str) -> StreamingResponse:
        memory, learning = _memory(container)
        episodes = await all_episodes(memory, tenant)
        scopes = await asyncio.to_thread(learning.responses.scopes, tenant)

        async def lines() -> AsyncIterator[bytes]:
            for item in sorted(episodes, key=lambda e: (e.created_at, e.id)):
                yield export_line(item, scopes).encode()

        filename = f"{tenant}-episodes.jsonl".replace('"', "")
        return StreamingResponse(
            lines(),
            media_type="application/x-ndjson",
            headers={"content-disposition": f'attachment; filename="{filename}"'},
        )

    @router.delete("/tenants/{tenant}")
    async def delete_tenant(tenant: str) -> dict[str, Any]:
        memory, learning = _memory(container)
        return {
            "tenant": tenant,
            "episodes": await asyncio.to_thread(memory.delete_tenant, tenant),
            "reflections": await asyncio.to_thread(learning.reflections.delete_tenant, tenant),
            "responses": await asyncio.to_thread(learning.responses.delete_tenant, tenant),
        }

    return router
