"""Mirror rebuilds from Redis and the change feed that keeps a mirror current afterwards.

A rebuild notes the feed's last entry id first, then scans every tenant's episodes; the
follower then applies feed entries after that id. Entries written during the scan are
applied twice at worst, which is harmless: applying is idempotent.
"""

from __future__ import annotations

import struct
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis

from memory_store.episode import Episode
from memory_store.limits import MemoryLimits
from memory_store.redis.keys import RedisKeys
from memory_store.redis.mirror import Mirror, MirrorEntry
from memory_store.redis.scripts import Scripts
from memory_store.redis.spool import Record, record_vector

_SCAN_COUNT = 1000
_HEADER = struct.Struct(">8I")
_FEED_BATCH = 1000

StreamEntry = tuple[bytes, dict[bytes, bytes]]


def parse_id(stream_id: str | bytes) -> tuple[int, int]:
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


Decoded = tuple[MirrorEntry, bytes | memoryview] | None


def decode(tenant: str, values: list[Any]) -> Decoded:
    """A mirror entry and the raw vector from the FETCH_FIELDS values; None when the episode is gone."""
    body, vec, hits, used, content_key, created, scope = values
    if not body or not vec:
        return None
    usable = usable_json(body)
    entry = MirrorEntry(
        tenant=tenant,
        scope=sys.intern(scope.decode()),  # thousands of episodes share a scope: one string
        content_key=content_key.decode(),
        body=body,
        created_at=float(created or 0),
        hits=int(hits or 0),
        last_used_at=float(used or 0),
        usable=usable,
    )
    return entry, vec


def unpack(tenant: str, packed: list[bytes]) -> list[tuple[str, Decoded]]:
    """Episodes from FETCH / SCAN_FETCH replies, in order."""
    found: list[tuple[str, Decoded]] = []
    header = _HEADER.size
    for item in packed:
        view = memoryview(item)
        position = header
        fields: list[Any] = []
        for length in _HEADER.unpack_from(item, 0):
            fields.append(view[position : position + length])
            position += length
        # The body is kept (a copy of its own); the vector stays a view, copied once into an index.
        episode_id, body, vec, hits, used, content_key, created, scope = fields
        values = [body.tobytes(), vec, hits.tobytes(), used.tobytes(), content_key.tobytes(), created.tobytes()]
        found.append((episode_id.tobytes().decode(), decode(tenant, [*values, scope.tobytes()])))
    return found


def fetch(scripts: Scripts, client: redis.Redis, keys: RedisKeys, tenant: str, ids: list[str]) -> list[Decoded]:
    """Episodes by id, in one round trip; None for those gone."""
    if not ids:
        return []
    packed = scripts.fetch(args=[keys.episode_prefix(tenant), *ids], client=client)
    return [decoded for _, decoded in unpack(tenant, packed)]


def usable_json(body: bytes) -> bool:
    """Episode.usable read off the JSON without parsing it: in JSON text, `":"` (quote, colon,
    quote) only appears between a key and a value, never inside a string, so these tests are exact."""
    if b'"rating":"good"' in body or b'"rating":"gold"' in body:
        return True
    return b'"rating":"bad"' not in body and b'"verifier":"fail"' not in body


@dataclass
class Snapshot:
    mirror: Mirror
    position: str
    seen: int
    epoch: str
    seconds: float


