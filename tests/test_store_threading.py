"""Stores own their threading: async twins run off the event loop, and what they hand out is a copy.

Real parts throughout: LocalMemory on a temp dir with real FAISS, RedisMemory against a real
redis-server (tests/redis_fixtures.py), the real ReflectionStore and ResponseLog on SQLite.
Slowness comes from real causes: a SQLite write lock held by another connection, a paused
Redis. Plain `asyncio.run` (no pytest-asyncio).
"""

# ruff: noqa: F811 - test functions take the imported `redis_server` fixture as a parameter

from __future__ import annotations

import asyncio
import inspect
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from functools import wraps
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memory_store.base import MemoryStore
from memory_store.episode import Episode
from memory_store.local_store import LocalMemory
from memory_store.redis.config import RedisOptions
from memory_store.redis.mirror import Mirror, MirrorEntry
from memory_store.redis.store import RedisMemory
from memory_store.reflections import Reflection, ReflectionStore
from proxy.learning.response_log import ResponseEntry, ResponseLog
from tests.redis_fixtures import RedisProcess, redis_server  # noqa: F401 - fixture

DIM = 16
TENANT = "acme"
SCOPE = "s1"
TICK_S = 0.001
LOCK_HELD_S = 0.3
MAX_LAG_S = LOCK_HELD_S / 3  # a stalled loop waits the whole lock; a busy machine adds tens of ms at most


class Stores:
    """A backend as the tests open it: `open()` gives a running store; `restart()` closes it and
    opens a fresh one on the same durable state (a new process, for LocalMemory; a new replica
    rebuilding its mirror from Redis, for RedisMemory)."""

    def __init__(self, opener: Callable[[int], MemoryStore]) -> None:
        self._opener = opener
        self._opened: list[MemoryStore] = []
        self._count = 0

    def open(self) -> MemoryStore:
        self._count += 1
        store = self._opener(self._count)
        self._opened.append(store)
        return store

    def restart(self) -> MemoryStore:
        self._opened.pop().close()
        return self.open()

    def close(self) -> None:
        for store in self._opened:
            store.close()


