"""What every memory backend offers the gateway. Backends: local (disk + FAISS), redis."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from memory_store.episode import Episode, Neighbour


class MemoryStore(Protocol):
    def search(self, tenant: str, scope: str, vector: np.ndarray, k: int) -> list[Neighbour]:
        """Nearest usable episodes of one tenant and scope, best first. Must be fast (in-memory)."""
        ...

    def add(self, episode: Episode, vector: np.ndarray) -> Episode:
        """Store an episode; writing the same content twice keeps one episode (returned)."""
        ...

    def get(self, tenant: str, episode_id: str) -> Episode | None: ...

    def record_hit(self, tenant: str, episode_id: str) -> None: ...

    def update(self, episode: Episode) -> None:
        """Persist changed fields (rating, verifier) of an existing episode."""
        ...

    def delete(self, tenant: str, episode_id: str) -> bool: ...

    def list_episodes(self, tenant: str, limit: int = 100, offset: int = 0) -> list[Episode]: ...

    def delete_tenant(self, tenant: str) -> int: ...

    def count(self, tenant: str | None = None) -> int: ...

    def tenants(self) -> list[str]: ...

    def health(self) -> dict[str, object]: ...

    def close(self) -> None: ...
