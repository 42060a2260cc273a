"""Throwaway scopes must not leave per-scope structures behind in the lessons (issue 11).

A client varying `seed` makes a scope per request: each scope a learning mode touches gets a
cluster (a reflection), an index of the store and a lock of the writer. When the scope's
reflections are deleted, the index goes; when no writer is at work on a scope, its lock goes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pytest

from memory_store.episode import Episode
from memory_store.reflections import Reflection, ReflectionKind, ReflectionStore
from proxy.learning.memory_modes import MemoryModes
from proxy.learning.reflection_writer import ReflectionCost, ReflectionWriter

DIM = 16
KINDS: tuple[ReflectionKind, ...] = get_args(ReflectionKind)
LESSON = "Check the units before adding the totals."


def vector(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


def episode(scope: str, i: int = 0, tenant: str = "acme") -> Episode:
    return Episode(tenant=tenant, scope=scope, question=f"q{i}", context_fingerprint="ctx", answer=f"a{i}")


def lesson(scope: str, seed: int, tenant: str = "acme") -> Reflection:
    return Reflection(tenant=tenant, scope=scope, kind="reflect", text=LESSON, vector=vector(seed).tolist())


class LessonBackend:
    """Answers every lesson request; fails every third one; holds them all while `gate` is clear."""

    def __init__(self) -> None:
        self.calls = 0
        self.in_flight = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def complete(self, body: dict[str, Any]) -> tuple[dict[str, Any], float]:
        self.calls += 1
        self.in_flight += 1
        try:
            await self.gate.wait()
        finally:
            self.in_flight -= 1
        if self.calls % 3 == 0:
            raise RuntimeError("backend down")
        usage = {"prompt_tokens": 20, "completion_tokens": 9}
        return {"choices": [{"message": {"content": LESSON}, "finish_reason": "stop"}], "usage": usage}, 0.01


class NoEpisodes:
    """A memory whose episodes are all gone (evicted): a cluster's other members are not found."""

    async def aget(self, tenant: str, episode_id: str) -> Episode | None:
        return None


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ReflectionStore]:
    reflections = ReflectionStore(tmp_path / "reflections.sqlite3", DIM)
    yield reflections
    reflections.close()


def writer_for(store: ReflectionStore, backend: LessonBackend, costs: list[ReflectionCost]) -> ReflectionWriter:
    modes = MemoryModes(min_cluster_size=1)
    return ReflectionWriter(backend, NoEpisodes(), store, modes, costs.append)  # type: ignore[arg-type]


def test_reflection_scopes_do_not_leak(store: ReflectionStore, tmp_path: Path) -> None:
    backend, costs = LessonBackend(), []
    writer = writer_for(store, backend, costs)
    scopes = 300

    async def learn_everywhere() -> None:
        scoped = [(kind, episode(f"scope-{i}", i), vector(i)) for i in range(scopes) for kind in KINDS]
        await asyncio.gather(*(writer.learn(kind, item, v, None, "new") for kind, item, v in scoped))

    asyncio.run(learn_everywhere())
    assert writer.lock_count == 0
    assert store.index_count == scopes * len(KINDS)
    assert backend.calls == scopes * 2  # reflect writes nothing for a good answer; the other kinds do
    assert store.count("acme", lessons_only=False) == scopes * len(KINDS) and store.count("acme") > 0

    for reflection in store.list_reflections("acme", limit=10_000, lessons_only=False):
        assert store.delete("acme", reflection.id)
    assert store.index_count == 0 and store.count(lessons_only=False) == 0 and store.tenants() == []
    reopened = ReflectionStore(store.path, DIM)
    try:
        assert reopened.index_count == 0
    finally:
        reopened.close()

    asyncio.run(writer.learn("reflect_update", episode("scope-0"), vector(0), None, "new"))
    [again] = store.nearest("acme", "scope-0", "reflect_update", vector(0))  # a dropped scope comes back
    assert again[0].source_episode_ids and store.index_count == 1 and writer.lock_count == 0


