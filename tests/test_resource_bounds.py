"""Huge questions and throwaway scopes must not grow the proxy's memory past its limits.

The end-to-end checks are the fast versions of `bench/memory_bounds.py` (which runs the proxy as
its own process): here the proxy runs in the test process, so its RSS is this process's.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from bench import procs
from bench.memory_bounds import (
    MB,
    ask_many,
    huge_question,
    measure_scopes,
    ordinary_question,
    proxy_process,
    rss_bytes,
    settle,
)
from memory_store.embedding.embedder import MAX_ENCODED_CHARS, BatchingEmbedder, MiniLMEncoder, TextEncoder
from memory_store.embedding.onnx_encoder import MAX_TOKENS, OnnxMiniLMEncoder
from memory_store.episode import MAX_QUESTION_CHARS, Episode
from memory_store.limits import MemoryLimits
from memory_store.local_store import LocalMemory
from memory_store.redis.mirror import Mirror, MirrorEntry
from memory_store.vector_index import ScopeIndex
from proxy.learning.response_log import ResponseEntry, ResponseLog
from tests.conftest import ProxyFactory, ServerThread, stub_url

pytestmark = pytest.mark.timeout(600)

DIM = 384


def own_rss() -> int:
    return rss_bytes(os.getpid())


def vector(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


def episode(scope: str, question: str = "How do I reset my password?", tenant: str = "acme") -> Episode:
    return Episode(tenant=tenant, scope=scope, question=question, context_fingerprint="ctx", answer="Use the link.")


def entry(tenant: str, response_id: str, question: str = "q") -> ResponseEntry:
    return ResponseEntry(
        response_id=response_id, tenant=tenant, tier="cold", scope="s", context_fingerprint="c", question=question
    )


# -- end to end ------------------------------------------------------------------------------


def test_a_huge_question_does_not_grow_memory_past_its_caps(
    start_proxy: ProxyFactory, stub_backend: ServerThread, tmp_path: Path
) -> None:
    """The bar is 300 MB for 30 questions of 1.5 MB (bench/memory_bounds.py); 10 get a third of it.
    Before the caps one such question cost ~21 MB: the tokenizer's 4,100 overflow windows."""
    data_dir = tmp_path / "memory"
    proxy = start_proxy(stub_url(stub_backend), data_dir=data_dir, limits={"capacity_per_tenant": 50})
    ask_many(proxy.url + "/v1", [(ordinary_question(i), None) for i in range(5)], workers=1)
    proxy.settle()
    before = settle(own_rss)
    questions = [huge_question(index) for index in range(10)]
    for question in questions:
        ask_many(proxy.url + "/v1", [(question, None)], workers=1)
        stub_backend.app.state.bodies.clear()  # the stub keeps every body it got
    proxy.settle()
    growth = settle(own_rss) - before
    assert growth < 100 * MB, f"RSS grew {growth / MB:.0f} MB over 10 questions of 1.5 MB"

    memory = proxy.container.memory
    assert memory is not None
    kept = [e for e in memory.list_episodes("local", limit=100) if e.question_capped]
    assert len(kept) == 10
    digests = {hashlib.sha256(q.encode()).hexdigest() for q in questions}
    assert {e.question_digest for e in kept} == digests
    assert all(len(e.question) == MAX_QUESTION_CHARS for e in kept)
    assert all(e.asks(q) for e, q in zip(sorted(kept, key=lambda e: e.created_at), questions, strict=True))
    embedder = proxy.container.embedder
    assert embedder is not None and embedder.cached_bytes < 100 * 2 * 1024
    # 10 x 1.5 MB, twice (episodes and response log), was 30 MB on disk; the caps leave ~10 x 8 KB each.
    on_disk = sum(path.stat().st_size for path in data_dir.rglob("*.sqlite3*"))
    assert on_disk < 8 * MB, f"{on_disk / MB:.1f} MB of SQLite files"


def test_evicted_scopes_leave_nothing_behind(tmp_path: Path) -> None:
    """The bar is 5 MB for 8,000 scopes evicted (bench/memory_bounds.py): 2,000 get a quarter of it,
    plus 1 MB for the page-sized steps of RSS. Before, each cost ~3 KB: an empty FAISS index and
    more. A proxy process of its own: in this one, the test's client and stub would blur 1 MB."""
    with procs.stub_backend(tmp_path) as backend, proxy_process(backend, tmp_path, capacity=20) as (url, pid):
        result = measure_scopes(url, lambda: rss_bytes(pid), 2000, warmup=1500)  # page caches full
    assert result["growth_mb"] < 2.25, result


# -- stores ----------------------------------------------------------------------------------


