"""ScopeIndex: exact search for small scopes, IVF above the threshold, same API and results."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from memory_store.vector_index import ScopeIndex, nlist_for

DIM = 32


def unit(rows: int, seed: int) -> np.ndarray:
    matrix = np.random.default_rng(seed).standard_normal((rows, DIM)).astype(np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def near(vector: np.ndarray, seed: int, noise: float = 0.15) -> np.ndarray:
    return vector + noise * np.random.default_rng(seed).standard_normal(DIM).astype(np.float32) / np.sqrt(DIM)


def test_small_scopes_search_exactly() -> None:
    index = ScopeIndex(DIM, ann_threshold=1000)
    vectors = unit(300, 1)
    index.add_many([f"e{i}" for i in range(300)], vectors * 3.0)  # normalised on the way in
    assert not index.is_ann
    for i in range(0, 300, 37):
        query = near(vectors[i], i)
        expected = np.argsort(-(vectors @ (query / np.linalg.norm(query))))[:5]
        found = index.search(query, 5)
        assert [f"e{j}" for j in expected] == [episode_id for episode_id, _ in found]
        assert found[0][1] == pytest.approx(float(vectors[i] @ (query / np.linalg.norm(query))), abs=1e-5)


def test_a_large_scope_switches_to_ann_and_still_finds_near_duplicates() -> None:
    index = ScopeIndex(DIM, ann_threshold=2000)
    vectors = unit(6000, 2)
    for start in range(0, 6000, 500):  # grows past the threshold through ordinary adds
        index.add_many([f"e{i}" for i in range(start, start + 500)], vectors[start : start + 500])
    assert index.is_ann and len(index) == 6000
    hits = 0
    for i in range(0, 6000, 50):
        query = near(vectors[i], i)
        found = index.search(query, 3)
        hits += found[0][0] == f"e{i}"
        best = int(found[0][0][1:])
        exact = float(vectors[best] @ (query / np.linalg.norm(query)))
        assert found[0][1] == pytest.approx(exact, abs=2e-3)  # float16 cells: cosines within 1e-3
    assert hits / 120 >= 0.97


def test_removal_works_before_and_after_the_switch() -> None:
    index = ScopeIndex(DIM, ann_threshold=500)
    vectors = unit(1500, 3)
    index.add_many([f"e{i}" for i in range(400)], vectors[:400])
    assert index.remove("e7") and not index.remove("e7")
    index.add_many([f"e{i}" for i in range(400, 1500)], vectors[400:])
    assert index.is_ann
    assert index.remove("e900")
    assert len(index) == 1498
    assert all(episode_id not in ("e7", "e900") for episode_id, _ in index.search(vectors[7], 10))
    assert all(episode_id not in ("e7", "e900") for episode_id, _ in index.search(vectors[900], 10))
    index.add("e7", vectors[7])  # an id can come back after removal
    assert index.search(vectors[7], 1)[0][0] == "e7"


def test_adding_the_same_id_twice_keeps_one() -> None:
    index = ScopeIndex(DIM, ann_threshold=100)
    vectors = unit(200, 4)
    index.add_many([f"e{i}" for i in range(200)], vectors)
    index.add_many([f"e{i}" for i in range(200)], vectors)
    assert len(index) == 200
    found = [episode_id for episode_id, _ in index.search(vectors[0], 20)]
    assert len(found) == len(set(found)) and found[0] == "e0"


def test_regrowing_cells_does_not_block_or_lose_concurrent_writes() -> None:
    index = ScopeIndex(DIM, ann_threshold=500, regrow_factor=2)
    total = 12_000
    vectors = unit(total, 5)
    index.add_many([f"e{i}" for i in range(600)], vectors[:600])
    first_cells = nlist_for(600)
    stop = threading.Event()
    searched: list[str] = []
    removed: list[str] = []

    def search_meanwhile() -> None:
        while not stop.is_set():
            searched.append(index.search(vectors[1], 1)[0][0])

    def remove_meanwhile() -> None:  # writes from another thread land in the journal during a regrow
        for i in range(100, 400):
            if index.remove(f"e{i}"):
                removed.append(f"e{i}")

    threads = [threading.Thread(target=search_meanwhile), threading.Thread(target=remove_meanwhile)]
    for thread in threads:
        thread.start()
    for start in range(600, total, 100):
        index.add_many([f"e{i}" for i in range(start, start + 100)], vectors[start : start + 100])
    threads[1].join()
    stop.set()
    threads[0].join()
    assert set(searched) == {"e1"}
    assert index._ivf is not None and index._ivf.nlist > first_cells
    assert len(index) == total - len(removed) == total - 300
    assert index.search(vectors[total - 1], 1)[0][0] == f"e{total - 1}"
    assert all(found not in removed for i in range(100, 400, 7) for found, _ in index.search(vectors[i], 3))


def test_cell_count_grows_with_the_scope() -> None:
    assert nlist_for(20_000) == 128
    assert nlist_for(100_000) == 256
    assert nlist_for(1_000_000) == 1024
    assert nlist_for(10) == 64
