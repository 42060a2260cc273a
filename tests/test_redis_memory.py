"""RedisMemory against real Redis processes: replicas sharing one memory, and its failure modes.

Each test starts its own redis-server (tests/redis_fixtures.py) and two or more replicas
(RedisMemory instances with their own data dirs) in this process.
"""

# ruff: noqa: F811 - test functions take the imported `redis_server` fixture as a parameter

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from memory_store.episode import Episode
from memory_store.limits import MemoryLimits
from memory_store.redis.config import RedisOptions
from memory_store.redis.keys import RedisKeys
from memory_store.redis.store import RedisMemory
from tests.redis_fixtures import RedisProcess, TcpRelay, free_port, redis_server  # noqa: F401 - fixture

DIM = 16


def vector(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


def episode(i: int, tenant: str = "acme", scope: str = "s1", **fields: object) -> Episode:
    return Episode(
        tenant=tenant, scope=scope, question=f"question {i}", context_fingerprint="ctx", answer=f"answer {i}", **fields
    )


def wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> float:
    """Seconds until `condition` held; fails the test after `timeout_s`."""
    started = time.perf_counter()
    while not condition():
        if time.perf_counter() - started > timeout_s:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(0.002)
    return time.perf_counter() - started


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[Callable[..., RedisMemory]]:
    made: list[RedisMemory] = []

    def make(url: str, name: str, limits: MemoryLimits | None = None, **options: object) -> RedisMemory:
        memory = RedisMemory(url, DIM, tmp_path / name, limits=limits, options=RedisOptions(replica_id=name, **options))
        made.append(memory)
        return memory

    yield make
    for memory in made:
        memory.close()


def test_an_episode_written_on_one_replica_is_searchable_on_another_within_a_second(
    redis_server: RedisProcess, replicas: Callable[..., RedisMemory]
) -> None:
    a, b = replicas(redis_server.url, "a"), replicas(redis_server.url, "b")
    latencies = []
    for i in range(20):
        a.add(episode(i), vector(i))
        latencies.append(wait_for(lambda i=i: b.count("acme") == i + 1, timeout_s=1.0))
    found = b.search("acme", "s1", vector(7), k=1)
    assert found[0].episode.question == "question 7" and found[0].similarity > 0.99
    assert max(latencies) < 1.0
    assert b.health()["feed_lag_s"] < 1.0
    print(f"visibility p50 {sorted(latencies)[10] * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms")


def test_writing_the_same_episode_twice_anywhere_keeps_one(
    redis_server: RedisProcess, replicas: Callable[..., RedisMemory]
) -> None:
    a, b = replicas(redis_server.url, "a"), replicas(redis_server.url, "b")
    first = a.add(episode(1), vector(1))
    again = a.add(episode(1), vector(1))  # new Episode object, new id, same content
    elsewhere = b.add(episode(1), vector(1))
    assert first.id == again.id == elsewhere.id
    redis = redis_server.client()
    assert redis.zcard(RedisKeys("speedup").ids("acme")) == 1
    adds = [f for _, f in redis.xrange("speedup:feed") if f[b"op"] == b"add"]
    assert len(adds) == 1
    wait_for(lambda: b.count("acme") == 1 and a.count("acme") == 1)


def test_concurrent_hits_are_all_counted(redis_server: RedisProcess, replicas: Callable[..., RedisMemory]) -> None:
    a, b = replicas(redis_server.url, "a"), replicas(redis_server.url, "b")
    stored = a.add(episode(1), vector(1))
    wait_for(lambda: b.get("acme", stored.id) is not None)

    def hammer(memory: RedisMemory) -> None:
        for _ in range(100):
            memory.record_hit("acme", stored.id)

    threads = [threading.Thread(target=hammer, args=(m,)) for m in (a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert int(redis_server.client().hget(RedisKeys("speedup").episode("acme", stored.id), "hits")) == 400
    assert a.list_episodes("acme")[0].hits == 400


def test_a_bad_rating_reaches_every_replica(redis_server: RedisProcess, replicas: Callable[..., RedisMemory]) -> None:
    a, b = replicas(redis_server.url, "a"), replicas(redis_server.url, "b")
    stored = a.add(episode(1), vector(1))
    wait_for(lambda: len(b.search("acme", "s1", vector(1), 1)) == 1)
    stored.rating = "bad"
    a.update(stored)
    wait_for(lambda: b.search("acme", "s1", vector(1), 1) == [], timeout_s=1.0)
    assert b.get("acme", stored.id).rating == "bad"  # type: ignore[union-attr]


def test_a_delete_reaches_every_replica(redis_server: RedisProcess, replicas: Callable[..., RedisMemory]) -> None:
    a, b = replicas(redis_server.url, "a"), replicas(redis_server.url, "b")
    stored = [a.add(episode(i), vector(i)) for i in range(3)]
    wait_for(lambda: b.count("acme") == 3)
    assert b.delete("acme", stored[1].id)
    assert not b.delete("other-tenant", stored[0].id)  # a tenant cannot delete another's episode
    wait_for(lambda: a.count("acme") == 2, timeout_s=1.0)
    assert a.get("acme", stored[1].id) is None


def test_tenant_delete_removes_every_key_and_every_mirror_copy(
    redis_server: RedisProcess, replicas: Callable[..., RedisMemory]
) -> None:
    a, b = replicas(redis_server.url, "a"), replicas(redis_server.url, "b")
    odd = "ac:me{x}*"  # key-hostile name: must not reach into other tenants' keys
    for i in range(1200):  # more than one drop chunk
        a.add(episode(i, tenant=odd), vector(i))
    a.add(episode(1, tenant="acme"), vector(1))
    wait_for(lambda: b.count(odd) == 1200 and b.count("acme") == 1, timeout_s=10)
    assert b.delete_tenant(odd) == 1200
    wait_for(lambda: a.count(odd) == 0, timeout_s=1.0)
    assert a.tenants() == b.tenants() == ["acme"]
    redis = redis_server.client()
    assert list(redis.scan_iter(match=RedisKeys("speedup").tenant_pattern(odd))) == []
    assert redis.smembers("speedup:tenants") == {b"acme"}
    assert a.count("acme") == 1


def test_capacity_evicts_the_least_useful_on_every_replica(
    redis_server: RedisProcess, replicas: Callable[..., RedisMemory]
) -> None:
    limits = MemoryLimits(capacity_per_tenant=3)
    a, b = replicas(redis_server.url, "a", limits), replicas(redis_server.url, "b", limits)
    old = time.time() - 3600
    kept = a.add(episode(0, created_at=old, last_used_at=old), vector(0))
    stale = a.add(episode(1, created_at=old, last_used_at=old), vector(1))
    a.add(episode(2), vector(2))
    for _ in range(20):  # hits make the old episode 0 more useful than the equally old episode 1
        b.record_hit("acme", kept.id)
    a.add(episode(3), vector(3))
    a.add(episode(4, tenant="other"), vector(4))  # capacity is per tenant
    wait_for(lambda: b.count("acme") == 3 and b.count("other") == 1, timeout_s=1.0)
    assert b.get("acme", stale.id) is None and b.get("acme", kept.id) is not None
    assert a.removals.evicted == 1
    registry = CollectorRegistry()
    a.register_metrics(registry)
    assert 'speedup_memory_removed_total{reason="capacity"} 1.0' in generate_latest(registry).decode()


def test_expired_episodes_are_never_served_and_are_swept(
    redis_server: RedisProcess, replicas: Callable[..., RedisMemory]
) -> None:
    limits = MemoryLimits(ttl_s=2.0)
    a, b = replicas(redis_server.url, "a", limits), replicas(redis_server.url, "b", limits)
    a.add(episode(1, created_at=time.time() - 10), vector(1))  # already past its TTL
    fresh = a.add(episode(2), vector(2))
    assert [n.episode.id for n in a.search("acme", "s1", vector(1), 5)] == [fresh.id]
    ids = RedisKeys("speedup").ids("acme")
    wait_for(lambda: redis_server.client().zcard(ids) == 1, timeout_s=3)  # swept from Redis
    wait_for(lambda: b.count("acme") == 1 and b.get("acme", fresh.id) is not None, timeout_s=1)  # and mirrors
    assert a.removals.expired + b.removals.expired == 1


def test_a_replica_cut_off_catches_up_from_the_feed_without_a_rebuild(
    redis_server: RedisProcess, replicas: Callable[..., RedisMemory]
) -> None:
    relay = TcpRelay(redis_server.port)
    try:
        a, b = replicas(redis_server.url, "a"), replicas(relay.url, "b")
        a.add(episode(0), vector(0))
        wait_for(lambda: b.count("acme") == 1)
        relay.cut()
        wait_for(lambda: b.health()["degraded"] is True)
        stored = [a.add(episode(i), vector(i)) for i in range(1, 30)]
        a.delete("acme", stored[0].id)
        assert b.count("acme") == 1  # partitioned: it cannot know yet
        events_before = b.feed_events
        relay.heal()
        wait_for(lambda: b.count("acme") == 29 and not b.health()["degraded"], timeout_s=5)
        assert b.rebuilds == 1  # caught up from its feed position, no rescan of the store
        assert b.feed_events - events_before >= 30
        assert b.get("acme", stored[0].id) is None
        saved = redis_server.client().get(RedisKeys("speedup").replica_pos("b"))
        assert saved is not None
    finally:
        relay.close()


def test_a_feed_trimmed_past_a_replicas_position_forces_a_rebuild(
    redis_server: RedisProcess, replicas: Callable[..., RedisMemory]
) -> None:
    relay = TcpRelay(redis_server.port)
    try:
        a, b = replicas(redis_server.url, "a"), replicas(relay.url, "b")
        relay.cut()
        wait_for(lambda: b.health()["degraded"] is True)
        for i in range(10):
            a.add(episode(i), vector(i))
        redis_server.client().xtrim("speedup:feed", maxlen=2, approximate=False)  # events b never saw
        relay.heal()
        wait_for(lambda: b.count("acme") == 10, timeout_s=5)
        assert b.rebuilds == 2
    finally:
        relay.close()


def test_redis_down_at_start_serves_cold_then_warms_up(tmp_path: Path, replicas: Callable[..., RedisMemory]) -> None:
    redis = RedisProcess(tmp_path / "late-redis", port=free_port())
    memory = replicas(redis.url, "a")
    assert memory.health()["degraded"] is True
    assert memory.search("acme", "s1", vector(1), 3) == []
    memory.add(episode(1), vector(1))  # spooled, and searchable here at once
    assert memory.spool.depth == 1 and len(memory.search("acme", "s1", vector(1), 3)) == 1
    redis.start()
    try:
        wait_for(lambda: not memory.health()["degraded"] and memory.spool.depth == 0, timeout_s=5)
        assert redis.client().zcard(RedisKeys("speedup").ids("acme")) == 1
    finally:
        redis.stop()


def test_spooled_episodes_survive_a_crash_and_land_exactly_once(
    tmp_path: Path, replicas: Callable[..., RedisMemory]
) -> None:
    redis = RedisProcess(tmp_path / "redis", port=free_port())
    crashed = replicas(redis.url, "a")  # Redis is not running yet: everything is spooled
    other = replicas(redis.url, "b")
    for i in range(5):
        crashed.add(episode(i), vector(i))
        other.add(episode(i), vector(i))  # the same five answers learned on another replica
    with open(crashed.spool.active, "a") as spool:
        spool.write('{"op": "add", "episode": {"tena')  # a write torn by the crash
    # The replica dies without closing; its successor opens the same data dir.
    crashed._stop.set()
    crashed._thread.join()
    successor = replicas(redis.url, "a")
    assert successor.spool.depth == 5 and successor.count("acme") == 5
    successor.add(episode(5), vector(5))
    redis.start()
    try:
        wait_for(lambda: successor.spool.depth == 0 and other.spool.depth == 0, timeout_s=5)
        client = redis.client()
        assert client.zcard(RedisKeys("speedup").ids("acme")) == 6
        adds = [f for _, f in client.xrange("speedup:feed") if f[b"op"] == b"add"]
        assert len(adds) == 6
        wait_for(lambda: successor.count("acme") == 6 and other.count("acme") == 6)
    finally:
        redis.stop()


def test_a_stalled_redis_never_stalls_a_write_or_a_search(
    redis_server: RedisProcess, replicas: Callable[..., RedisMemory]
) -> None:
    a = replicas(redis_server.url, "a")
    a.add(episode(0), vector(0))
    redis_server.pause()  # accepts connections, never answers
    try:
        slowest = 0.0
        for i in range(1, 20):
            started = time.perf_counter()
            a.add(episode(i), vector(i))
            a.record_hit("acme", a.search("acme", "s1", vector(i), 1)[0].episode.id)
            slowest = max(slowest, time.perf_counter() - started)
        assert slowest < 1.0  # one 0.25 s timeout at most, then straight to the spool (a stall: 5 s+)
        health = a.health()
        assert health["degraded"] is True and health["spool_depth"] == 19
        registry = CollectorRegistry()
        a.register_metrics(registry)
        text = generate_latest(registry).decode()
        assert "speedup_memory_degraded 1.0" in text and "speedup_memory_spool_depth 19.0" in text
    finally:
        redis_server.resume()
    wait_for(lambda: a.spool.depth == 0 and not a.health()["degraded"], timeout_s=5)
    client = redis_server.client()
    assert client.zcard(RedisKeys("speedup").ids("acme")) == 20
    assert (
        sum(int(client.hget(RedisKeys("speedup").episode("acme", e.id), "hits")) for e in a.list_episodes("acme")) == 19
    )
