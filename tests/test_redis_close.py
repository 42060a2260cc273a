"""Writes still pending when a Redis memory closes must not be lost (issue 11).

While Redis is unreachable a replica spools its writes to local disk and buffers hit counts in
memory; its sync thread replays them once Redis answers again. A replica closed before its thread
got there (a deploy right after a Redis blip) flushes them in `close()`: another replica, with a
data dir of its own, then finds every one of them in Redis. With Redis still away at close, they
stay on disk (the hit counts too) and the next start on the same data dir sends them.
"""

# ruff: noqa: F811 - test functions take the imported `redis_server` fixture as a parameter

from __future__ import annotations

import time
from pathlib import Path

from memory_store.episode import Episode
from memory_store.redis.config import RedisOptions
from memory_store.redis.keys import RedisKeys
from memory_store.redis.store import RedisMemory
from tests.redis_fixtures import RedisProcess, TcpRelay, redis_server  # noqa: F401 - fixture
from tests.test_redis_memory import episode, vector, wait_for

DIM = 16
KEYS = RedisKeys("speedup")


def replica(url: str, data_dir: Path, name: str) -> RedisMemory:
    """A replica whose sync thread, once it failed, waits a minute: only `close()` can flush before then."""
    return RedisMemory(url, DIM, data_dir, options=RedisOptions(replica_id=name, retry_interval_s=60))


def cut_off(memory: RedisMemory, relay: TcpRelay) -> None:
    relay.cut()
    wait_for(lambda: memory.degraded)  # set by the sync thread alone (nothing else ran since): it now waits


def write_while_cut_off(memory: RedisMemory, before: list[Episode]) -> list[Episode]:
    """Adds, hits, a rating and a delete, all left pending; returns the episodes added."""
    added = [memory.add(episode(i), vector(i)) for i in range(10, 15)]
    for _ in range(3):
        memory.record_hit("acme", before[0].id)
    for _ in range(2):
        memory.record_hit("acme", added[0].id)
    added[1].rating = "bad"
    memory.update(added[1])
    assert memory.delete("acme", before[1].id)
    return added


def assert_found_in_redis(memory: RedisMemory, before: list[Episode], added: list[Episode]) -> None:
    held = {e.id: e for e in memory.list_episodes("acme")}
    assert set(held) == {e.id for e in before + added} - {before[1].id}
    assert held[added[1].id].rating == "bad"
    assert memory.count("acme") == len(held)
    [nearest] = memory.search("acme", "s1", vector(12), 1)
    assert nearest.episode.id == added[2].id and nearest.similarity > 0.99


def assert_hits_counted(memory: RedisMemory, before: list[Episode], added: list[Episode]) -> None:
    held = {e.id: e for e in memory.list_episodes("acme")}
    assert held[before[0].id].hits == 3 and held[added[0].id].hits == 2
    assert sum(e.hits for e in held.values()) == 5


def test_writes_pending_at_close_are_not_lost(redis_server: RedisProcess, tmp_path: Path) -> None:
    relay = TcpRelay(redis_server.port)
    try:
        memory = replica(relay.url, tmp_path / "a", "a")
        before = [memory.add(episode(i), vector(i)) for i in range(3)]  # written straight to Redis
        cut_off(memory, relay)
        added = write_while_cut_off(memory, before)
        assert memory.spool.depth == 7 and memory.health()["pending_hits"] == 2
        relay.heal()
        pending_at_close: list[tuple[int, int]] = []
        flush = memory._flush_before_close

        def noting() -> None:
            pending_at_close.append((memory.spool.depth, len(memory._pending_hits)))
            flush()

        memory._flush_before_close = noting  # type: ignore[method-assign]
        memory.close()
        assert pending_at_close == [(7, 2)], "the sync thread flushed before close: nothing was left to test"
        assert memory.spool.depth == 0 and memory.health()["pending_hits"] == 0
    finally:
        relay.close()

    other = replica(redis_server.url, tmp_path / "b", "b")  # a data dir of its own: no spool to replay
    try:
        assert other.spool.depth == 0
        assert_found_in_redis(other, before, added)
        assert_hits_counted(other, before, added)
    finally:
        other.close()


def test_writes_pending_at_close_with_redis_away_are_sent_by_the_next_start(
    redis_server: RedisProcess, tmp_path: Path
) -> None:
    relay = TcpRelay(redis_server.port)
    try:
        memory = replica(relay.url, tmp_path / "a", "a")
        before = [memory.add(episode(i), vector(i)) for i in range(3)]
        cut_off(memory, relay)
        added = write_while_cut_off(memory, before)
        started = time.perf_counter()
        memory.close()
        assert time.perf_counter() - started < 2.0
        assert memory.spool.depth == 7 + 2  # still on disk, and the buffered hit counts with them
    finally:
        relay.close()
    assert redis_server.client().zcard(KEYS.ids("acme")) == 3

    successor = RedisMemory(redis_server.url, DIM, tmp_path / "a", options=RedisOptions(replica_id="a"))
    try:
        wait_for(lambda: successor.spool.depth == 0 and not successor.degraded)
        assert_found_in_redis(successor, before, added)
        assert_hits_counted(successor, before, added)
    finally:
        successor.close()