def test_a_scope_index_goes_with_its_last_episode(tmp_path: Path) -> None:
    memory = LocalMemory(tmp_path / "episodes.sqlite3", DIM, limits=MemoryLimits(capacity_per_tenant=3))
    try:
        for i in range(100):
            memory.add(episode(f"scope-{i}"), vector(i))
        assert memory.count("acme") == 3 and memory.scope_count == 3
        for held in memory.list_episodes("acme"):
            assert memory.delete("acme", held.id)
        assert memory.scope_count == 0 and memory.tenants() == []
        memory.add(episode("scope-0"), vector(0))  # a dropped scope comes back on its next episode
        assert [n.episode.scope for n in memory.search("acme", "scope-0", vector(0), 1)] == ["scope-0"]
    finally:
        memory.close()


def test_a_mirror_scope_index_goes_with_its_last_entry() -> None:
    mirror = Mirror(DIM)
    stored = [episode(f"scope-{i}") for i in range(50)]
    for i, item in enumerate(stored):
        mirror.put(item.id, MirrorEntry.of(item), vector(i))
    assert mirror.scope_count == 50
    for item in stored[1:]:
        mirror.remove(item.id)
    assert mirror.scope_count == 1 and mirror.tenants() == ["acme"]
    mirror.remove(stored[0].id)
    assert mirror.scope_count == 0 and mirror.tenants() == [] and mirror.count("acme") == 0


def test_a_churning_scope_reclaims_the_slots_of_removed_rows() -> None:
    index = ScopeIndex(DIM)
    for i in range(20_000):
        index.add(f"ep-{i}", vector(i))
        if i >= 10:
            assert index.remove(f"ep-{i - 10}")
    assert len(index) == 10
    assert index.slots < 2 * 10 + 1100  # without compaction: one slot for each of the 20,000 rows
    found = index.search(vector(19_995), 3)
    assert found[0][0] == "ep-19995" and found[0][1] == pytest.approx(1.0, abs=1e-5)
    assert {episode_id for episode_id, _ in index.search(vector(0), 10)} == {f"ep-{i}" for i in range(19_990, 20_000)}


# -- what is embedded and stored of a long question --------------------------------------------


def test_a_capped_question_is_reused_only_for_its_full_text() -> None:
    full = huge_question(1, 20_000)
    twin = full[:15_000] + huge_question(2, 5_000)  # the same kept beginning, another question
    capped, other = episode("s", full), episode("s", twin)
    assert len(capped.question) == MAX_QUESTION_CHARS and capped.question_capped
    assert capped.question_digest == hashlib.sha256(full.encode()).hexdigest()
    assert capped.asks(full)
    assert not capped.asks(twin) and not capped.asks(capped.question) and not capped.asks(full[:-1])
    assert capped.content_key != other.content_key  # both are kept: they are different questions
    again = Episode.model_validate_json(capped.model_dump_json())
    assert again.question == capped.question and again.question_digest == capped.question_digest

    short = episode("s", "How do I reset my password?")
    assert not short.question_capped and short.question_digest is None
    assert short.asks("How do I reset my password?") and not short.asks("how do I reset my password")
    assert (
        short.content_key
        == hashlib.sha256(
            "\x1f".join(["acme", "s", "ctx", "How do I reset my password?", "Use the link."]).encode()
        ).hexdigest()[:32]
    )  # unchanged for every question under the cap


@pytest.fixture(scope="module")
def onnx_fp32(tmp_path_factory: pytest.TempPathFactory) -> OnnxMiniLMEncoder:
    return OnnxMiniLMEncoder(cache_dir=tmp_path_factory.mktemp("onnx-cache"))


def test_a_huge_text_is_embedded_as_its_first_256_tokens_without_overflow_windows(
    onnx_fp32: OnnxMiniLMEncoder, encoder: MiniLMEncoder
) -> None:
    long = " ".join(f"step {i}: open the settings page, choose billing, then press save." for i in range(300))
    huge = huge_question(3)
    ids, mask = onnx_fp32.token_batch([huge, "short"])
    assert ids.shape == (2, MAX_TOKENS) and int(mask[1].sum()) == 3  # [CLS] short [SEP]
    started = time.perf_counter()
    got = onnx_fp32.encode([huge, long])
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0, f"{elapsed:.2f} s for 1.5 MB: the whole text was tokenized"
    np.testing.assert_allclose(got[0], onnx_fp32.encode([huge[:MAX_ENCODED_CHARS]])[0], atol=1e-6)
    # The character cut keeps every one of the 256 tokens: the same vector as sentence-transformers.
    reference = encoder.encode([huge, long])
    assert float(got[0] @ reference[0]) > 0.999 and float(got[1] @ reference[1]) > 0.999


