"""Reflections: short lessons written by the model, one per cluster of similar questions.

Kept in SQLite next to local memory (also when episodes live in Redis), searched in
process with one FAISS index per tenant, scope and kind of lesson. An index goes with its
last reflection: each costs ~1.7 KB even empty, and a client varying `seed` makes a scope per
request. Like the memory stores, every method has an async twin (`a` + name) that runs it
off the event loop, and the reflections handed out are copies.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from memory_store.blocking import run_blocking
from memory_store.sqlite_db import open_sqlite
from memory_store.vector_index import ScopeIndex

ReflectionKind = Literal["reflect", "multi_case_reflect", "reflect_update"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS reflections (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    scope TEXT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    vector BLOB NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS reflections_tenant ON reflections (tenant, updated_at);
"""

MAX_SOURCES = 64


def new_reflection_id() -> str:
    return "rf_" + uuid.uuid4().hex[:20]


class Reflection(BaseModel):
    """A cluster of similar questions within one tenant and scope, and its lesson (empty: none yet)."""

    id: str = Field(default_factory=new_reflection_id)
    tenant: str
    scope: str
    kind: ReflectionKind
    text: str
    vector: list[float] = Field(default_factory=list, description="the cluster centroid (unit length)")
    members: int = Field(1, description="episodes folded into the cluster")
    tokens: int = Field(0, description="completion tokens of the current text")
    cost_tokens: int = Field(0, description="all backend tokens spent writing and rewriting it")
    revisions: int = Field(1, description="times the lesson was written")
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)
    source_episode_ids: list[str] = Field(default_factory=list)

    def absorb(self, vector: np.ndarray, episode_id: str) -> None:
        """Move the centroid towards a new member and note it as a source."""
        old = np.asarray(self.vector, dtype=np.float32)
        new = _unit(np.asarray(vector, dtype=np.float32).reshape(-1))
        centroid = _unit(old * self.members + new) if old.size else new
        self.vector = centroid.tolist()
        self.members += 1
        if episode_id not in self.source_episode_ids:
            self.source_episode_ids = (self.source_episode_ids + [episode_id])[-MAX_SOURCES:]

    def public(self) -> dict[str, object]:
        """The reflection without its vector, for APIs."""
        return self.model_dump(exclude={"vector"})


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


