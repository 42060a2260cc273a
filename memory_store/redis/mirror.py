"""A replica's in-process mirror of the Redis memory: compact entries plus FAISS indexes.

Entries keep the episode as its JSON bytes (a parsed Episode costs ~3x the RAM) and parse
it only when a search returns it. Everything here is local: no call in this module
touches the network.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from memory_store.episode import Episode, Neighbour
from memory_store.limits import MemoryLimits, expired
from memory_store.vector_index import ScopeIndex


@dataclass(slots=True)
class MirrorEntry:
    tenant: str
    scope: str
    content_key: str
    body: bytes
    created_at: float
    hits: int
    last_used_at: float
    usable: bool
    # The mirror's write count when this replica last changed the body itself (`update_body`): a
    # body the feed fetched from Redis before that write is older and must not replace it.
    body_written: int = 0

    @classmethod
    def of(cls, episode: Episode) -> MirrorEntry:
        return cls(
            tenant=episode.tenant,
            scope=episode.scope,
            content_key=episode.content_key,
            body=episode.model_dump_json().encode(),
            created_at=episode.created_at,
            hits=episode.hits,
            last_used_at=episode.last_used_at,
            usable=episode.usable,
        )

    def episode(self) -> Episode:
        episode = Episode.model_validate_json(self.body)
        episode.hits = self.hits
        episode.last_used_at = self.last_used_at
        return episode


class Mirror:
    def __init__(self, dim: int, limits: MemoryLimits | None = None) -> None:
        self.dim = dim
        self.limits = limits or MemoryLimits()
        self._entries: dict[str, MirrorEntry] = {}
        self._by_content: dict[str, str] = {}
        self._counts: dict[str, int] = {}  # per tenant (no per-tenant id sets: ~50 B an episode)
        self._indexes: dict[tuple[str, str], ScopeIndex] = {}
        self._lock = threading.RLock()
        self._body_writes = 0

    # -- writes ----------------------------------------------------------------------------

    def body_writes(self) -> int:
        """Taken before reading episodes from Redis: `put(..., read_after=...)` then keeps a newer local body."""
        with self._lock:
            return self._body_writes

    def put(self, episode_id: str, entry: MirrorEntry, vector: np.ndarray, read_after: int | None = None) -> bool:
        """Insert, or refresh the fields of an entry already held; True when it was new. `read_after`:
        the `body_writes()` before the entry was read from Redis; a body this replica wrote since wins."""
        with self._lock:
            held = self._entries.get(episode_id)
            if held is not None:
                if read_after is None or held.body_written <= read_after:
                    held.body, held.usable = entry.body, entry.usable
                held.hits = max(held.hits, entry.hits)
                held.last_used_at = max(held.last_used_at, entry.last_used_at)
                return False
            self._entries[episode_id] = entry
            self._by_content[entry.content_key] = episode_id
            self._counts[entry.tenant] = self._counts.get(entry.tenant, 0) + 1
            self._index_for(entry.tenant, entry.scope).add(episode_id, vector)
            return True

    def load(self, ids: list[str], entries: list[MirrorEntry], vectors: np.ndarray) -> None:
        """Bulk insert (a rebuild): one index build per scope."""
        groups: dict[tuple[str, str], list[int]] = {}
        with self._lock:
            for row, (episode_id, entry) in enumerate(zip(ids, entries, strict=True)):
                if episode_id in self._entries:
                    continue
                self._entries[episode_id] = entry
                self._by_content[entry.content_key] = episode_id
                self._counts[entry.tenant] = self._counts.get(entry.tenant, 0) + 1
                groups.setdefault((entry.tenant, entry.scope), []).append(row)
            for (tenant, scope), rows in groups.items():
                whole = len(rows) == len(ids)  # one scope: no gathered copy of the matrix
                matrix = vectors if whole else vectors[rows]
                self._index_for(tenant, scope).add_many(ids if whole else [ids[r] for r in rows], matrix)

    def update_body(self, episode: Episode) -> bool:
        """Take the episode's new body (hits and last use stay the entry's); False if not held here.

        An episode naming another tenant than the entry changes nothing: Redis ignores it too
        (its key is per tenant), and the mirror must not show what Redis does not hold.
        """
        with self._lock:
            held = self._entries.get(episode.id)
            if held is None or held.tenant != episode.tenant:
                return False
            held.body = episode.model_dump_json().encode()
            held.usable = episode.usable
            self._body_writes += 1
            held.body_written = self._body_writes
            return True

    def note_hit(self, episode_id: str, now: float) -> None:
        """Under the lock: `put` (the feed thread) does read-max-write on the same counters."""
        with self._lock:
            held = self._entries.get(episode_id)
            if held is not None:
                held.hits += 1
                held.last_used_at = now

    def remove(self, episode_id: str) -> MirrorEntry | None:
        with self._lock:
            entry = self._entries.pop(episode_id, None)
            if entry is None:
                return None
            if self._by_content.get(entry.content_key) == episode_id:
                del self._by_content[entry.content_key]
            left = self._counts.get(entry.tenant, 1) - 1
            if left > 0:
                self._counts[entry.tenant] = left
            else:
                self._counts.pop(entry.tenant, None)
            key = (entry.tenant, entry.scope)
            index = self._indexes.get(key)
            if index is not None:
                index.remove(episode_id)
                if not len(index):  # ~1.7 KB even empty, and a client varying `seed` makes a scope per request
                    del self._indexes[key]
            return entry

    def drop_tenant(self, tenant: str) -> int:
        with self._lock:
            ids = [episode_id for episode_id, entry in self._entries.items() if entry.tenant == tenant]
            for episode_id in ids:
                entry = self._entries.pop(episode_id)
                if self._by_content.get(entry.content_key) == episode_id:
                    del self._by_content[entry.content_key]
            self._counts.pop(tenant, None)
            for key in [key for key in self._indexes if key[0] == tenant]:
                del self._indexes[key]
            return len(ids)

    def _index_for(self, tenant: str, scope: str) -> ScopeIndex:
        index = self._indexes.get((tenant, scope))
        if index is None:
            index = self._indexes[(tenant, scope)] = ScopeIndex(self.dim)
        return index

    # -- reads -----------------------------------------------------------------------------

    def search(self, tenant: str, scope: str, vector: np.ndarray, k: int) -> list[Neighbour]:
        index = self._indexes.get((tenant, scope))
        if index is None:
            return []
        now = time.time()
        found = []
        # Over-fetch so that bad or expired episodes can be skipped without starving k.
        for episode_id, score in index.search(vector, k + 8):
            entry = self._entries.get(episode_id)
            if entry is None or not entry.usable or expired(entry.created_at, now, self.limits):
                continue
            found.append(Neighbour(episode=entry.episode(), similarity=score))
            if len(found) == k:
                break
        return found

    def get(self, episode_id: str) -> MirrorEntry | None:
        return self._entries.get(episode_id)

    def id_for_content(self, content_key: str) -> str | None:
        return self._by_content.get(content_key)

    def ids_of(self, tenant: str) -> list[str]:
        """A tenant's episode ids (a scan: for listings while Redis is away, not for requests)."""
        with self._lock:
            return [episode_id for episode_id, entry in self._entries.items() if entry.tenant == tenant]

    def count(self, tenant: str | None = None) -> int:
        if tenant is None:
            return len(self._entries)
        return self._counts.get(tenant, 0)

    def tenants(self) -> list[str]:
        return sorted(t for t, n in list(self._counts.items()) if n > 0)

    @property
    def scope_count(self) -> int:
        """Scopes with an index: those holding at least one entry."""
        return len(self._indexes)
