"""The response log: which tenant, question and episode each served completion id belongs to.

Feedback arrives later, naming only a completion id; this log turns it back into a tenant
(for scoping), the episode to rate (the new episode, or for a reuse the source episode) and
the question (for corrections). Bounded: the oldest entries are pruned past `max_entries`.
The log also notes, per scope, the model and system messages (episodes keep only a digest),
so that exports can rebuild complete chat examples.

Every public method has an async twin (`a` + name) for code on the event loop: it runs the
SQLite call (and the prune every `_PRUNE_EVERY` writes) through memory_store.blocking, the
executor boundary every store shares.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from memory_store.blocking import run_blocking
from memory_store.sqlite_db import open_sqlite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    response_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    body TEXT NOT NULL,
    episode_id TEXT,
    rating TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_age ON responses (created_at);
CREATE INDEX IF NOT EXISTS responses_tenant ON responses (tenant);
CREATE TABLE IF NOT EXISTS scopes (
    tenant TEXT NOT NULL,
    scope TEXT NOT NULL,
    model TEXT,
    system TEXT NOT NULL,
    PRIMARY KEY (tenant, scope)
);
"""

_PRUNE_EVERY = 256


class ResponseEntry(BaseModel):
    response_id: str
    tenant: str
    tier: str
    mode: str | None = None
    model: str | None = None
    scope: str
    context_fingerprint: str
    context: list[str] = Field(default_factory=list)
    question: str
    episode_id: str | None = Field(None, description="the response's episode; for a reuse, its source episode")
    rating: str | None = None
    created_at: float = Field(default_factory=time.time)


class ScopeNote(BaseModel):
    tenant: str
    scope: str
    model: str | None = None
    system: list[dict[str, Any]] = Field(default_factory=list)


class ResponseLog:
    def __init__(self, path: Path, max_entries: int = 100_000) -> None:
        self.path = path
        self.max_entries = max_entries
        self._db = open_sqlite(path, _SCHEMA)
        self._lock = threading.RLock()
        self._writes = 0
        self._known_scopes: set[tuple[str, str]] = set()

    def record(self, entry: ResponseEntry) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses (response_id, tenant, body, episode_id, rating, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    entry.response_id,
                    entry.tenant,
                    entry.model_dump_json(exclude={"episode_id", "rating"}),
                    entry.episode_id,
                    entry.rating,
                    entry.created_at,
                ),
            )
            self._writes += 1
            if self._writes % _PRUNE_EVERY == 0:
                self.prune()

    def prune(self) -> int:
        with self._lock:
            cursor = self._db.execute(
                "DELETE FROM responses WHERE created_at < ("
                " SELECT created_at FROM responses ORDER BY created_at DESC LIMIT 1 OFFSET ?)",
                (self.max_entries - 1,),
            )
            return cursor.rowcount

    def get(self, tenant: str, response_id: str) -> ResponseEntry | None:
        """The entry when it exists and belongs to the tenant (others' ids look unknown)."""
        with self._lock:
            row = self._db.execute(
                "SELECT body, episode_id, rating FROM responses WHERE response_id = ? AND tenant = ?",
                (response_id, tenant),
            ).fetchone()
        return _entry(row) if row else None

    def attach_episode(self, response_id: str, episode_id: str) -> ResponseEntry | None:
        """Note the episode written for a response; returns the entry with any rating given meanwhile."""
        with self._lock:
            self._db.execute("UPDATE responses SET episode_id = ? WHERE response_id = ?", (episode_id, response_id))
            row = self._db.execute(
                "SELECT body, episode_id, rating FROM responses WHERE response_id = ?", (response_id,)
            ).fetchone()
        return _entry(row) if row else None

    def set_rating(self, tenant: str, response_id: str, rating: str) -> ResponseEntry | None:
        """Store a rating; returns the entry with the episode id known at this moment (None: not written yet).

        Together with `attach_episode` (both under one lock) exactly one side sees both the
        rating and the episode, so a rating that arrives before its episode is not lost.
        """
        with self._lock:
            self._db.execute(
                "UPDATE responses SET rating = ? WHERE response_id = ? AND tenant = ?", (rating, response_id, tenant)
            )
            return self.get(tenant, response_id)

    def delete_tenant(self, tenant: str) -> int:
        with self._lock:
            count = self._db.execute("DELETE FROM responses WHERE tenant = ?", (tenant,)).rowcount
            self._db.execute("DELETE FROM scopes WHERE tenant = ?", (tenant,))
            self._known_scopes = {key for key in self._known_scopes if key[0] != tenant}
            return count

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    # -- scopes ------------------------------------------------------------------------------

    def note_scope(self, tenant: str, scope: str, model: str | None, system: list[dict[str, Any]]) -> None:
        """Remember what a scope digest stands for; a no-op after the first time."""
        if (tenant, scope) in self._known_scopes:
            return
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO scopes (tenant, scope, model, system) VALUES (?, ?, ?, ?)",
                (tenant, scope, model, json.dumps(system)),
            )
            self._known_scopes.add((tenant, scope))

    def scopes(self, tenant: str) -> dict[str, ScopeNote]:
        with self._lock:
            rows = self._db.execute("SELECT scope, model, system FROM scopes WHERE tenant = ?", (tenant,)).fetchall()
        return {
            scope: ScopeNote(tenant=tenant, scope=scope, model=model, system=json.loads(system))
            for scope, model, system in rows
        }

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- async twins: the same calls, run off the event loop (memory_store.blocking) ---------

    async def arecord(self, entry: ResponseEntry) -> None:
        await run_blocking(self.record, entry)

    async def aprune(self) -> int:
        return await run_blocking(self.prune)

    async def aget(self, tenant: str, response_id: str) -> ResponseEntry | None:
        return await run_blocking(self.get, tenant, response_id)

    async def aattach_episode(self, response_id: str, episode_id: str) -> ResponseEntry | None:
        return await run_blocking(self.attach_episode, response_id, episode_id)

    async def aset_rating(self, tenant: str, response_id: str, rating: str) -> ResponseEntry | None:
        return await run_blocking(self.set_rating, tenant, response_id, rating)

    async def adelete_tenant(self, tenant: str) -> int:
        return await run_blocking(self.delete_tenant, tenant)

    async def acount(self) -> int:
        return await run_blocking(self.count)

    async def anote_scope(self, tenant: str, scope: str, model: str | None, system: list[dict[str, Any]]) -> None:
        """Skips the thread hop when the scope is known (every request asks; the first one writes)."""
        if (tenant, scope) in self._known_scopes:
            return
        await run_blocking(self.note_scope, tenant, scope, model, system)

    async def ascopes(self, tenant: str) -> dict[str, ScopeNote]:
        return await run_blocking(self.scopes, tenant)


def _entry(row: tuple[str, str | None, str | None]) -> ResponseEntry:
    body, episode_id, rating = row
    entry = ResponseEntry.model_validate_json(body)
    entry.episode_id = episode_id
    entry.rating = rating
    return entry