class ReflectionStore:
    """Durable lessons; a restart rebuilds the indexes from SQLite.

    The reflections held are private: `put` keeps a copy and every read returns copies, so a
    caller (the writer absorbs episodes into a cluster) changes stored state only through
    `put`, never while another thread serialises or lists it.
    """

    def __init__(self, path: Path, dim: int, capacity_per_tenant: int | None = None) -> None:
        self.path = path
        self.dim = dim
        self.capacity_per_tenant = capacity_per_tenant
        self._db = open_sqlite(path, _SCHEMA)
        self._lock = threading.RLock()
        self._items: dict[str, Reflection] = {}
        self._indexes: dict[tuple[str, str, str], ScopeIndex] = {}
        for body, blob in self._db.execute("SELECT body, vector FROM reflections").fetchall():
            reflection = Reflection.model_validate_json(body)
            reflection.vector = np.frombuffer(blob, dtype=np.float32).tolist()
            self._items[reflection.id] = reflection
            self._index(reflection).add(reflection.id, np.frombuffer(blob, dtype=np.float32))

    def _index(self, reflection: Reflection) -> ScopeIndex:
        key = _key(reflection)
        index = self._indexes.get(key)
        if index is None:
            index = self._indexes[key] = ScopeIndex(self.dim)
        return index

    def _unindex(self, reflection: Reflection) -> None:
        """Take the reflection out of its index, and the index with it when it was the last."""
        key = _key(reflection)
        index = self._indexes.get(key)
        if index is None:
            return
        index.remove(reflection.id)
        if not len(index):
            del self._indexes[key]

    @property
    def index_count(self) -> int:
        """Tenant, scope and kind triples with an index: those holding at least one reflection."""
        return len(self._indexes)

    def nearest(
        self, tenant: str, scope: str, kind: str, vector: np.ndarray, k: int = 1
    ) -> list[tuple[Reflection, float]]:
        """The k lessons of this kind whose centroids are closest to the vector, best first."""
        index = self._indexes.get((tenant, scope, kind))
        if index is None:
            return []
        found = []
        for reflection_id, score in index.search(np.asarray(vector, dtype=np.float32), k):
            reflection = self._items.get(reflection_id)
            if reflection is not None:
                found.append((_copy(reflection), score))
        return found

    def put(self, reflection: Reflection) -> Reflection:
        """Insert or replace (text, centroid and sources may all have changed); returns the argument."""
        vector = np.asarray(reflection.vector, dtype=np.float32).reshape(-1)
        if vector.shape != (self.dim,):
            raise ValueError(f"reflection vector must have {self.dim} dimensions")
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO reflections (id, tenant, scope, kind, body, vector, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    reflection.id,
                    reflection.tenant,
                    reflection.scope,
                    reflection.kind,
                    reflection.model_dump_json(exclude={"vector"}),
                    vector.tobytes(),
                    reflection.updated_at,
                ),
            )
            held = self._items.get(reflection.id)
            if held is not None and _key(held) != _key(reflection):
                self._unindex(held)
            if held is None:
                self._make_room(reflection.tenant, keep=reflection.id)
            index = self._index(reflection)
            index.remove(reflection.id)
            index.add(reflection.id, vector)
            self._items[reflection.id] = _copy(reflection)
            return reflection

    def _make_room(self, tenant: str, keep: str) -> None:
        """Beyond the tenant's capacity, the clusters updated longest ago go: a client varying its
        scopes (a new `seed` each time) must not grow the lessons without bound."""
        if self.capacity_per_tenant is None:
            return
        mine = sorted(
            (r for r in self._items.values() if r.tenant == tenant and r.id != keep), key=lambda r: r.updated_at
        )
        for victim in mine[: max(0, len(mine) + 1 - self.capacity_per_tenant)]:
            self._db.execute("DELETE FROM reflections WHERE id = ?", (victim.id,))
            del self._items[victim.id]
            self._unindex(victim)

    def _held(self, tenant: str, reflection_id: str) -> Reflection | None:
        """The stored reflection itself (never handed out)."""
        reflection = self._items.get(reflection_id)
        return reflection if reflection is not None and reflection.tenant == tenant else None

    def get(self, tenant: str, reflection_id: str) -> Reflection | None:
        reflection = self._held(tenant, reflection_id)
        return None if reflection is None else _copy(reflection)

    def delete(self, tenant: str, reflection_id: str) -> bool:
        with self._lock:
            reflection = self._held(tenant, reflection_id)
            if reflection is None:
                return False
            self._db.execute("DELETE FROM reflections WHERE id = ?", (reflection_id,))
            del self._items[reflection_id]
            self._unindex(reflection)
            return True

    def list_reflections(
        self, tenant: str, limit: int = 100, offset: int = 0, kind: str | None = None, lessons_only: bool = True
    ) -> list[Reflection]:
        """Newest first; `lessons_only` leaves out clusters that have no lesson yet."""
        mine = sorted(
            (r for r in self._snapshot() if r.tenant == tenant and (kind is None or r.kind == kind)),
            key=lambda r: r.updated_at,
            reverse=True,
        )
        if lessons_only:
            mine = [r for r in mine if r.text]
        return [_copy(r) for r in mine[offset : offset + limit]]

    def delete_tenant(self, tenant: str) -> int:
        with self._lock:
            doomed = [r.id for r in self._snapshot() if r.tenant == tenant]
            self._db.execute("DELETE FROM reflections WHERE tenant = ?", (tenant,))
            for reflection_id in doomed:
                del self._items[reflection_id]
            for key in [key for key in self._indexes if key[0] == tenant]:
                del self._indexes[key]
            return len(doomed)

    def count(self, tenant: str | None = None, lessons_only: bool = True) -> int:
        return sum(
            1 for r in self._snapshot() if (tenant is None or r.tenant == tenant) and (r.text or not lessons_only)
        )

    def tenants(self) -> list[str]:
        return sorted({r.tenant for r in self._snapshot()})

    def _snapshot(self) -> list[Reflection]:
        """The held reflections as a list: scans run while other threads put and delete
        (list() copies the dict in one step; iterating it live could fail mid-way)."""
        return list(self._items.values())

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- async twins: the same calls, run off the event loop (memory_store.blocking) ---------

    async def anearest(
        self, tenant: str, scope: str, kind: str, vector: np.ndarray, k: int = 1
    ) -> list[tuple[Reflection, float]]:
        return await run_blocking(self.nearest, tenant, scope, kind, vector, k)

    async def aput(self, reflection: Reflection) -> Reflection:
        return await run_blocking(self.put, reflection)

    async def aget(self, tenant: str, reflection_id: str) -> Reflection | None:
        return await run_blocking(self.get, tenant, reflection_id)

    async def adelete(self, tenant: str, reflection_id: str) -> bool:
        return await run_blocking(self.delete, tenant, reflection_id)

    async def alist_reflections(
        self, tenant: str, limit: int = 100, offset: int = 0, kind: str | None = None, lessons_only: bool = True
    ) -> list[Reflection]:
        return await run_blocking(self.list_reflections, tenant, limit, offset, kind, lessons_only)

    async def adelete_tenant(self, tenant: str) -> int:
        return await run_blocking(self.delete_tenant, tenant)

    async def acount(self, tenant: str | None = None, lessons_only: bool = True) -> int:
        return await run_blocking(self.count, tenant, lessons_only)

    async def atenants(self) -> list[str]:
        return await run_blocking(self.tenants)


def _key(reflection: Reflection) -> tuple[str, str, str]:
    return reflection.tenant, reflection.scope, reflection.kind


def _copy(reflection: Reflection) -> Reflection:
    """A detached copy: its lists (centroid, sources) are new, the rest is immutable.

    Not model_copy(deep=True): deep-copying a 384-float centroid costs ~70 us, and `nearest`
    runs on every request of a learning mode.
    """
    lists = {name: list(value) for name, value in reflection.__dict__.items() if isinstance(value, list)}
    return reflection.model_copy(update=lists)
