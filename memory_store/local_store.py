"""Embedded memory: episodes in SQLite on local disk, searched through in-process FAISS indexes."""

from __future__ import annotations

import heapq
import threading
import time
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry

from memory_store.base import AsyncMemoryMethods
from memory_store.episode import Episode, Neighbour
from memory_store.limits import LimitCounters, MemoryLimits, expired, usefulness
from memory_store.sqlite_db import open_sqlite
from memory_store.vector_index import ScopeIndex

_SCHEMA = """
CREATE TABLE IF NOT EXISTS episodes (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    scope TEXT NOT NULL,
    content_key TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    vector BLOB NOT NULL,
    hits INTEGER NOT NULL DEFAULT 0,
    last_used_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS episodes_tenant ON episodes (tenant, last_used_at);
"""


class LocalMemory(AsyncMemoryMethods):
    """Durable single-process memory. A restart rebuilds the FAISS indexes from SQLite.

    `limits` bounds it: per-tenant capacity (least useful evicted on write) and a TTL
    (expired episodes are never returned and are purged at most every `_expiry_interval_s`).

    The episodes held in memory are private: everything handed out is a copy (as RedisMemory
    hands out freshly parsed episodes), so a caller, on whatever thread, changes stored state
    only through `update`, and never while another thread serialises or searches it.
    """

    def __init__(self, path: Path, dim: int, limits: MemoryLimits | None = None) -> None:
        self.path = path
        self.dim = dim
        self._db = open_sqlite(path, _SCHEMA)
        self._lock = threading.RLock()
        self._episodes: dict[str, Episode] = {}
        self._indexes: dict[tuple[str, str], ScopeIndex] = {}
        self._by_tenant: dict[str, set[str]] = {}
        self.limits = limits or MemoryLimits()
        self.removals = LimitCounters()
        self._last_expiry = 0.0
        self._load()
        self.expire()

    def _load(self) -> None:
        rows = self._db.execute("SELECT body, vector, hits, last_used_at FROM episodes").fetchall()
        grouped: dict[tuple[str, str], tuple[list[str], list[np.ndarray]]] = {}
        for body, blob, hits, last_used_at in rows:
            episode = Episode.model_validate_json(body)
            episode.hits = hits
            episode.last_used_at = last_used_at
            self._episodes[episode.id] = episode
            self._by_tenant.setdefault(episode.tenant, set()).add(episode.id)
            ids, vectors = grouped.setdefault((episode.tenant, episode.scope), ([], []))
            ids.append(episode.id)
            vectors.append(np.frombuffer(blob, dtype=np.float32))
        for key, (ids, vectors) in grouped.items():
            self._index_for(key).add_many(ids, np.vstack(vectors))

    def _index_for(self, key: tuple[str, str]) -> ScopeIndex:
        index = self._indexes.get(key)
        if index is None:
            index = self._indexes[key] = ScopeIndex(self.dim)
        return index

    def search(self, tenant: str, scope: str, vector: np.ndarray, k: int) -> list[Neighbour]:
        index = self._indexes.get((tenant, scope))
        if index is None:
            return []
        found = []
        now = time.time()
        # Over-fetch so that episodes rated bad can be skipped without starving k.
        for episode_id, score in index.search(vector, k + 8):
            episode = self._episodes.get(episode_id)
            if episode is not None and episode.usable and not expired(episode.created_at, now, self.limits):
                found.append(Neighbour(episode=_copy(episode), similarity=score))
            if len(found) == k:
                break
        return found

    def add(self, episode: Episode, vector: np.ndarray) -> Episode:
        """Stores a copy: the caller keeps its episode (returned when new), as with RedisMemory."""
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        with self._lock:
            row = self._db.execute("SELECT id FROM episodes WHERE content_key = ?", (episode.content_key,)).fetchone()
            if row is not None:
                return _copy(self._episodes[row[0]])
            self._db.execute(
                "INSERT INTO episodes (id, tenant, scope, content_key, body, vector, hits, last_used_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    episode.id,
                    episode.tenant,
                    episode.scope,
                    episode.content_key,
                    episode.model_dump_json(),
                    vector.tobytes(),
                    episode.hits,
                    episode.last_used_at,
                ),
            )
            self._episodes[episode.id] = _copy(episode)
            self._by_tenant.setdefault(episode.tenant, set()).add(episode.id)
            self._index_for((episode.tenant, episode.scope)).add(episode.id, vector)
            self._enforce_capacity(episode.tenant, keep=episode.id)
        self._maybe_expire()
        return episode

    def _enforce_capacity(self, tenant: str, keep: str) -> None:
        capacity = self.limits.capacity_per_tenant
        mine = self._by_tenant.get(tenant, set())
        if capacity is None or len(mine) <= capacity:
            return
        weight = self.limits.hit_weight_s
        candidates = (self._episodes[i] for i in mine if i != keep)
        doomed = heapq.nsmallest(
            len(mine) - capacity, candidates, key=lambda e: usefulness(e.last_used_at, e.hits, weight)
        )
        for episode in doomed:
            self._remove_locked(episode)
        self.removals.count(evicted=len(doomed))

    def _maybe_expire(self) -> None:
        ttl = self.limits.ttl_s
        if ttl is not None and time.time() - self._last_expiry >= min(60.0, ttl / 4):
            self.expire()

    def expire(self) -> int:
        """Delete every episode older than the TTL; returns how many."""
        self._last_expiry = time.time()
        if self.limits.ttl_s is None:
            return 0
        with self._lock:
            doomed = [e for e in self._episodes.values() if expired(e.created_at, self._last_expiry, self.limits)]
            for episode in doomed:
                self._remove_locked(episode)
        self.removals.count(expired=len(doomed))
        return len(doomed)

    def _remove_locked(self, episode: Episode) -> None:
        """Forget the episode; a scope or tenant left empty is forgotten too (each scope's index
        costs ~1.7 KB even empty, and a client varying `seed` makes a scope per request)."""
        self._db.execute("DELETE FROM episodes WHERE id = ?", (episode.id,))
        self._episodes.pop(episode.id, None)
        mine = self._by_tenant.get(episode.tenant)
        if mine is not None:
            mine.discard(episode.id)
            if not mine:
                del self._by_tenant[episode.tenant]
        key = (episode.tenant, episode.scope)
        index = self._indexes.get(key)
        if index is not None:
            index.remove(episode.id)
            if not len(index):
                del self._indexes[key]

    def _held(self, tenant: str, episode_id: str) -> Episode | None:
        """The stored episode itself (never handed out): for changes made under the lock."""
        episode = self._episodes.get(episode_id)
        return episode if episode is not None and episode.tenant == tenant else None

    def get(self, tenant: str, episode_id: str) -> Episode | None:
        episode = self._held(tenant, episode_id)
        return None if episode is None else _copy(episode)

    def record_hit(self, tenant: str, episode_id: str) -> None:
        now = time.time()
        with self._lock:
            episode = self._held(tenant, episode_id)
            if episode is None:
                return
            episode.hits += 1
            episode.last_used_at = now
            self._db.execute("UPDATE episodes SET hits = hits + 1, last_used_at = ? WHERE id = ?", (now, episode_id))

    def update(self, episode: Episode) -> None:
        """Store a copy of the changed episode; hits and last use stay the store's (as in Redis).

        The caller's copy may be older than hits recorded since it was read: its counters would
        undo them (SQLite keeps the counters in their own columns, so a restart would not).
        """
        with self._lock:
            held = self._held(episode.tenant, episode.id)
            if held is None:
                return
            self._episodes[episode.id] = episode.model_copy(
                deep=True, update={"hits": held.hits, "last_used_at": held.last_used_at}
            )
            self._db.execute("UPDATE episodes SET body = ? WHERE id = ?", (episode.model_dump_json(), episode.id))

    def delete(self, tenant: str, episode_id: str) -> bool:
        with self._lock:
            episode = self._held(tenant, episode_id)
            if episode is None:
                return False
            self._remove_locked(episode)
            return True

    def list_episodes(self, tenant: str, limit: int = 100, offset: int = 0) -> list[Episode]:
        held = (self._episodes.get(i) for i in list(self._by_tenant.get(tenant, ())))  # lock-free: may race deletes
        mine = sorted(
            (episode for episode in held if episode is not None),
            key=lambda e: e.created_at,
            reverse=True,
        )
        return [_copy(episode) for episode in mine[offset : offset + limit]]

    def delete_tenant(self, tenant: str) -> int:
        with self._lock:
            doomed = self._by_tenant.pop(tenant, set())
            self._db.execute("DELETE FROM episodes WHERE tenant = ?", (tenant,))
            for episode_id in doomed:
                self._episodes.pop(episode_id, None)
            for key in [key for key in self._indexes if key[0] == tenant]:
                del self._indexes[key]
            return len(doomed)

    def count(self, tenant: str | None = None) -> int:
        self._maybe_expire()
        if tenant is None:
            return len(self._episodes)
        return len(self._by_tenant.get(tenant, ()))

    def tenants(self) -> list[str]:
        return sorted(t for t, ids in list(self._by_tenant.items()) if ids)

    @property
    def scope_count(self) -> int:
        """Scopes with an index: those holding at least one episode."""
        return len(self._indexes)

    def register_metrics(self, registry: CollectorRegistry) -> None:
        self.removals.register(registry)

    def health(self) -> dict[str, object]:
        return {"backend": "local", "path": str(self.path), "episodes": len(self._episodes)}

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _copy(episode: Episode) -> Episode:
    """A detached copy: what the store hands out, and what it keeps of what it is given."""
    return episode.model_copy(deep=True)
