"""In-process nearest-neighbour search over one scope's episode vectors (FAISS, cosine).

Small scopes use exact search (a flat index, float32). A scope that grows past
`ann_threshold` vectors switches to an inverted-file index: the vectors are clustered into
`nlist` cells and a query scans only the `nprobe` cells nearest to it, so search cost stays
near-constant as the scope grows to millions. Vectors in the cells are stored as float16
(half the RAM and memory traffic; a cosine is off by ~1e-3 at most, far below the policy's
threshold steps). What IVF can miss is a far neighbour in an unscanned cell, not a
near-duplicate (which lands in or next to the query's own cell). When the scope has grown
`regrow_factor` times past the size the cells were trained on, they are re-clustered off
the search lock.

The heavy matrix work (k-means, assignment) runs in numpy: the BLAS bundled with the
faiss wheel is several times slower. Searches run with one OpenMP thread per calling
thread: on a busy 2-core machine OpenMP spin-waiting makes a single query 20x slower.
"""

from __future__ import annotations

import math
import threading

import faiss
import numpy as np

ANN_THRESHOLD = 20_000
NPROBE = 8
REGROW_FACTOR = 8
_KMEANS_ITERATIONS = 8
_KMEANS_POINTS_PER_CELL = 24
_ASSIGN_CHUNK = 8192
# Removed rows keep an 8-byte slot in the row -> id list; a flat index renumbers its rows once
# the slots outnumber the live rows twice over (plus this slack), so churn cannot grow it.
_COMPACT_SLACK = 1024

_thread_state = threading.local()


def _single_omp_thread() -> None:
    """omp_set_num_threads is per calling thread in libgomp: set it once per thread."""
    if not getattr(_thread_state, "omp_single", False):
        faiss.omp_set_num_threads(1)
        _thread_state.omp_single = True


def nlist_for(size: int) -> int:
    """Cells for an IVF index over `size` vectors: about sqrt(size), a power of two in [64, 1024]."""
    target = math.sqrt(max(size, 1))
    return int(min(1024, max(64, 2 ** round(math.log2(target)))))