@pytest.fixture(params=["local", "redis"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    if request.param == "local":

        def opener(n: int) -> MemoryStore:
            return LocalMemory(tmp_path / "episodes.sqlite3", DIM)
    else:
        server: RedisProcess = request.getfixturevalue("redis_server")

        def opener(n: int) -> MemoryStore:
            name = f"replica{n}"
            return RedisMemory(server.url, DIM, tmp_path / name, options=RedisOptions(replica_id=name))

    made = Stores(opener)
    yield made
    made.close()


def unit_vector(seed: int) -> np.ndarray:
    raw = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return raw / np.linalg.norm(raw)


def episode(i: int = 1, **fields: Any) -> Episode:
    return Episode(
        tenant=TENANT, scope=SCOPE, question=f"question {i}", context_fingerprint="ctx", answer=f"answer {i}", **fields
    )


def entry(response_id: str) -> ResponseEntry:
    return ResponseEntry(
        response_id=response_id, tenant=TENANT, tier="cold", scope=SCOPE, context_fingerprint="c", question="q"
    )


def reflection(seed: int = 1, text: str = "a lesson") -> Reflection:
    return Reflection(
        tenant=TENANT,
        scope=SCOPE,
        kind="reflect",
        text=text,
        vector=unit_vector(seed).tolist(),
        source_episode_ids=["e"],
    )


def observable(found: Episode | None) -> tuple[object, ...]:
    """What a caller sees of a stored episode (identity, content, labels and counters)."""
    assert found is not None
    return (found.id, found.answer, found.rating, found.verifier, found.hits)


def every_way_out(store: MemoryStore, episode_id: str) -> list[Episode]:
    """The stored episode through each read of the protocol."""
    got = store.get(TENANT, episode_id)
    assert got is not None
    [near] = store.search(TENANT, SCOPE, unit_vector(1), 1)
    [listed] = store.list_episodes(TENANT)
    return [got, near.episode, listed]


# -- copies ------------------------------------------------------------------------------------


def test_a_returned_episode_cannot_change_the_store(stores: Stores) -> None:
    store = stores.open()
    given = episode()
    stored = store.add(given, unit_vector(1))
    before = observable(store.get(TENANT, stored.id))
    given.answer, given.rating = "changed after add", "bad"  # what the caller passed in is still its own
    again = store.add(episode(), unit_vector(1))  # the same content: the stored one comes back
    assert again.id == stored.id
    again.rating = "bad"
    for found in every_way_out(store, stored.id):
        found.answer, found.rating, found.verifier, found.hits = "mutated", "bad", "fail", 99

    assert [observable(found) for found in every_way_out(store, stored.id)] == [before] * 3
    store = stores.restart()
    assert [observable(found) for found in every_way_out(store, stored.id)] == [before] * 3

    changed = store.get(TENANT, stored.id)
    assert changed is not None
    changed.rating = "good"
    store.update(changed)
    assert store.get(TENANT, stored.id).rating == "good"  # type: ignore[union-attr]
    changed.rating = "bad"  # the copy passed to update is still the caller's
    assert [found.rating for found in every_way_out(store, stored.id)] == ["good"] * 3
    store = stores.restart()
    assert [found.rating for found in every_way_out(store, stored.id)] == ["good"] * 3


def test_updating_a_stale_copy_keeps_the_hits_recorded_since_it_was_read(stores: Stores) -> None:
    store = stores.open()
    stored = store.add(episode(), unit_vector(1))
    copy = store.get(TENANT, stored.id)
    assert copy is not None
    store.record_hit(TENANT, stored.id)
    store.record_hit(TENANT, stored.id)
    copy.rating = "good"
    store.update(copy)
    found = store.get(TENANT, stored.id)
    assert found is not None and (found.rating, found.hits) == ("good", 2)


def settled(store: MemoryStore, events: int) -> None:
    """Wait until a Redis replica applied `events` feed entries (they refresh the mirror from Redis)."""
    if isinstance(store, RedisMemory):
        deadline = time.monotonic() + 5
        while store.feed_events < events:
            assert time.monotonic() < deadline, "the change feed did not reach the replica"
            time.sleep(0.002)


def test_an_update_naming_another_tenant_changes_nothing(stores: Stores) -> None:
    store = stores.open()
    stored = store.add(episode(), unit_vector(1))
    settled(store, 1)  # else the add's feed entry could refresh the mirror and hide a bad update
    forged = stored.model_copy(update={"tenant": "globex", "rating": "bad"})
    store.update(forged)
    assert store.get(TENANT, stored.id).rating is None  # type: ignore[union-attr]


def test_a_returned_reflection_cannot_change_the_store(tmp_path: Path) -> None:
    path = tmp_path / "reflections.sqlite3"
    store = ReflectionStore(path, DIM)
    given = reflection()
    store.put(given)
    given.text = "changed after put"
    given.source_episode_ids.append("changed after put")

    def every_way_out(store: ReflectionStore) -> list[Reflection]:
        got = store.get(TENANT, given.id)
        assert got is not None
        [(near, _)] = store.nearest(TENANT, SCOPE, "reflect", unit_vector(1), 1)
        [listed] = store.list_reflections(TENANT)
        return [got, near, listed]

    for found in every_way_out(store):
        found.text = "mutated"
        found.absorb(unit_vector(2), "mutated")  # what the writer does to a cluster
    seen = [(r.text, r.members, r.source_episode_ids, r.vector) for r in every_way_out(store)]
    assert seen == [("a lesson", 1, ["e"], pytest.approx(unit_vector(1).tolist()))] * 3
    store.close()
    store = ReflectionStore(path, DIM)
    assert [r.text for r in every_way_out(store)] == ["a lesson"] * 3
    store.close()


# -- threads -----------------------------------------------------------------------------------


def twins_of(cls: type) -> set[str]:
    """The async twins a class offers: coroutine methods named `a` + a sync method's name."""
    return {
        name
        for name, _ in inspect.getmembers(cls, inspect.iscoroutinefunction)
        if name.startswith("a") and callable(getattr(cls, name[1:], None))
    }


def run_twins(store: object, calls: list[tuple[str, tuple[Any, ...]]]) -> tuple[int, dict[str, set[int]]]:
    """Await each twin (in order) with its sync method wrapped to note the thread it runs on.

    Returns the event loop's thread and, per sync method, the threads it ran on.
    """
    ran_on: dict[str, set[int]] = {}

    def noting(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(method)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            ran_on.setdefault(name, set()).add(threading.get_ident())
            return method(*args, **kwargs)

        return wrapper

    for name, _ in calls:
        setattr(store, name, noting(name, getattr(store, name)))

    async def main() -> int:
        for name, args in calls:
            await getattr(store, "a" + name)(*args)
        return threading.get_ident()

    return asyncio.run(main()), ran_on


def assert_off_the_loop(
    loop_thread: int, ran_on: dict[str, set[int]], calls: list[tuple[str, tuple[Any, ...]]]
) -> None:
    assert set(ran_on) == {name for name, _ in calls}  # every twin reached its sync method
    on_the_loop = sorted(name for name, threads in ran_on.items() if loop_thread in threads)
    assert on_the_loop == []


def test_async_twins_do_not_run_on_the_event_loop_thread(stores: Stores) -> None:
    store = stores.open()
    stored, vector = episode(), unit_vector(1)
    calls: list[tuple[str, tuple[Any, ...]]] = [
        ("add", (stored, vector)),
        ("search", (TENANT, SCOPE, vector, 3)),
        ("get", (TENANT, stored.id)),
        ("record_hit", (TENANT, stored.id)),
        ("update", (stored,)),
        ("list_episodes", (TENANT, 10, 0)),
        ("count", (TENANT,)),
        ("tenants", ()),
        ("health", ()),
        ("delete", (TENANT, stored.id)),
        ("delete_tenant", (TENANT,)),
    ]
    assert {"a" + name for name, _ in calls} == twins_of(MemoryStore) == twins_of(type(store))
    loop_thread, ran_on = run_twins(store, calls)
    assert_off_the_loop(loop_thread, ran_on, calls)


def test_reflection_and_response_log_twins_do_not_run_on_the_event_loop_thread(tmp_path: Path) -> None:
    reflections = ReflectionStore(tmp_path / "reflections.sqlite3", DIM)
    lesson = reflection()
    reflection_calls: list[tuple[str, tuple[Any, ...]]] = [
        ("put", (lesson,)),
        ("nearest", (TENANT, SCOPE, "reflect", unit_vector(1), 1)),
        ("get", (TENANT, lesson.id)),
        ("list_reflections", (TENANT, 10, 0, None, True)),
        ("count", (TENANT, True)),
        ("tenants", ()),
        ("delete", (TENANT, lesson.id)),
        ("delete_tenant", (TENANT,)),
    ]
    responses = ResponseLog(tmp_path / "responses.sqlite3")
    response_calls: list[tuple[str, tuple[Any, ...]]] = [
        ("record", (entry("r1"),)),
        ("prune", ()),
        ("get", (TENANT, "r1")),
        ("attach_episode", (TENANT, "r1", "ep_1")),
        ("set_rating", (TENANT, "r1", "good")),
        ("note_scope", (TENANT, SCOPE, "model", [{"role": "system", "content": "be brief"}])),
        ("scopes", (TENANT,)),
        ("count", ()),
        ("delete_tenant", (TENANT,)),
    ]
    for store, calls in ((reflections, reflection_calls), (responses, response_calls)):
        assert {"a" + name for name, _ in calls} == twins_of(type(store))
        loop_thread, ran_on = run_twins(store, calls)
        assert_off_the_loop(loop_thread, ran_on, calls)
        store.close()


def test_async_twins_return_what_the_sync_methods_return(tmp_path: Path) -> None:
    memory = LocalMemory(tmp_path / "episodes.sqlite3", DIM)
    responses = ResponseLog(tmp_path / "responses.sqlite3")
    reflections = ReflectionStore(tmp_path / "reflections.sqlite3", DIM)

    async def main() -> None:
        stored = await memory.aadd(episode(), unit_vector(1))
        [near] = await memory.asearch(TENANT, SCOPE, unit_vector(1), 1)
        assert near.episode == await memory.aget(TENANT, stored.id) == memory.get(TENANT, stored.id)
        assert await memory.acount(TENANT) == 1 and await memory.atenants() == [TENANT]
        await responses.arecord(entry("r1"))
        assert (await responses.aset_rating(TENANT, "r1", "bad")).rating == "bad"  # type: ignore[union-attr]
        await responses.anote_scope(TENANT, SCOPE, "m", [])
        await responses.anote_scope(TENANT, SCOPE, "m", [])  # known: answered without a thread
        assert list(await responses.ascopes(TENANT)) == [SCOPE]
        lesson = await reflections.aput(reflection())
        assert (await reflections.anearest(TENANT, SCOPE, "reflect", unit_vector(1)))[0][0] == lesson
        assert await reflections.acount(TENANT) == 1

    asyncio.run(main())
    for store in (memory, responses, reflections):
        store.close()


# -- the event loop ----------------------------------------------------------------------------


async def max_lag_while(work: Coroutine[Any, Any, Any]) -> tuple[float, float]:
    """Run `work` while a ticker on the loop sleeps TICK_S at a time; (max lag, seconds of work).

    Lag is how much later than asked a tick woke up: a loop blocked for 0.3 s shows ~0.3 s.
    """
    lags: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            asked = time.perf_counter()
            await asyncio.sleep(TICK_S)
            lags.append(time.perf_counter() - asked - TICK_S)

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)  # let the ticker start
    started = time.perf_counter()
    await work
    took = time.perf_counter() - started
    done.set()
    await ticking
    return max(lags), took


class HeldWriteLock:
    """Another connection holds the SQLite write lock for LOCK_HELD_S, as a second process might."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.taken = threading.Event()
        self.thread = threading.Thread(target=self._hold, daemon=True)

    def _hold(self) -> None:
        other = sqlite3.connect(str(self.path), isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        self.taken.set()
        time.sleep(LOCK_HELD_S)
        other.execute("COMMIT")
        other.close()

    def __enter__(self) -> HeldWriteLock:
        self.thread.start()
        assert self.taken.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(5)


def test_the_ticker_notices_a_store_call_made_on_the_loop(tmp_path: Path) -> None:
    """The measurement below can fail: the same locked write, called sync on the loop, stalls it."""
    responses = ResponseLog(tmp_path / "responses.sqlite3")

    async def on_the_loop() -> None:
        responses.record(entry("r1"))

    with HeldWriteLock(responses.path):
        lag, took = asyncio.run(max_lag_while(on_the_loop()))
    responses.close()
    assert took >= LOCK_HELD_S * 0.8 and lag >= LOCK_HELD_S * 0.5


def test_a_slow_store_does_not_stall_the_event_loop(tmp_path: Path) -> None:
    memory = LocalMemory(tmp_path / "episodes.sqlite3", DIM)
    reflections = ReflectionStore(tmp_path / "reflections.sqlite3", DIM)
    responses = ResponseLog(tmp_path / "responses.sqlite3")
    slow_writes: list[tuple[Path, Callable[[], Coroutine[Any, Any, Any]]]] = [
        (memory.path, lambda: memory.aadd(episode(), unit_vector(1))),
        (reflections.path, lambda: reflections.aput(reflection())),
        (responses.path, lambda: responses.arecord(entry("r1"))),
    ]
    for path, write in slow_writes:
        with HeldWriteLock(path):
            lag, took = asyncio.run(max_lag_while(write()))
        assert took >= LOCK_HELD_S * 0.8, f"{path.name}: the write did not wait for the lock"
        assert lag < MAX_LAG_S, f"{path.name}: the loop stalled {lag * 1000:.1f} ms"
    assert memory.count(TENANT) == reflections.count(TENANT) == responses.count() == 1
    for store in (memory, reflections, responses):
        store.close()


def test_a_redis_that_stopped_answering_does_not_stall_the_event_loop(
    redis_server: RedisProcess, tmp_path: Path
) -> None:
    memory = RedisMemory(redis_server.url, DIM, tmp_path / "r", options=RedisOptions(replica_id="r"))
    try:
        redis_server.pause()  # accepts connections, never answers: each call waits out its timeout
        lag, took = asyncio.run(max_lag_while(memory.aadd(episode(), unit_vector(1))))
        assert took >= memory.options.socket_timeout_s * 0.8, "the write did not wait for Redis"
        assert lag < MAX_LAG_S, f"the loop stalled {lag * 1000:.1f} ms"
        assert memory.degraded and memory.spool.depth == 1  # spooled, for the replay when Redis is back
    finally:
        redis_server.resume()
        memory.close()


def test_hits_noted_while_the_feed_thread_refreshes_the_entry_are_not_lost() -> None:
    """The request path notes hits in the mirror while the feed thread re-puts the same entry."""
    mirror, stored, vector = Mirror(DIM), episode(), unit_vector(1)
    mirror.put(stored.id, MirrorEntry.of(stored), vector)
    stale = MirrorEntry.of(stored)  # as fetched from Redis before any hit
    hits = 50_000
    stop, refreshing = threading.Event(), threading.Event()

    def feed() -> None:
        while not stop.is_set():
            mirror.put(stored.id, stale, vector)
            refreshing.set()

    refresher = threading.Thread(target=feed)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so that an unlocked read-modify-write loses a hit
    refresher.start()
    try:
        assert refreshing.wait(5)
        for _ in range(hits):
            mirror.note_hit(stored.id, time.time())
    finally:
        stop.set()
        refresher.join()
        sys.setswitchinterval(interval)
    held = mirror.get(stored.id)
    assert held is not None
    assert held.hits == hits, f"{hits - held.hits} of {hits} hits lost"
