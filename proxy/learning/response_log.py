"""The response log: which question and episode each completion id served to a tenant belongs to.

Feedback arrives later, naming only a completion id (its tenant comes from the API key); this
log turns the pair back into the episode to rate (the new episode, or for a reuse the source
episode) and the question (for corrections). Bounded: the oldest entries are pruned past
`max_entries`, and a question is kept up to `max_question_chars` (plus the digest of all of it).
The log also notes, per scope, the model and system messages (episodes keep only a digest),
so that exports can rebuild complete chat examples.

Every public method has an async twin (`a` + name) for code on the event loop: it runs the
SQLite call (and the prune every `_PRUNE_EVERY` writes) through memory_store.blocking, the
executor boundary every store shares.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from memory_store.blocking import run_blocking
from memory_store.episode import MAX_QUESTION_CHARS, cap_question
from memory_store.sqlite_db import open_sqlite

# Keyed by (tenant, response_id): a backend may repeat completion ids, and one tenant's row must
# never replace another's. `responses`, keyed by the id alone, is the table of older versions.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS tenant_responses (
    tenant TEXT NOT NULL,
    response_id TEXT NOT NULL,
    body TEXT NOT NULL,
    episode_id TEXT,
    rating TEXT,
    created_at REAL NOT NULL,
    PRIMARY KEY (tenant, response_id)
);
CREATE INDEX IF NOT EXISTS tenant_responses_age ON tenant_responses (created_at);
CREATE TABLE IF NOT EXISTS scopes (
    tenant TEXT NOT NULL,
    scope TEXT NOT NULL,
    model TEXT,
    system TEXT NOT NULL,
    PRIMARY KEY (tenant, scope)
);
"""
_COLUMNS = "tenant, response_id, body, episode_id, rating, created_at"

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
    question_digest: str | None = Field(
        None, description="sha256 of the full question when `question` holds only its beginning; else None"
    )
    episode_id: str | None = Field(None, description="the response's episode; for a reuse, its source episode")
    rating: str | None = None
    created_at: float = Field(default_factory=time.time)


class ScopeNote(BaseModel):
    tenant: str
    scope: str
    model: str | None = None
    system: list[dict[str, Any]] = Field(default_factory=list)


