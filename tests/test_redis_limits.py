"""Memory limits (per-tenant capacity, TTL) hold on both backends: the local store and Redis."""

# ruff: noqa: F811 - test functions take the imported `redis_server` fixture as a parameter

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from memory_store.base import MemoryStore
from memory_store.episode import Episode
from memory_store.limits import MemoryLimits
from memory_store.local_store import LocalMemory
from memory_store.redis.config import RedisOptions
from memory_store.redis.store import RedisMemory
from proxy.config import load_settings
from proxy.container import open_memory
from tests.conftest import ProxyFactory, ServerThread, stub_url
from tests.redis_fixtures import RedisProcess, redis_server  # noqa: F401 - fixture

DIM = 8

Opener = Callable[[MemoryLimits], MemoryStore]


def vector(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


def episode(i: int, tenant: str = "acme", age_s: float = 0.0) -> Episode:
    at = time.time() - age_s
    return Episode(
        tenant=tenant,
        scope="s",
        question=f"q{i}",
        context_fingerprint="c",
        answer=f"a{i}",
        created_at=at,
        last_used_at=at,
    )


@pytest.fixture(params=["local", "redis"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    opened: list[MemoryStore] = []

    def make(limits: MemoryLimits) -> MemoryStore:
        if request.param == "local":
            store: MemoryStore = LocalMemory(tmp_path / "episodes.sqlite3", DIM, limits=limits)
        else:
            server: RedisProcess = request.getfixturevalue("redis_server")
            store = RedisMemory(server.url, DIM, tmp_path, limits=limits, options=RedisOptions(replica_id="r"))
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def removed(store: MemoryStore) -> tuple[int, int]:
    counters = store.removals  # type: ignore[attr-defined]
    return counters.evicted, counters.expired


def test_capacity_evicts_the_least_useful_episode(open_store: Opener) -> None:
    store = open_store(MemoryLimits(capacity_per_tenant=3, hit_weight_s=3600))
    used = store.add(episode(0, age_s=7200), vector(0))  # old, but reused a lot
    unused = store.add(episode(1, age_s=3600), vector(1))  # younger, never reused
    for _ in range(10):
        store.record_hit("acme", used.id)
    store.add(episode(2), vector(2))
    store.add(episode(3), vector(3))
    store.add(episode(9, tenant="other"), vector(9))
    assert store.count("acme") == 3 and store.count("other") == 1
    assert store.get("acme", unused.id) is None
    assert store.get("acme", used.id) is not None
    assert removed(store) == (1, 0)


def test_expired_episodes_are_never_returned_and_get_purged(open_store: Opener) -> None:
    store = open_store(MemoryLimits(ttl_s=8))
    store.add(episode(0, age_s=20), vector(0))
    fresh = store.add(episode(1), vector(1))
    assert [n.episode.id for n in store.search("acme", "s", vector(0), 5)] == [fresh.id]
    if isinstance(store, LocalMemory):
        store.expire()  # what its periodic sweep (every min(60 s, ttl/4)) does; Redis: every min(5 s, ttl/4)
    deadline = time.time() + 5
    while store.count("acme") != 1 and time.time() < deadline:
        time.sleep(0.02)
    assert store.count("acme") == 1
    assert removed(store) == (0, 1)


def test_limits_are_configured_by_settings_and_environment(tmp_path: Path) -> None:
    settings = load_settings(
        flags={"data_dir": str(tmp_path), "limits": {"capacity_per_tenant": 2}},
        environ={"SPEEDUP_LIMITS__TTL_S": "86400", "SPEEDUP_REDIS__REPLICA_ID": "proxy-1"},
    )
    assert settings.limits == MemoryLimits(capacity_per_tenant=2, ttl_s=86400)
    assert settings.redis.replica_id == "proxy-1"
    store = open_memory(settings, DIM)
    try:
        assert isinstance(store, LocalMemory) and store.limits.capacity_per_tenant == 2
    finally:
        store.close()


def test_evictions_show_in_the_proxy_metrics(start_proxy: ProxyFactory, tmp_path: Path) -> None:
    from bench.stub_backend import create_stub_app

    stub = ServerThread(create_stub_app()).start()
    try:
        proxy = start_proxy(stub_url(stub), data_dir=tmp_path / "m", limits={"capacity_per_tenant": 1})
        client = proxy.client()
        for i in range(3):
            client.chat.completions.create(model="stub", messages=[{"role": "user", "content": f"Fact {i}: {i}?"}])
            proxy.settle()
        text = httpx.get(proxy.url + "/metrics").text
        assert 'speedup_memory_removed_total{reason="capacity"} 2.0' in text
        assert proxy.container.memory is not None and proxy.container.memory.count("local") == 1
    finally:
        stub.stop()
