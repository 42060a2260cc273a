"""In-process nearest-neighbour search over one scope's episode vectors (FAISS, cosine)."""

from __future__ import annotations

import threading

import faiss
import numpy as np


class ScopeIndex:
    """Exact inner-product search over L2-normalised vectors, with removal.

    Vectors are normalised on the way in, so inner product is cosine similarity.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._ids: dict[int, str] = {}
        self._rows: dict[str, int] = {}
        self._next = 1
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, episode_id: str, vector: np.ndarray) -> None:
        self.add_many([episode_id], vector.reshape(1, -1))

    def add_many(self, episode_ids: list[str], vectors: np.ndarray) -> None:
        if not episode_ids:
            return
        matrix = _normalised(vectors)
        with self._lock:
            rows = []
            keep = []
            for i, episode_id in enumerate(episode_ids):
                if episode_id in self._rows:
                    continue
                row = self._next
                self._next += 1
                self._ids[row] = episode_id
                self._rows[episode_id] = row
                rows.append(row)
                keep.append(i)
            if rows:
                self._index.add_with_ids(matrix[keep], np.asarray(rows, dtype=np.int64))

    def remove(self, episode_id: str) -> bool:
        with self._lock:
            row = self._rows.pop(episode_id, None)
            if row is None:
                return False
            del self._ids[row]
            self._index.remove_ids(np.asarray([row], dtype=np.int64))
            return True

    def search(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        with self._lock:
            if not self._rows:
                return []
            scores, rows = self._index.search(_normalised(vector.reshape(1, -1)), min(k, len(self._rows)))
            return [
                (self._ids[int(row)], float(score))
                for row, score in zip(rows[0], scores[0], strict=True)
                if row >= 0 and int(row) in self._ids
            ]


def _normalised(vectors: np.ndarray) -> np.ndarray:
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return matrix / norms
