"""What the admin routes work on: one tenant's episodes, lessons and logged responses."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from memory_store.base import MemoryStore
from memory_store.embedding.embedder import BatchingEmbedder
from memory_store.episode import Episode
from memory_store.reflections import ReflectionStore
from proxy.learning.costs import LearningCosts
from proxy.learning.response_log import ResponseLog, ScopeNote

_PAGE = 1000


@dataclass(frozen=True)
class AdminMemory:
    memory: MemoryStore
    reflections: ReflectionStore
    responses: ResponseLog
    embedder: BatchingEmbedder
    costs: LearningCosts

    async def all_episodes(self, tenant: str) -> list[Episode]:
        episodes: list[Episode] = []
        while True:
            page = await self.memory.alist_episodes(tenant, _PAGE, len(episodes))
            episodes += page
            if len(page) < _PAGE:
                return episodes

    async def search(self, tenant: str, text: str, limit: int) -> list[dict[str, Any]]:
        """Usable episodes of every scope of the tenant, nearest to the text first."""
        vector = await self.embedder.embed(text)
        scopes = {e.scope for e in await self.all_episodes(tenant)}
        found = []
        for scope in scopes:
            found += await self.memory.asearch(tenant, scope, vector, limit)
        found.sort(key=lambda n: n.similarity, reverse=True)
        return [n.episode.model_dump() | {"similarity": round(n.similarity, 4)} for n in found[:limit]]

    async def tenant_rows(self) -> list[dict[str, Any]]:
        names = sorted(set(await self.memory.atenants()) | set(await self.reflections.atenants()))
        return [
            {
                "tenant": name,
                "episodes": await self.memory.acount(name),
                "reflections": await self.reflections.acount(name),
                "reflection_tokens": self.costs.reflection_tokens.get(name, 0),
            }
            for name in names
        ]

    async def delete_tenant(self, tenant: str) -> dict[str, Any]:
        return {
            "tenant": tenant,
            "episodes": await self.memory.adelete_tenant(tenant),
            "reflections": await self.reflections.adelete_tenant(tenant),
            "responses": await self.responses.adelete_tenant(tenant),
        }


def export_line(episode: Episode, scopes: dict[str, ScopeNote]) -> str:
    """An episode with the model and system messages of its scope (when the proxy saw them)."""
    note = scopes.get(episode.scope)
    extra = {"model": note.model, "system": note.system} if note is not None else {"model": None, "system": None}
    return json.dumps(episode.model_dump() | extra, ensure_ascii=False) + "\n"
