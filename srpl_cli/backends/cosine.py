"""Cosine scoring against the mean enrollment embedding: the baseline every other backend must beat.

Each embedding is L2-normalised first (so a loud or long clip does not dominate the mean), the per-speaker
mean is normalised again, and the score is the cosine similarity (the authors' ``CosineSimModeling``
averages raw embeddings; normalising first is the usual speaker-verification habit and matters little).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from srpl_cli.backends.base import OpenSetClassifier, check_embeddings
from srpl_cli.backends.inner_product_search import InnerProductSearch


def l2_normalize(X: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of ``X`` scaled to unit length (zero rows stay zero)."""
    X = np.asarray(X, dtype=np.float32)
    return X / np.maximum(np.linalg.norm(X, axis=-1, keepdims=True), eps)


class CosineBackend(OpenSetClassifier):
    """Mean-of-normalised-enrollments per speaker; scores are cosine similarities (n, K)."""

    name: ClassVar[str] = "cosine"

    def __init__(self) -> None:
        pass

    def _fit(self, X: np.ndarray, y: np.ndarray, X_unknown: np.ndarray | None) -> None:
        Xn = l2_normalize(X)
        K = len(self.classes_)
        sums = np.zeros((K, X.shape[1]), dtype=np.float64)
        np.add.at(sums, y, Xn)
        self.centers_ = l2_normalize((sums / np.bincount(y, minlength=K)[:, None]).astype(np.float32))
        self._search = None

    def _decision_function(self, X: np.ndarray) -> np.ndarray:
        return l2_normalize(X) @ self.centers_.T

    def top_k(self, X: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """See ``OpenSetClassifier.top_k``: the scores are inner products, so one exact top-k search
        (faiss at thousands of speakers, ``srpl_cli/backends/inner_product_search.py``)."""
        self.check_is_fitted()
        X = check_embeddings(X, dim=self.n_features_in_)
        if getattr(self, "_search", None) is None:  # built once per fitted model (faiss copies the centres)
            self._search = InnerProductSearch(self.centers_)
        return self._search.search(l2_normalize(X), k)

    def _get_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return {"centers": self.centers_}, {}

    def _set_state(self, arrays: dict[str, np.ndarray], extra: dict[str, Any]) -> None:
        self.centers_ = np.asarray(arrays["centers"], dtype=np.float32)
        self._search = None