class Feed:
    def __init__(self, client: redis.Redis, keys: RedisKeys, scripts: Scripts, dim: int, limits: MemoryLimits) -> None:
        self.client = client
        self.keys = keys
        self.scripts = scripts
        self.dim = dim
        self.limits = limits

    def epoch(self) -> str:
        """The dataset's identity; created on first use. A wiped Redis comes back with a new one."""
        self.client.set(self.keys.epoch, uuid.uuid4().hex, nx=True)
        value = self.client.get(self.keys.epoch)
        return value.decode() if isinstance(value, bytes) else str(value)

    def last_id(self) -> tuple[str, int]:
        """The feed's last entry id and how many entries were ever added up to it (one atomic reply)."""
        try:
            info = self.client.xinfo_stream(self.keys.feed)
        except redis.ResponseError:  # no feed yet
            return "0-0", 0
        last = info.get("last-generated-id") or b"0-0"
        return (last.decode() if isinstance(last, bytes) else str(last)), int(info.get("entries-added") or 0)

    def lost_since(self, position: str, seen: int) -> bool:
        """True when entries after `position` were trimmed away, so following cannot catch up.

        `seen` counts the entries up to `position`. Trimming removes the oldest entries: if
        the oldest one left is after `position`, entries were lost unless all those added
        since `position` are still there.
        """
        try:
            info = self.client.xinfo_stream(self.keys.feed)
        except redis.ResponseError:
            return position != "0-0"  # the feed vanished
        added = info.get("entries-added")
        first = info.get("first-entry")
        if first is not None and parse_id(first[0]) <= parse_id(position):
            return False
        if added is None:  # Redis < 7 does not count: assume the worst
            return first is not None
        return int(added) - seen > int(info.get("length") or 0)

    def snapshot(self, pending: list[Record]) -> Snapshot:
        """A fresh mirror of everything in Redis plus this replica's spooled adds."""
        started = time.perf_counter()
        epoch = self.epoch()
        position, seen = self.last_id()
        mirror = Mirror(self.dim, self.limits)
        for member in self.client.smembers(self.keys.tenants):
            tenant = member.decode() if isinstance(member, bytes) else str(member)
            mirror.load(*self._scan_tenant(tenant))
        for record in pending:
            if record.get("op") == "add":
                apply_spooled_add(mirror, record)
        return Snapshot(mirror, position, seen, epoch, time.perf_counter() - started)

    def _scan_tenant(self, tenant: str) -> tuple[list[str], list[MirrorEntry], np.ndarray]:
        """Every episode of a tenant: ZSCAN (each member present throughout is seen) plus fetch, in Lua.

        Vectors go straight from the replies into one matrix per batch, so no per-episode
        vector object is ever made (they would fragment the heap between the long-lived bodies).
        """
        ids: list[str] = []
        entries: list[MirrorEntry] = []
        batches: list[np.ndarray] = []
        seen: set[str] = set()
        cursor = b"0"
        while True:
            cursor, packed = self.scripts.scan_fetch(
                keys=[self.keys.ids(tenant)],
                args=[self.keys.episode_prefix(tenant), cursor, _SCAN_COUNT],
                client=self.client,
            )
            found = unpack(tenant, packed)
            batch = np.empty((len(found), self.dim), dtype=np.float32)
            rows = 0
            for episode_id, decoded in found:
                if decoded is None or episode_id in seen:  # gone meanwhile, or seen twice by ZSCAN
                    continue
                seen.add(episode_id)
                ids.append(episode_id)
                entries.append(decoded[0])
                batch[rows] = np.frombuffer(decoded[1], dtype=np.float32)
                rows += 1
            del found, packed
            batches.append(batch[:rows])
            if cursor in (b"0", 0, "0"):
                vectors = np.concatenate(batches) if batches else np.empty((0, self.dim), dtype=np.float32)
                return ids, entries, vectors

    def read(self, position: str, block_ms: int) -> list[StreamEntry]:
        reply = self.client.xread({self.keys.feed: position}, count=_FEED_BATCH, block=block_ms)
        if not reply:
            return []
        return list(reply[0][1])

    def apply(
        self, mirror: Mirror, entries: list[StreamEntry], on_drop: Callable[[str, float], None]
    ) -> tuple[str, float]:
        """Apply feed entries in order; returns the last id and its age in seconds."""
        wanted: dict[str, list[str]] = {}
        for _, fields in entries:
            if fields.get(b"op") in (b"add", b"upd"):
                wanted.setdefault(fields[b"t"].decode(), []).append(fields[b"id"].decode())
        fetched: dict[tuple[str, str], Decoded] = {}
        read_after = mirror.body_writes()  # an update this replica makes meanwhile is newer than what is read
        for tenant, ids in wanted.items():
            unique = list(dict.fromkeys(ids))
            for episode_id, decoded in zip(
                unique, fetch(self.scripts, self.client, self.keys, tenant, unique), strict=True
            ):
                fetched[(tenant, episode_id)] = decoded
        for _, fields in entries:
            op = fields.get(b"op")
            tenant = fields.get(b"t", b"").decode()
            if op in (b"add", b"upd"):
                episode_id = fields[b"id"].decode()
                decoded = fetched.get((tenant, episode_id))
                if decoded is not None:
                    entry, raw = decoded
                    mirror.put(episode_id, entry, np.frombuffer(raw, dtype=np.float32), read_after=read_after)
            elif op == b"del":
                mirror.remove(fields[b"id"].decode())
            elif op == b"drop":
                mirror.drop_tenant(tenant)
                on_drop(tenant, float(fields.get(b"at", b"0")))
        last = entries[-1][0]
        age = max(0.0, time.time() - parse_id(last)[0] / 1000)
        return last.decode(), age


def apply_spooled_add(mirror: Mirror, record: Record) -> str:
    """Put a spooled episode in the mirror (unless the same content is held); returns its id there."""
    episode = Episode.model_validate(record["episode"])
    held = mirror.id_for_content(episode.content_key)
    if held is not None:
        return held
    mirror.put(episode.id, MirrorEntry.of(episode), record_vector(record))
    return episode.id
