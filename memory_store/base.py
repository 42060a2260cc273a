"""What every memory backend offers the gateway. Backends: local (disk + FAISS), redis.

Each method comes twice: the sync one (for background threads, the CLI and tests) and its
async twin (`a` + name) for code on the event loop. The twins are written once, in
`AsyncMemoryMethods`, and all run through `memory_store.blocking.run_blocking`: a caller on
the loop never chooses a thread itself, and never blocks the loop on SQLite or Redis.

Episodes handed out (by `get`, `search`, `list_episodes`, `add`) are the caller's own: changing
one changes nothing stored until it is passed to `update`.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from memory_store.blocking import run_blocking
from memory_store.episode import Episode, Neighbour


class SyncMemoryStore(Protocol):
    """The blocking half of the protocol: what a backend implements itself."""

    def search(self, tenant: str, scope: str, vector: np.ndarray, k: int) -> list[Neighbour]:
        """Nearest usable episodes of one tenant and scope, best first. Must be fast (in-memory)."""
        ...

    def add(self, episode: Episode, vector: np.ndarray) -> Episode:
        """Store an episode; writing the same content twice keeps one episode (returned)."""
        ...

    def get(self, tenant: str, episode_id: str) -> Episode | None: ...

    def record_hit(self, tenant: str, episode_id: str) -> None: ...

    def update(self, episode: Episode) -> None:
        """Persist changed fields (rating, verifier) of an existing episode; hit counts stay the store's."""
        ...

    def delete(self, tenant: str, episode_id: str) -> bool: ...

    def list_episodes(self, tenant: str, limit: int = 100, offset: int = 0) -> list[Episode]: ...

    def delete_tenant(self, tenant: str) -> int: ...

    def count(self, tenant: str | None = None) -> int: ...

    def tenants(self) -> list[str]: ...

    def health(self) -> dict[str, object]: ...

    def close(self) -> None: ...


class MemoryStore(SyncMemoryStore, Protocol):
    """A backend as the gateway sees it: the sync methods and their async twins."""

    async def asearch(self, tenant: str, scope: str, vector: np.ndarray, k: int) -> list[Neighbour]: ...

    async def aadd(self, episode: Episode, vector: np.ndarray) -> Episode: ...

    async def aget(self, tenant: str, episode_id: str) -> Episode | None: ...

    async def arecord_hit(self, tenant: str, episode_id: str) -> None: ...

    async def aupdate(self, episode: Episode) -> None: ...

    async def adelete(self, tenant: str, episode_id: str) -> bool: ...

    async def alist_episodes(self, tenant: str, limit: int = 100, offset: int = 0) -> list[Episode]: ...

    async def adelete_tenant(self, tenant: str) -> int: ...

    async def acount(self, tenant: str | None = None) -> int: ...

    async def atenants(self) -> list[str]: ...

    async def ahealth(self) -> dict[str, object]: ...


class AsyncMemoryMethods:
    """The async twins, written once for every backend that implements `SyncMemoryStore`.

    Each twin runs its sync method off the event loop through `run_blocking`, so a backend
    only has to be correct when called from several threads at once.
    """

    async def asearch(self: SyncMemoryStore, tenant: str, scope: str, vector: np.ndarray, k: int) -> list[Neighbour]:
        return await run_blocking(self.search, tenant, scope, vector, k)

    async def aadd(self: SyncMemoryStore, episode: Episode, vector: np.ndarray) -> Episode:
        return await run_blocking(self.add, episode, vector)

    async def aget(self: SyncMemoryStore, tenant: str, episode_id: str) -> Episode | None:
        return await run_blocking(self.get, tenant, episode_id)

    async def arecord_hit(self: SyncMemoryStore, tenant: str, episode_id: str) -> None:
        await run_blocking(self.record_hit, tenant, episode_id)

    async def aupdate(self: SyncMemoryStore, episode: Episode) -> None:
        await run_blocking(self.update, episode)

    async def adelete(self: SyncMemoryStore, tenant: str, episode_id: str) -> bool:
        return await run_blocking(self.delete, tenant, episode_id)

    async def alist_episodes(self: SyncMemoryStore, tenant: str, limit: int = 100, offset: int = 0) -> list[Episode]:
        return await run_blocking(self.list_episodes, tenant, limit, offset)

    async def adelete_tenant(self: SyncMemoryStore, tenant: str) -> int:
        return await run_blocking(self.delete_tenant, tenant)

    async def acount(self: SyncMemoryStore, tenant: str | None = None) -> int:
        return await run_blocking(self.count, tenant)

    async def atenants(self: SyncMemoryStore) -> list[str]:
        return await run_blocking(self.tenants)

    async def ahealth(self: SyncMemoryStore) -> dict[str, object]:
        return await run_blocking(self.health)