def test_a_deleted_tenant_leaves_no_reflection_index(store: ReflectionStore) -> None:
    for i in range(50):
        for tenant in ("acme", "globex"):
            store.put(lesson(f"scope-{i}", i, tenant))
    assert store.index_count == 100
    assert store.delete_tenant("acme") == 50
    assert store.index_count == 50 and store.tenants() == ["globex"]
    assert store.delete_tenant("globex") == 50 and store.index_count == 0


def test_a_reflection_moved_to_another_scope_leaves_nothing_in_the_old_one(store: ReflectionStore) -> None:
    moving, staying = store.put(lesson("old", 1)), store.put(lesson("kept", 2))
    store.put(moving.model_copy(update={"scope": "new"}))
    assert store.nearest("acme", "old", "reflect", vector(1)) == []
    [(found, _)] = store.nearest("acme", "new", "reflect", vector(1))
    assert found.id == moving.id and found.scope == "new"
    assert store.index_count == 2
    store.put(staying.model_copy(update={"text": "Read the whole question first."}))  # same scope: same index
    assert store.index_count == 2 and store.get("acme", staying.id).text.startswith("Read")  # type: ignore[union-attr]


def test_a_scope_lock_serialises_its_writers_and_goes_with_the_last(store: ReflectionStore) -> None:
    backend, costs = LessonBackend(), []
    writer = writer_for(store, backend, costs)

    async def crowd() -> None:
        backend.gate.clear()
        same_scope = [writer.learn("reflect_update", episode("s", i), vector(7), None, "new") for i in range(8)]
        other_scope = writer.learn("reflect_update", episode("t"), vector(8), None, "new")
        tasks = [asyncio.ensure_future(work) for work in [*same_scope, other_scope]]
        while backend.in_flight < 2:
            await asyncio.sleep(0)
        for _ in range(20):
            await asyncio.sleep(0)
        assert backend.in_flight == 2  # one writer per scope at a time, the others wait
        assert writer.lock_count == 2
        backend.gate.set()
        await asyncio.gather(*tasks)

    asyncio.run(crowd())
    assert writer.lock_count == 0
    [(cluster, _)] = store.nearest("acme", "s", "reflect_update", vector(7))
    assert cluster.members == 8  # concurrent episodes of one scope joined one cluster
    assert len(costs) == backend.calls - backend.calls // 3  # failed calls cost nothing recorded


def test_a_cancelled_writer_leaves_no_lock(store: ReflectionStore) -> None:
    backend, costs = LessonBackend(), []
    writer = writer_for(store, backend, costs)

    async def cancel_midway() -> None:
        backend.gate.clear()
        first = asyncio.ensure_future(writer.learn("reflect_update", episode("s", 1), vector(1), None, "new"))
        waiting = asyncio.ensure_future(writer.learn("reflect_update", episode("s", 2), vector(1), None, "new"))
        while backend.in_flight < 1:
            await asyncio.sleep(0)
        waiting.cancel()
        first.cancel()
        await asyncio.gather(first, waiting, return_exceptions=True)

    asyncio.run(cancel_midway())
    assert writer.lock_count == 0


def test_a_client_varying_its_scope_cannot_grow_the_lessons_without_bound(tmp_path: Path) -> None:
    capped = ReflectionStore(tmp_path / "capped.sqlite3", DIM, capacity_per_tenant=5)
    try:
        for i in range(12):
            made = lesson(f"seed-{i}", i)
            made.updated_at = 1000.0 + i
            capped.put(made)
        capped.put(lesson("seed-0", 99, tenant="globex"))  # another tenant's lessons do not count
        kept = {r.scope for r in capped.list_reflections("acme", limit=100)}
        assert kept == {f"seed-{i}" for i in range(7, 12)}  # the ones updated longest ago went
        assert capped.index_count == 6 and capped.count("globex") == 1
        update = capped.list_reflections("acme", limit=1)[0]
        update.text = "Revised."
        capped.put(update)  # updating a kept lesson evicts nothing
        assert capped.count("acme") == 5
    finally:
        capped.close()
    reopened = ReflectionStore(tmp_path / "capped.sqlite3", DIM, capacity_per_tenant=5)
    try:
        assert reopened.count("acme") == 5 and reopened.index_count == 6
    finally:
        reopened.close()
