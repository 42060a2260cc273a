"""Redis-backed memory shared by proxy replicas, searched through an in-process FAISS mirror.

Redis holds the episodes (source of truth); every replica keeps a mirror that `search`
reads without any network call. A background thread per replica rebuilds the mirror at
start, follows the change feed (a Redis stream every write appends to, atomically), flushes
the local spool and sweeps expired episodes.

Failure model: every Redis call made for a request has a short timeout (0.25 s) and runs
off the event loop. When a call fails the memory turns degraded: searches keep using the
mirror, writes go to the spool on local disk, hit counts accumulate in memory. When Redis
answers again the thread checks the feed was not trimmed past its position (else rebuilds),
catches up from the feed, replays the spool (idempotently, so each episode lands once) and
only then turns writes back to Redis.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import redis
from prometheus_client import CollectorRegistry
from redis.backoff import NoBackoff
from redis.retry import Retry

from memory_store.base import AsyncMemoryMethods
from memory_store.episode import Episode, Neighbour
from memory_store.limits import LimitCounters, MemoryLimits, usefulness
from memory_store.redis.config import RedisOptions
from memory_store.redis.feed import Feed, apply_spooled_add, fetch
from memory_store.redis.keys import RedisKeys
from memory_store.redis.metrics import RedisMemoryCollector
from memory_store.redis.mirror import Mirror, MirrorEntry
from memory_store.redis.scripts import Scripts
from memory_store.redis.spool import Record, Spool, add_record, hits_record, record_vector

log = logging.getLogger(__name__)

_REDIS_FAULTS = (redis.RedisError, OSError)
_POSITION_SAVE_S = 1.0
_POSITION_TTL_S = 7 * 86_400
_DROP_CHUNK = 500
_EXPIRE_BATCH = 500


class RedisMemory(AsyncMemoryMethods):
    """One replica's view of the shared memory (see the module docstring).

    Episodes handed out are always freshly parsed (from the mirror's JSON or from Redis), and
    what `add` and `update` are given is serialised at once: changing an episode changes
    nothing stored until it is passed to `update`, as with LocalMemory.
    """

    def __init__(
        self,
        url: str,
        dim: int,
        data_dir: Path,
        limits: MemoryLimits | None = None,
        options: RedisOptions | None = None,
    ) -> None:
        self.url = url
        self.dim = dim
        self.limits = limits or MemoryLimits()
        self.options = options or RedisOptions()
        self.replica_id = self.options.replica_name(data_dir)
        self.keys = RedisKeys(self.options.key_prefix)
        timeout = self.options.socket_timeout_s
        # Request-path client: short timeouts, no retries (a retry would multiply the stall).
        self._fast = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0)
        )
        # Background client: its feed reads block for feed_block_ms, so its timeout is longer.
        self._slow = redis.Redis.from_url(
            url,
            socket_timeout=self.options.feed_block_ms / 1000 + 1.0,
            socket_connect_timeout=max(timeout, 0.5),
            retry=Retry(NoBackoff(), 0),
        )
        self._scripts = Scripts(self._fast)
        self._feed = Feed(self._slow, self.keys, self._scripts, dim, self.limits)
        self.spool = Spool(Path(data_dir) / "redis-spool", fsync=self.options.spool_fsync)
        self.mirror = Mirror(dim, self.limits)
        for record in self.spool.records():
            if record.get("op") == "add":
                apply_spooled_add(self.mirror, record)
        self.removals = LimitCounters()
        self._state_lock = threading.Lock()
        self._hits_lock = threading.Lock()
        self._pending_hits: dict[tuple[str, str], int] = {}
        self._up = False
        self._verified = False
        self._need_rebuild = True
        self._position = "0-0"
        self._seen = 0  # feed entries up to _position
        self._epoch: str | None = None
        self._last_error: str | None = None
        self._down_since: float | None = time.time()
        self.feed_lag_s = 0.0
        self.feed_events = 0
        self.rebuilds = 0
        self.last_rebuild_s: float | None = None
        self._next_expiry = 0.0
        self._next_position_save = 0.0
        self._stop = threading.Event()
        try:
            self._cycle(block_ms=None)  # start warm when Redis is there; cold (and catching up) when not
        except _REDIS_FAULTS as error:
            self._set_down(error)
        self._thread = threading.Thread(target=self._run, name=f"speedup-redis-{self.replica_id}", daemon=True)
        self._thread.start()

    @classmethod
    def from_settings(cls, settings: Any, dim: int) -> RedisMemory:
        return cls(
            settings.memory.url,
            dim,
            Path(settings.data_dir),
            limits=getattr(settings, "limits", None),
            options=getattr(settings, "redis", None),
        )

    # -- the protocol: reads (all local) ---------------------------------------------------

    def search(self, tenant: str, scope: str, vector: np.ndarray, k: int) -> list[Neighbour]:
        return self.mirror.search(tenant, scope, vector, k)

    def get(self, tenant: str, episode_id: str) -> Episode | None:
        entry = self.mirror.get(episode_id)
        if entry is not None:
            return entry.episode() if entry.tenant == tenant else None
        return self._fetch(tenant, episode_id) if self._up else None

    def count(self, tenant: str | None = None) -> int:
        return self.mirror.count(tenant)

    def tenants(self) -> list[str]:
        return self.mirror.tenants()

    def list_episodes(self, tenant: str, limit: int = 100, offset: int = 0) -> list[Episode]:
        """Newest first; from Redis (fresh hit counts), from the mirror while Redis is away."""
        if self._up:
            try:
                ids = [m.decode() for m in self._slow.zrevrange(self.keys.ids(tenant), offset, offset + limit - 1)]
                found = fetch(self._scripts, self._slow, self.keys, tenant, ids)
                return [item[0].episode() for item in found if item is not None]
            except _REDIS_FAULTS as error:
                self._set_down(error)
        mirror = self.mirror
        entries = [e for e in (mirror.get(i) for i in mirror.ids_of(tenant)) if e is not None]
        entries.sort(key=lambda e: e.created_at, reverse=True)
        return [e.episode() for e in entries[offset : offset + limit]]

    # -- the protocol: writes --------------------------------------------------------------

    def add(self, episode: Episode, vector: np.ndarray) -> Episode:
        raw = np.asarray(vector, dtype=np.float32).reshape(-1)
        held = self.mirror.id_for_content(episode.content_key)
        if held is not None:
            entry = self.mirror.get(held)
            if entry is not None:
                return entry.episode()
        if self._direct():
            try:
                stored_id = self._write_add(self._fast, episode, raw)
            except _REDIS_FAULTS as error:
                self._set_down(error)  # it may or may not have landed: the spool replay is idempotent
            else:
                if stored_id == episode.id:
                    self.mirror.put(episode.id, MirrorEntry.of(episode), raw)
                    return episode
                return self.get(episode.tenant, stored_id) or episode
        self.spool.append(add_record(episode, raw))
        self.mirror.put(episode.id, MirrorEntry.of(episode), raw)
        return episode

    def record_hit(self, tenant: str, episode_id: str) -> None:
        entry = self.mirror.get(episode_id)
        if entry is not None and entry.tenant != tenant:
            return
        self.mirror.note_hit(episode_id, time.time())
        if self._direct():
            try:
                self._write_hits(self._fast, tenant, episode_id, 1)
                return
            except _REDIS_FAULTS as error:
                self._set_down(error)
        with self._hits_lock:
            self._pending_hits[(tenant, episode_id)] = self._pending_hits.get((tenant, episode_id), 0) + 1

    def update(self, episode: Episode) -> None:
        self.mirror.update_body(episode)
        if self._direct():
            try:
                self._write_update(self._fast, episode)
                return
            except _REDIS_FAULTS as error:
                self._set_down(error)
        self.spool.append({"op": "update", "episode": episode.model_dump(mode="json")})

    def delete(self, tenant: str, episode_id: str) -> bool:
        entry = self.mirror.get(episode_id)
        if entry is not None:
            if entry.tenant != tenant:
                return False
            self.mirror.remove(episode_id)
        if self._direct():
            try:
                return bool(self._write_delete(self._fast, tenant, episode_id, "api")) or entry is not None
            except _REDIS_FAULTS as error:
                self._set_down(error)
        self.spool.append({"op": "delete", "tenant": tenant, "id": episode_id})
        return entry is not None

    def delete_tenant(self, tenant: str) -> int:
        """Remove a tenant's whole memory; every replica drops it from its mirror via the feed."""
        now = time.time()
        dropped = self.mirror.drop_tenant(tenant)
        self.spool.purge_tenant(tenant, now)
        if self._up:
            try:
                return max(dropped, self._drop_tenant(self._slow, tenant))
            except _REDIS_FAULTS as error:
                self._set_down(error)
        self.spool.append({"op": "drop", "tenant": tenant, "at": now})
        return dropped

    # -- state, health and metrics ---------------------------------------------------------

    @property
    def degraded(self) -> bool:
        return not self._up

    def health(self) -> dict[str, object]:
        return {
            "backend": "redis",
            "url": _redacted(self.url),
            "replica": self.replica_id,
            "degraded": not self._up,
            "spool_depth": self.spool.depth,
            "pending_hits": len(self._pending_hits),
            "episodes": self.mirror.count(),
            "feed_position": self._position,
            "feed_lag_s": round(self.feed_lag_s, 4),
            "mirror_rebuilds": self.rebuilds,
            "last_rebuild_s": None if self.last_rebuild_s is None else round(self.last_rebuild_s, 3),
            "down_for_s": None if self._down_since is None else round(time.time() - self._down_since, 1),
            "last_error": self._last_error,
        }

    def register_metrics(self, registry: CollectorRegistry) -> None:
        registry.register(RedisMemoryCollector(self))
        self.removals.register(registry)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._flush_before_close()
        self._fast.close()
        self._slow.close()

    def _flush_before_close(self) -> None:
        """Write what the sync thread would have written next: spooled episodes and buffered hit counts.
        With Redis down they stay on disk (the hit counts join the spool); the next start replays them."""
        try:
            if self.spool.depth:
                self.spool.flush(self._replay)
            if self._pending_hits:
                self._flush_hits()
        except _REDIS_FAULTS as error:
            self._spool_hits()
            log.warning("redis memory closed with unsent writes (spool %d): %s", self.spool.depth, error)

    def _spool_hits(self) -> None:
        with self._hits_lock:
            pending, self._pending_hits = self._pending_hits, {}
        for (tenant, episode_id), delta in pending.items():
            self.spool.append(hits_record(tenant, episode_id, delta))

    def _direct(self) -> bool:
        """Write straight to Redis: it is up and nothing older waits in the spool."""
        return self._up and self.spool.depth == 0

    def _set_down(self, error: BaseException) -> None:
        with self._state_lock:
            if self._up or self._last_error is None:
                log.warning("redis memory degraded (serving from the local mirror, spooling writes): %s", error)
            if self._down_since is None:
                self._down_since = time.time()
            self._up = False
            self._verified = False
            self._last_error = f"{type(error).__name__}: {error}"

    def _set_up(self) -> None:
        with self._state_lock:
            if not self._up and self._down_since is not None and self._last_error is not None:
                log.warning("redis memory back after %.1f s", time.time() - self._down_since)
            self._up = True
            self._down_since = None
            self._last_error = None

    # -- the background thread -------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._cycle(block_ms=self.options.feed_block_ms)
            except _REDIS_FAULTS as error:
                self._set_down(error)
                self._stop.wait(self.options.retry_interval_s)
            except Exception:  # a bug must not stop replication for good
                log.exception("redis memory sync failed")
                self._stop.wait(self.options.retry_interval_s)

    def _cycle(self, block_ms: int | None) -> None:
        if not self._verified:
            self._verify()
        if self._need_rebuild:
            self._rebuild()
        entries = self._feed.read(self._position, block_ms)
        if entries:
            self._position, self.feed_lag_s = self._feed.apply(self.mirror, entries, self._on_drop)
            self._seen += len(entries)
            self.feed_events += len(entries)
        if self.spool.depth:
            self.spool.flush(self._replay)
        if self._pending_hits:
            self._flush_hits()
        self._maintain()
        self._set_up()

    def _verify(self) -> None:
        """After (re)connecting: can following the feed from our position still catch up?"""
        epoch = self._feed.epoch()
        if self._epoch is not None and epoch != self._epoch:
            log.warning("redis dataset changed (epoch %s -> %s): rebuilding the mirror", self._epoch, epoch)
            self._need_rebuild = True
        elif not self._need_rebuild and self._feed.lost_since(self._position, self._seen):
            log.warning("change feed trimmed past this replica's position %s: rebuilding the mirror", self._position)
            self._need_rebuild = True
        self._verified = True

    def _rebuild(self) -> None:
        snapshot = self._feed.snapshot(self.spool.records())
        self.mirror = snapshot.mirror
        self._position = snapshot.position
        self._seen = snapshot.seen
        self._epoch = snapshot.epoch
        self._need_rebuild = False
        self.rebuilds += 1
        self.last_rebuild_s = snapshot.seconds
        log.info("mirror rebuilt from redis: %d episodes in %.2f s", snapshot.mirror.count(), snapshot.seconds)

    def _on_drop(self, tenant: str, at: float) -> None:
        self.spool.purge_tenant(tenant, at)

    def _maintain(self) -> None:
        now = time.time()
        if now >= self._next_position_save:
            self._slow.set(self.keys.replica_pos(self.replica_id), self._position, ex=_POSITION_TTL_S)
            self._next_position_save = now + _POSITION_SAVE_S
        if self.limits.ttl_s is not None and now >= self._next_expiry:
            self._expire(now - self.limits.ttl_s)
            self._next_expiry = now + min(5.0, self.limits.ttl_s / 4)

    def _expire(self, cutoff: float) -> None:
        """Delete episodes created before `cutoff`: one pipelined range query per sweep, then batches."""
        tenants = [member.decode() for member in self._slow.smembers(self.keys.tenants)]
        pipe = self._slow.pipeline(transaction=False)
        for tenant in tenants:
            pipe.zrangebyscore(self.keys.ids(tenant), "-inf", cutoff, start=0, num=_EXPIRE_BATCH)
        for tenant, ids in zip(tenants, pipe.execute(), strict=True):
            while ids:
                pipe = self._slow.pipeline(transaction=False)
                for member in ids:
                    self._write_delete(pipe, tenant, member.decode(), "ttl")
                self.removals.count(expired=sum(int(n) for n in pipe.execute()))
                if len(ids) < _EXPIRE_BATCH:
                    break
                ids = self._slow.zrangebyscore(self.keys.ids(tenant), "-inf", cutoff, start=0, num=_EXPIRE_BATCH)

    def _replay(self, record: Record) -> None:
        """Apply one spooled write to Redis (idempotent: a replay after a crash changes nothing)."""
        op = record.get("op")
        if op == "add":
            episode = Episode.model_validate(record["episode"])
            stored_id = self._write_add(self._slow, episode, record_vector(record))
            if stored_id != episode.id:  # the same content was stored first by another replica
                self.mirror.remove(episode.id)
        elif op == "update":
            self._write_update(self._slow, Episode.model_validate(record["episode"]))
        elif op == "delete":
            self._write_delete(self._slow, record["tenant"], record["id"], "api")
        elif op == "drop":
            self._drop_tenant(self._slow, record["tenant"])
        elif op == "hits":
            self._write_hits(self._slow, record["tenant"], record["id"], int(record["delta"]))

    def _flush_hits(self) -> None:
        with self._hits_lock:
            pending, self._pending_hits = self._pending_hits, {}
        try:
            pipe = self._slow.pipeline(transaction=False)
            for (tenant, episode_id), delta in pending.items():
                self._write_hits(pipe, tenant, episode_id, delta)
            pipe.execute()
        except _REDIS_FAULTS:
            with self._hits_lock:  # put them back: hit counts are approximate, not lost on purpose
                for key, delta in pending.items():
                    self._pending_hits[key] = self._pending_hits.get(key, 0) + delta
            raise

    # -- Redis writes ----------------------------------------------------------------------

    def _write_add(self, client: Any, episode: Episode, raw: np.ndarray) -> str:
        keys = self.keys
        tenant = episode.tenant
        result = self._scripts.add(
            keys=[
                keys.episode(tenant, episode.id),
                keys.content(tenant),
                keys.ids(tenant),
                keys.score(tenant),
                keys.feed,
                keys.tenants,
            ],
            args=[
                episode.id,
                episode.content_key,
                episode.model_dump_json(),
                np.asarray(raw, dtype=np.float32).tobytes(),
                episode.hits,
                repr(episode.last_used_at),
                repr(episode.created_at),
                repr(usefulness(episode.last_used_at, episode.hits, self.limits.hit_weight_s)),
                tenant,
                episode.scope,
                self.limits.capacity_per_tenant or 0,
                self.options.feed_maxlen,
                keys.episode_prefix(tenant),
            ],
            client=client,
        )
        evicted = [member.decode() for member in result[2:]]
        if evicted:
            self.removals.count(evicted=len(evicted))
            for episode_id in evicted:
                self.mirror.remove(episode_id)
        return result[1].decode()

    def _write_hits(self, client: Any, tenant: str, episode_id: str, delta: int) -> Any:
        return self._scripts.hit(
            keys=[self.keys.episode(tenant, episode_id), self.keys.score(tenant)],
            args=[episode_id, repr(time.time()), self.limits.hit_weight_s, delta],
            client=client,
        )

    def _write_update(self, client: Any, episode: Episode) -> Any:
        return self._scripts.update(
            keys=[self.keys.episode(episode.tenant, episode.id), self.keys.feed],
            args=[episode.model_dump_json(), episode.tenant, episode.id, self.options.feed_maxlen],
            client=client,
        )

    def _write_delete(self, client: Any, tenant: str, episode_id: str, reason: str) -> Any:
        keys = self.keys
        return self._scripts.delete(
            keys=[
                keys.episode(tenant, episode_id),
                keys.content(tenant),
                keys.ids(tenant),
                keys.score(tenant),
                keys.feed,
            ],
            args=[episode_id, tenant, reason, self.options.feed_maxlen],
            client=client,
        )

    def _drop_tenant(self, client: Any, tenant: str) -> int:
        keys = self.keys
        total = 0
        while True:
            deleted = int(
                self._scripts.drop_chunk(
                    keys=[keys.ids(tenant), keys.score(tenant)],
                    args=[keys.episode_prefix(tenant), _DROP_CHUNK],
                    client=client,
                )
            )
            total += deleted
            if deleted:
                continue
            finished = self._scripts.drop_finish(
                keys=[keys.ids(tenant), keys.score(tenant), keys.content(tenant), keys.tenants, keys.feed],
                args=[tenant, repr(time.time()), self.options.feed_maxlen],
                client=client,
            )
            if int(finished):
                return total

    def _fetch(self, tenant: str, episode_id: str) -> Episode | None:
        try:
            (decoded,) = fetch(self._scripts, self._fast, self.keys, tenant, [episode_id])
        except _REDIS_FAULTS as error:
            self._set_down(error)
            return None
        return None if decoded is None else decoded[0].episode()


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))