class ResponseLog:
    """`max_question_chars` caps the question kept per entry (the rest is known by its digest);
    `known_scopes` bounds the scopes remembered as already noted (a client varying `seed` makes
    a new scope per request)."""

    def __init__(
        self,
        path: Path,
        max_entries: int = 100_000,
        max_question_chars: int = MAX_QUESTION_CHARS,
        known_scopes: int = 2048,
    ) -> None:
        self.path = path
        self.max_entries = max_entries
        self.max_question_chars = max_question_chars
        self._db = open_sqlite(path, _SCHEMA)
        # Writes and lookups of recent ids touch few pages; SQLite's default 2 MB cache is RSS.
        self._db.execute("PRAGMA cache_size = -512")
        _migrate_unscoped(self._db)
        self._lock = threading.RLock()
        self._writes = 0
        self._known_scopes: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._known_scopes_max = known_scopes

    def record(self, entry: ResponseEntry) -> None:
        question, digest = cap_question(entry.question, self.max_question_chars)
        kept = entry.model_copy(update={"question": question, "question_digest": entry.question_digest or digest})
        with self._lock:
            self._db.execute(
                f"INSERT OR REPLACE INTO tenant_responses ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    entry.tenant,
                    entry.response_id,
                    kept.model_dump_json(exclude={"episode_id", "rating"}),
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
                "DELETE FROM tenant_responses WHERE created_at < ("
                " SELECT created_at FROM tenant_responses ORDER BY created_at DESC LIMIT 1 OFFSET ?)",
                (self.max_entries - 1,),
            )
            return cursor.rowcount

    def get(self, tenant: str, response_id: str) -> ResponseEntry | None:
        """The entry when it exists and belongs to the tenant (others' ids look unknown)."""
        with self._lock:
            row = self._db.execute(
                "SELECT body, episode_id, rating FROM tenant_responses WHERE tenant = ? AND response_id = ?",
                (tenant, response_id),
            ).fetchone()
        return _entry(row) if row else None

    def attach_episode(self, tenant: str, response_id: str, episode_id: str) -> ResponseEntry | None:
        """Note the episode written for a response; returns the entry with any rating given meanwhile."""
        with self._lock:
            self._db.execute(
                "UPDATE tenant_responses SET episode_id = ? WHERE tenant = ? AND response_id = ?",
                (episode_id, tenant, response_id),
            )
            return self.get(tenant, response_id)

    def set_rating(self, tenant: str, response_id: str, rating: str) -> ResponseEntry | None:
        """Store a rating; returns the entry with the episode id known at this moment (None: not written yet).

        Together with `attach_episode` (both under one lock) exactly one side sees both the
        rating and the episode, so a rating that arrives before its episode is not lost.
        """
        with self._lock:
            self._db.execute(
                "UPDATE tenant_responses SET rating = ? WHERE tenant = ? AND response_id = ?",
                (rating, tenant, response_id),
            )
            return self.get(tenant, response_id)

    def delete_tenant(self, tenant: str) -> int:
        with self._lock:
            count = self._db.execute("DELETE FROM tenant_responses WHERE tenant = ?", (tenant,)).rowcount
            self._db.execute("DELETE FROM scopes WHERE tenant = ?", (tenant,))
            for key in [key for key in list(self._known_scopes) if key[0] == tenant]:  # list(): one atomic copy
                self._known_scopes.pop(key, None)
            return count

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM tenant_responses").fetchone()[0])

    # -- scopes ------------------------------------------------------------------------------

    def note_scope(self, tenant: str, scope: str, model: str | None, system: list[dict[str, Any]]) -> None:
        """Remember what a scope digest stands for; a no-op after the first time."""
        if self._is_known(tenant, scope):
            return
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO scopes (tenant, scope, model, system) VALUES (?, ?, ?, ?)",
                (tenant, scope, model, json.dumps(system)),
            )
            self._known_scopes[(tenant, scope)] = None
            while len(self._known_scopes) > self._known_scopes_max:
                self._known_scopes.popitem(last=False)  # forgotten: its next request re-runs the no-op insert

    @property
    def known_scope_count(self) -> int:
        return len(self._known_scopes)

    def _is_known(self, tenant: str, scope: str) -> bool:
        """Read from the event loop without the lock: a lost race only costs one idempotent insert."""
        try:
            self._known_scopes.move_to_end((tenant, scope))
        except KeyError:
            return False
        return True

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

    async def aattach_episode(self, tenant: str, response_id: str, episode_id: str) -> ResponseEntry | None:
        return await run_blocking(self.attach_episode, tenant, response_id, episode_id)

    async def aset_rating(self, tenant: str, response_id: str, rating: str) -> ResponseEntry | None:
        return await run_blocking(self.set_rating, tenant, response_id, rating)

    async def adelete_tenant(self, tenant: str) -> int:
        return await run_blocking(self.delete_tenant, tenant)

    async def acount(self) -> int:
        return await run_blocking(self.count)

    async def anote_scope(self, tenant: str, scope: str, model: str | None, system: list[dict[str, Any]]) -> None:
        """Skips the thread hop when the scope is known (every request asks; the first one writes)."""
        if self._is_known(tenant, scope):
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


def _migrate_unscoped(db: sqlite3.Connection) -> None:
    """Move the rows of the id-keyed `responses` table of older versions into `tenant_responses`."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'responses'").fetchone() is None:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute(f"INSERT OR IGNORE INTO tenant_responses ({_COLUMNS}) SELECT {_COLUMNS} FROM responses")
        db.execute("DROP TABLE responses")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