def test_the_embedding_cache_is_bounded_by_bytes_and_holds_no_text(proxy_encoder: TextEncoder) -> None:
    budget = 20 * (DIM * 4 + 16 + 240)  # room for 20 entries
    embedder = BatchingEmbedder(proxy_encoder, cache_bytes=budget)

    async def embed_all() -> list[np.ndarray]:
        return [await embedder.embed(f"question number {i} about {huge_question(i, 100)}") for i in range(60)]

    try:
        vectors = asyncio.run(embed_all())
        assert embedder.cached_bytes <= budget and len(embedder) == 20
        huge = huge_question(4)
        first = asyncio.run(embedder.embed(huge))
        again = asyncio.run(embedder.embed(huge[:MAX_QUESTION_CHARS] + " a different tail past the cap"))
        assert again is first  # only the capped text is embedded, so it is one cache entry
        assert all(isinstance(key, bytes) and len(key) == 16 for key in embedder._cache)
        assert vectors[-1].base is None  # a copy, not a view that would pin its whole batch
    finally:
        embedder.close()


# -- the response log ------------------------------------------------------------------------


def test_two_tenants_with_the_same_response_id_keep_their_own_rows(tmp_path: Path) -> None:
    log = ResponseLog(tmp_path / "responses.sqlite3")
    try:
        log.record(entry("acme", "chatcmpl-1", "acme's question"))
        log.record(entry("globex", "chatcmpl-1", "globex's question"))  # a backend repeating its ids
        assert log.count() == 2
        assert log.get("acme", "chatcmpl-1").question == "acme's question"  # type: ignore[union-attr]
        assert log.get("globex", "chatcmpl-1").question == "globex's question"  # type: ignore[union-attr]

        assert log.set_rating("acme", "chatcmpl-1", "bad").rating == "bad"  # type: ignore[union-attr]
        attached = log.attach_episode("globex", "chatcmpl-1", "ep_globex")
        assert attached is not None and attached.episode_id == "ep_globex" and attached.rating is None
        acme = log.get("acme", "chatcmpl-1")
        assert acme is not None and acme.episode_id is None and acme.rating == "bad"
        assert log.attach_episode("initech", "chatcmpl-1", "ep_x") is None
        assert log.delete_tenant("globex") == 1 and log.get("acme", "chatcmpl-1") is not None
    finally:
        log.close()


def test_a_response_log_keyed_by_id_alone_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "responses.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE responses (response_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, body TEXT NOT NULL,"
        " episode_id TEXT, rating TEXT, created_at REAL NOT NULL);"
    )
    body = entry("acme", "chatcmpl-old", "kept across the upgrade").model_dump_json(exclude={"episode_id", "rating"})
    old.execute("INSERT INTO responses VALUES (?, ?, ?, ?, ?, ?)", ("chatcmpl-old", "acme", body, "ep_1", "good", 1.0))
    old.commit()
    old.close()
    log = ResponseLog(path)
    try:
        moved = log.get("acme", "chatcmpl-old")
        assert moved is not None and moved.question == "kept across the upgrade"
        assert (moved.episode_id, moved.rating) == ("ep_1", "good")
    finally:
        log.close()
    tables = {row[0] for row in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "responses" not in tables
    ResponseLog(path).close()  # a second open finds nothing left to migrate


def test_the_response_log_keeps_a_capped_question_and_its_digest(tmp_path: Path) -> None:
    log = ResponseLog(tmp_path / "responses.sqlite3", max_question_chars=1000)
    try:
        full = huge_question(5, 50_000)
        log.record(entry("acme", "chatcmpl-long", full))
        kept = log.get("acme", "chatcmpl-long")
        assert kept is not None and kept.question == full[:1000]
        assert kept.question_digest == hashlib.sha256(full.encode()).hexdigest()
        log.record(entry("acme", "chatcmpl-short", "short"))
        assert log.get("acme", "chatcmpl-short").question_digest is None  # type: ignore[union-attr]
    finally:
        log.close()


def test_the_scopes_known_to_the_response_log_are_bounded(tmp_path: Path) -> None:
    log = ResponseLog(tmp_path / "responses.sqlite3", known_scopes=100)
    try:
        for i in range(1000):
            log.note_scope("acme", f"scope-{i}", "stub", [{"role": "system", "content": "Be brief."}])
        assert log.known_scope_count == 100
        assert len(log.scopes("acme")) == 1000  # forgetting one only costs a no-op insert later
        log.note_scope("acme", "scope-0", "other", [])
        assert log.scopes("acme")["scope-0"].model == "stub"
    finally:
        log.close()
