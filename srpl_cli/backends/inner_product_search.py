"""Exact top-k inner-product search against many enrolled speakers: faiss when installed and worth it.

``srpl identify`` keeps each clip's 100 best speakers. With numpy that is a clips x speakers matrix
product followed by an ``argpartition`` over every row, a block of rows at a time; faiss's exact flat
index (``IndexFlatIP``, brute force, not an approximate index) does the same product in cache-sized
tiles and keeps each clip's k best in a heap as the tiles come out, so the scores never go back to
memory. Same inner products, same k best (up to float32 rounding of the summation order); 1.4-2x
faster for 1,000 clips against 100,000 speakers on one thread (docs/scale.md). ``faiss-cpu`` is the
optional extra ``srpl-cli[faiss]`` (wheels lag new Python versions and small workspaces gain nothing);
without it numpy gives the same answers, more slowly.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

from srpl_cli.backends.base import top_columns

#: faiss is used from this many database rows and this many queries up: below either, numpy's product and
#: ``argpartition`` are as fast or faster (one query: faiss scans without BLAS, twice numpy's time at
#: 100,000 rows). Measured with ``bench/scale.py --crossover``.
FAISS_MIN_ROWS = 10_000
FAISS_MIN_QUERIES = 20
#: numpy score blocks hold at most about this many values (rows x database rows).
BLOCK_VALUES = 1 << 22


def faiss_available() -> bool:
    return importlib.util.find_spec("faiss") is not None


class InnerProductSearch:
    """The ``k`` largest inner products of query rows with a fixed float32 database ``B`` (K, d).

    ``use_faiss=None`` builds a faiss index when faiss is installed and ``K >= FAISS_MIN_ROWS``; searches of
    fewer than ``FAISS_MIN_QUERIES`` rows still use numpy. The index holds the only copy of the database
    (``B`` is a view of it), so memory does not double.
    """

    def __init__(self, B: np.ndarray, use_faiss: bool | None = None) -> None:
        B = np.ascontiguousarray(B, dtype=np.float32)
        if use_faiss is None:
            use_faiss = len(B) >= FAISS_MIN_ROWS and faiss_available()
        self._index: Any = None
        if use_faiss:
            import faiss

            self._index = faiss.IndexFlatIP(B.shape[1])
            self._index.add(B)
            B = faiss.rev_swig_ptr(self._index.get_xb(), B.size).reshape(B.shape)
        self.B = B

    def fast_for(self, n_queries: int) -> bool:
        """Whether a search of ``n_queries`` rows goes through faiss."""
        return self._index is not None and n_queries >= FAISS_MIN_QUERIES

    def search(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(n, k) database rows with the largest ``Q @ B.T``, largest first, and those products (float32)."""
        Q = np.ascontiguousarray(Q, dtype=np.float32)
        k = max(1, min(int(k), len(self.B)))
        if self.fast_for(len(Q)):
            import faiss

            # faiss >= 1.8 multiplies through BLAS only from 128,000 queries; below, its per-query scan
            # took 5x numpy's time for 20-100 queries at 100,000 rows. Set for this call, then restored (a
            # race between threads can only leave either value: both give the same answers).
            before = faiss.cvar.distance_compute_blas_threshold
            faiss.cvar.distance_compute_blas_threshold = FAISS_MIN_QUERIES
            try:
                val, idx = self._index.search(Q, k)
            finally:
                faiss.cvar.distance_compute_blas_threshold = before
            return idx.astype(np.int64, copy=False), val
        idx = np.empty((len(Q), k), dtype=np.int64)
        val = np.empty((len(Q), k), dtype=np.float32)
        step = max(16, BLOCK_VALUES // len(self.B))
        for s in range(0, len(Q), step):
            S = Q[s : s + step] @ self.B.T
            idx[s : s + step] = top_columns(S, k)
            val[s : s + step] = np.take_along_axis(S, idx[s : s + step], axis=1)
        return idx, val

    def products(self, Q: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """(n, m) float32: row ``r`` holds ``Q[r] @ B[ids[r, j]]`` for each ``j``."""
        Q = np.ascontiguousarray(Q, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        out = np.empty(ids.shape, dtype=np.float32)
        if self._index is not None:  # one C++ loop over the pairs: no (n, m, d) gathered copy
            import faiss

            self._index.compute_distance_subset(
                len(Q), faiss.swig_ptr(Q), ids.shape[1], faiss.swig_ptr(out), faiss.swig_ptr(ids)
            )
            return out
        step = max(1, BLOCK_VALUES // max(1, ids.shape[1] * self.B.shape[1]))
        for s in range(0, len(Q), step):
            out[s : s + step] = np.matmul(self.B[ids[s : s + step]], Q[s : s + step, :, None])[..., 0]
        return out
