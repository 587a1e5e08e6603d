"""The contract every open-set backend follows (scikit-learn's estimator habits).

- ``__init__`` only stores keyword hyper-parameters; every one is an attribute of the same name.
- ``fit(X, y, X_unknown=None)`` validates, learns, sets attributes ending in ``_`` and returns self.
- ``decision_function(X)`` -> (n, K) per-speaker scores; higher means "more likely that speaker".
- ``score_samples(X)`` -> (n,) open-set score (the max over speakers); higher means "a known speaker".
- ``predict(X)`` -> (n,) index into ``classes_``, or -1 (unknown) where the score is below ``threshold_``.
- ``save(dir)`` / ``load(dir)``: ``model.safetensors`` (arrays) + ``meta.json`` (name, params, classes,
  threshold, extras). Nothing is ever unpickled.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from srpl_cli._io import atomic_write_bytes, atomic_write_text, json_default
from srpl_cli.errors import DataError, NotFittedError

UNKNOWN = -1
FORMAT_VERSION = 1


def check_embeddings(X: Any, name: str = "X", dim: int | None = None) -> np.ndarray:
    """Return ``X`` as a finite float32 (n, dim) array or raise a DataError that says what is wrong."""
    X = np.asarray(X, dtype=np.float32)
    if X.ndim == 1:
        X = X[None, :]
    if X.ndim != 2:
        raise DataError(f"{name} must be a 2-D array (n_samples, dim), got shape {X.shape}")
    if X.shape[0] == 0:
        raise DataError(f"{name} is empty")
    if dim is not None and X.shape[1] != dim:
        raise DataError(f"{name} has dimension {X.shape[1]}, the model expects {dim}")
    if not np.isfinite(X).all():
        raise DataError(f"{name} contains NaN or infinite values")
    return X


def top_columns(S: np.ndarray, k: int) -> np.ndarray:
    """(n, k) column indices of the k largest values of each row of ``S``, largest first."""
    if k < S.shape[1]:
        part = np.argpartition(-S, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(S.shape[1]), S.shape)
    order = np.argsort(-np.take_along_axis(S, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


class OpenSetClassifier:
    """Base class: parameters, label handling, thresholds and safe persistence."""

    #: registry name, written to meta.json so ``load_backend`` can find the class again
    name: ClassVar[str] = ""
    #: True when ``X_unknown`` is a normalisation cohort rather than training negatives (AS-norm)
    uses_cohort: ClassVar[bool] = False
    #: True when ``X_unknown`` is an unlabeled in-domain pool (enrolled people and strangers mixed)
    uses_pool: ClassVar[bool] = False
    #: True when the backend trains on unknown samples and should get a pool's in-domain strangers
    #: (``srpl_cli.pool.in_domain_negatives``) as ``X_unknown``
    pool_negatives: ClassVar[bool] = False

    # ---- parameters (scikit-learn's get_params / set_params) ----
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        return [p.name for p in sig.parameters.values() if p.name != "self" and p.kind in kinds]

    def get_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._param_names()}

    def set_params(self, **params: Any) -> OpenSetClassifier:
        valid = set(self._param_names())
        for k, v in params.items():
            if k not in valid:
                raise ValueError(f"{type(self).__name__} has no parameter '{k}'")
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # ---- fitting ----
    def fit(self, X: Any, y: Any, X_unknown: Any = None) -> OpenSetClassifier:
        """Learn from enrollment embeddings ``X`` (n, dim) with labels ``y`` (n,).

        ``X_unknown`` (m, dim) are samples of people who are *not* enrolled (real or synthetic);
        backends that cannot use them ignore them.
        """
        X = check_embeddings(X)
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(X):
            raise DataError(f"y must have one label per row of X ({len(X)}), got shape {y.shape}")
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise DataError("need at least two enrolled speakers to tell them apart")
        Xu = None
        if X_unknown is not None and len(X_unknown) > 0:
            Xu = check_embeddings(X_unknown, "X_unknown", dim=X.shape[1])
        self.n_features_in_ = X.shape[1]
        self._fit(X, y_idx.astype(np.int64), Xu)
        self.threshold_ = float(self._default_threshold(X, y_idx, Xu))
        return self

    def _fit(self, X: np.ndarray, y: np.ndarray, X_unknown: np.ndarray | None) -> None:
        raise NotImplementedError

    def _default_threshold(self, X: np.ndarray, y: np.ndarray, X_unknown: np.ndarray | None) -> float:
        """Threshold used by ``predict`` until ``set_threshold`` is called.

        Midway between the lowest training score of the known speakers and the highest unknown score
        when unknowns were seen; otherwise a score no known training sample falls under. Callers that
        care (``srpl tune``) calibrate with held-out data through ``srpl_cli.backends.calibration``.
        """
        known = self.score_samples(X)
        if X_unknown is not None:
            return float((np.quantile(known, 0.05) + np.quantile(self.score_samples(X_unknown), 0.95)) / 2)
        return float(known.min() - 1e-6)

    def refit_params(self) -> dict[str, Any]:
        """Parameters that calibration refits (held-out rounds) must share with this fitted model, so
        their scores are on its scale; none by default."""
        return {}

    def strangerless_params(self) -> dict[str, Any] | None:
        """Parameters under which a pool backend learns nothing about strangers from the pool, for a
        pool that holds none (``srpl_cli.pool_threshold.holds_no_strangers``); None: no such mode."""
        return None

    def set_threshold(self, threshold: float) -> OpenSetClassifier:
        self.threshold_ = float(threshold)
        return self

    def check_is_fitted(self) -> None:
        if not hasattr(self, "classes_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit first")

    # ---- scoring ----
    def decision_function(self, X: Any) -> np.ndarray:
        """Per-speaker scores (n, K), columns in the order of ``classes_``."""
        self.check_is_fitted()
        X = check_embeddings(X, dim=self.n_features_in_)
        return np.asarray(self._decision_function(X), dtype=np.float32)

    def _decision_function(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def top_k(self, X: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best speakers of each row: (n, k) indices into ``classes_``, best first, and their
        ``decision_function`` scores (n, k) float32.

        Rows are scored a block at a time, so n x K scores are never held at once (100,000 enrolled
        speakers x 1,000 clips would be 400 MB); backends may override with a faster path.
        """
        self.check_is_fitted()
        X = check_embeddings(X, dim=self.n_features_in_)
        k = max(1, min(int(k), len(self.classes_)))
        idx = np.empty((len(X), k), dtype=np.int64)
        val = np.empty((len(X), k), dtype=np.float32)
        step = max(64, (1 << 22) // len(self.classes_))
        for s in range(0, len(X), step):
            S = self.decision_function(X[s : s + step])
            idx[s : s + step] = top_columns(S, k)
            val[s : s + step] = np.take_along_axis(S, idx[s : s + step], axis=1)
        return idx, val

    def score_samples(self, X: Any) -> np.ndarray:
        """Open-set score (n,): the best speaker's score. Higher means more likely a known speaker."""
        self.check_is_fitted()
        X = check_embeddings(X, dim=self.n_features_in_)
        step = max(64, (1 << 22) // len(self.classes_))  # blocks of rows: n x K is never held at once
        return np.concatenate(
            [self.decision_function(X[s : s + step]).max(axis=1) for s in range(0, len(X), step)]
        )

    def predict(self, X: Any) -> np.ndarray:
        """Index into ``classes_`` of the best speaker, or -1 where the score is below ``threshold_``."""
        scores = self.decision_function(X)
        pred = scores.argmax(axis=1)
        pred[scores.max(axis=1) < self.threshold_] = UNKNOWN
        return pred

    # ---- persistence: safetensors + JSON, never pickle ----
    def _get_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Arrays and JSON-able extras that, with the params, rebuild the fitted model."""
        raise NotImplementedError

    def _set_state(self, arrays: dict[str, np.ndarray], extra: dict[str, Any]) -> None:
        raise NotImplementedError

    def save(self, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
        """Write the fitted model into directory ``path`` (created; files replaced atomically)."""
        from safetensors.numpy import save

        self.check_is_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        arrays, extra = self._get_state()
        arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
        meta = {
            "format_version": FORMAT_VERSION,
            "backend": self.name,
            "params": self.get_params(),
            "classes": [c.item() if hasattr(c, "item") else c for c in self.classes_],
            "n_features_in": int(self.n_features_in_),
            "threshold": float(self.threshold_),
            "extra": extra,
            "metadata": metadata or {},
        }
        # bytes + atomic_write_bytes: same mode as every other workspace file (mkstemp alone gives 0600)
        atomic_write_bytes(path / "model.safetensors", save(arrays))
        atomic_write_text(path / "meta.json", json.dumps(meta, indent=2, default=json_default))
        return path

    @classmethod
    def load(cls, path: str | Path) -> OpenSetClassifier:
        """Rebuild a model written by ``save``."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        path = Path(path)
        try:
            meta = json.loads((path / "meta.json").read_text())
            arrays = load_file(str(path / "model.safetensors"))
        except FileNotFoundError as exc:
            raise DataError(f"{path}: incomplete saved model ({exc.filename} missing)") from None
        except (ValueError, SafetensorError) as exc:
            raise DataError(f"{path}: corrupt saved model ({exc})") from None
        if not isinstance(meta, dict):
            raise DataError(f"{path}: corrupt saved model (meta.json is not an object)")
        if meta.get("backend") != cls.name:
            raise DataError(f"{path}: holds a '{meta.get('backend')}' model, not '{cls.name}'")
        try:  # a hand-edited or foreign meta.json: say so instead of a KeyError / TypeError
            obj = cls(**meta["params"])
            obj.classes_ = np.asarray(meta["classes"])
            obj.n_features_in_ = int(meta["n_features_in"])
            obj.threshold_ = float(meta["threshold"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{path}: corrupt saved model (meta.json: {type(exc).__name__}: {exc})") from None
        obj.metadata_ = meta.get("metadata", {})
        obj._set_state(arrays, meta.get("extra", {}))
        return obj