class _Ivf:
    """IVF with float16 cells (inner product), our own numpy k-means and assignment, O(1) removal."""

    def __init__(self, dim: int, vectors: np.ndarray, rows: np.ndarray, seed: int = 1234) -> None:
        self.trained_size = len(vectors)
        self.nlist = nlist_for(len(vectors))
        self.centroids = _kmeans(vectors, self.nlist, seed)
        quantizer = faiss.IndexFlatIP(dim)
        quantizer.add(self.centroids)
        self.index = faiss.IndexIVFScalarQuantizer(
            quantizer, dim, self.nlist, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT, False
        )
        self.index.set_direct_map_type(faiss.DirectMap.Hashtable)
        self.index.is_trained = True
        self.quantizer = quantizer  # keep a Python reference: the IVF index does not own it
        self.add(vectors, rows)

    def add(self, vectors: np.ndarray, rows: np.ndarray) -> None:
        for start in range(0, len(vectors), _ASSIGN_CHUNK):
            chunk = np.ascontiguousarray(vectors[start : start + _ASSIGN_CHUNK])
            ids = np.ascontiguousarray(rows[start : start + _ASSIGN_CHUNK], dtype=np.int64)
            cells = np.ascontiguousarray((chunk @ self.centroids.T).argmax(axis=1), dtype=np.int64)
            self.index.add_core(len(chunk), faiss.swig_ptr(chunk), faiss.swig_ptr(ids), faiss.swig_ptr(cells))

    def remove(self, rows: np.ndarray) -> None:
        self.index.remove_ids(np.ascontiguousarray(rows, dtype=np.int64))

    def search(self, query: np.ndarray, k: int, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        self.index.nprobe = min(nprobe, self.nlist)
        return self.index.search(query, k)

    def export(self) -> tuple[np.ndarray, np.ndarray]:
        """All (vectors, rows), copied out of the inverted lists."""
        invlists = self.index.invlists
        dim = self.index.d
        vectors, rows = [], []
        for cell in range(self.nlist):
            size = invlists.list_size(cell)
            if not size:
                continue
            ids = np.empty(size, dtype=np.int64)
            codes = np.empty((size, dim), dtype=np.float16)
            id_ptr = invlists.get_ids(cell)
            code_ptr = invlists.get_codes(cell)
            try:
                faiss.memcpy(faiss.swig_ptr(ids), id_ptr, ids.nbytes)
                faiss.memcpy(faiss.swig_ptr(codes), code_ptr, codes.nbytes)
            finally:
                invlists.release_ids(cell, id_ptr)
                invlists.release_codes(cell, code_ptr)
            rows.append(ids)
            vectors.append(codes.astype(np.float32))
        if not rows:
            return np.empty((0, dim), dtype=np.float32), np.empty(0, dtype=np.int64)
        return np.vstack(vectors), np.concatenate(rows)


def _kmeans(vectors: np.ndarray, cells: int, seed: int) -> np.ndarray:
    """Spherical k-means on a sample; returns L2-normalised centroids (cells x dim)."""
    rng = np.random.default_rng(seed)
    sample_size = min(len(vectors), cells * _KMEANS_POINTS_PER_CELL)
    sample = vectors[np.sort(rng.choice(len(vectors), sample_size, replace=False))]
    centroids = sample[rng.choice(len(sample), cells, replace=len(sample) < cells)].copy()
    for _ in range(_KMEANS_ITERATIONS):
        assignment = np.empty(len(sample), dtype=np.int64)
        for start in range(0, len(sample), _ASSIGN_CHUNK):
            assignment[start : start + _ASSIGN_CHUNK] = (sample[start : start + _ASSIGN_CHUNK] @ centroids.T).argmax(1)
        counts = np.bincount(assignment, minlength=cells)
        order = np.argsort(assignment, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        sums = np.zeros_like(centroids)
        filled = counts > 0
        sums[filled] = np.add.reduceat(sample[order], starts[filled], axis=0)
        empty = ~filled
        if empty.any():  # re-seed empty cells with random points
            sums[empty] = sample[rng.choice(len(sample), int(empty.sum()))]
        centroids = _normalised(sums)
    return centroids


class ScopeIndex:
    """Inner-product search over L2-normalised vectors, with removal.

    Vectors are normalised on the way in, so inner product is cosine similarity.
    Exact (flat) up to `ann_threshold` vectors, IVF above it.
    """

    def __init__(
        self,
        dim: int,
        ann_threshold: int = ANN_THRESHOLD,
        nprobe: int = NPROBE,
        regrow_factor: float = REGROW_FACTOR,
    ) -> None:
        self.dim = dim
        self.ann_threshold = ann_threshold
        self.nprobe = nprobe
        self.regrow_factor = regrow_factor
        self._flat: faiss.IndexIDMap2 | None = _new_flat(dim)
        self._ivf: _Ivf | None = None
        self._ids: list[str | None] = [None]  # row -> episode id (None: removed); a list costs 8 B a row
        self._rows: dict[str, int] = {}
        self._lock = threading.Lock()
        # While a (re)build runs off the lock, changes are journalled and replayed onto the new index.
        self._journal: list[tuple[str, np.ndarray, np.ndarray | None]] | None = None

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def is_ann(self) -> bool:
        return self._ivf is not None

    @property
    def slots(self) -> int:
        """Rows numbered so far, removed ones included (8 bytes each)."""
        return len(self._ids)

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
                row = len(self._ids)
                self._ids.append(episode_id)
                self._rows[episode_id] = row
                rows.append(row)
                keep.append(i)
            if not rows:
                return
            new_rows = np.asarray(rows, dtype=np.int64)
            new_vectors = matrix if len(keep) == len(matrix) else matrix[keep]
            del matrix
            if self._ivf is None and self._journal is None and len(self._rows) > self.ann_threshold:
                # Switch to IVF now, in the caller's thread: a bulk load builds it in one go.
                existing, existing_rows = self._export_flat()
                if len(existing):
                    new_vectors = np.vstack([existing, new_vectors])
                    new_rows = np.concatenate([existing_rows, new_rows])
                del existing
                self._ivf = _Ivf(self.dim, new_vectors, new_rows)
                self._flat = None
            else:
                self._insert(new_vectors, new_rows)
        self._maybe_regrow()

    def _insert(self, vectors: np.ndarray, rows: np.ndarray) -> None:
        if self._ivf is not None:
            self._ivf.add(vectors, rows)
        else:
            assert self._flat is not None
            self._flat.add_with_ids(vectors, rows)
        if self._journal is not None:
            self._journal.append(("add", rows, vectors))

    def remove(self, episode_id: str) -> bool:
        with self._lock:
            row = self._rows.pop(episode_id, None)
            if row is None:
                return False
            self._ids[row] = None
            rows = np.asarray([row], dtype=np.int64)
            if self._ivf is not None:
                self._ivf.remove(rows)
            else:
                assert self._flat is not None
                self._flat.remove_ids(rows)
            if self._journal is not None:
                self._journal.append(("remove", rows, None))
            elif self._ivf is None and len(self._ids) > 2 * len(self._rows) + _COMPACT_SLACK:
                self._compact_flat()
            return True

    def _compact_flat(self) -> None:
        """Renumber the live rows 1..n (under the lock, flat only): drops the slots of removed rows."""
        vectors, rows = self._export_flat()
        ids = [self._ids[row] for row in rows.tolist()]
        new_rows = np.arange(1, len(ids) + 1, dtype=np.int64)
        flat = _new_flat(self.dim)
        if len(ids):
            flat.add_with_ids(vectors, new_rows)
        self._flat = flat
        self._ids = [None, *ids]
        self._rows = {episode_id: row for row, episode_id in enumerate(ids, start=1) if episode_id is not None}

    def search(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        _single_omp_thread()
        query = _normalised(vector.reshape(1, -1))
        with self._lock:
            if not self._rows:
                return []
            k = min(k, len(self._rows))
            if self._ivf is not None:
                scores, rows = self._ivf.search(query, k, self.nprobe)
            else:
                assert self._flat is not None
                scores, rows = self._flat.search(query, k)
            found = []
            for row, score in zip(rows[0].tolist(), scores[0].tolist(), strict=True):
                episode_id = self._ids[row] if row > 0 else None
                if episode_id is not None:
                    found.append((episode_id, score))
            return found

    def _export_flat(self) -> tuple[np.ndarray, np.ndarray]:
        assert self._flat is not None
        flat = faiss.downcast_index(self._flat.index)
        count = flat.ntotal
        vectors = faiss.rev_swig_ptr(flat.get_xb(), count * self.dim).reshape(count, self.dim).copy()
        rows = faiss.vector_to_array(self._flat.id_map).astype(np.int64)
        return vectors, rows

    def _maybe_regrow(self) -> None:
        """Re-cluster an IVF scope that outgrew its cells; searches go on meanwhile."""
        with self._lock:
            ivf = self._ivf
            if ivf is None or self._journal is not None or len(self._rows) < ivf.trained_size * self.regrow_factor:
                return
            if nlist_for(len(self._rows)) <= ivf.nlist:
                ivf.trained_size = len(self._rows)  # already at the largest cell count
                return
            vectors, rows = ivf.export()
            self._journal = []
        try:
            rebuilt = _Ivf(self.dim, vectors, rows)
        except Exception:
            with self._lock:
                self._journal = None
            raise
        with self._lock:
            for op, op_rows, op_vectors in self._journal:
                if op == "add":
                    assert op_vectors is not None
                    rebuilt.add(op_vectors, op_rows)
                else:
                    rebuilt.remove(op_rows)
            self._ivf = rebuilt
            self._journal = None


def _new_flat(dim: int) -> faiss.IndexIDMap2:
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def _normalised(vectors: np.ndarray) -> np.ndarray:
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix.reshape(1, -1)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(matrix / norms, dtype=np.float32)
