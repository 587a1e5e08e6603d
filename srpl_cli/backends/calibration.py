"""Pick the accept/reject threshold from held-out data, and normalise cosine scores against a cohort.

The documented rule (used by ``srpl tune`` / ``identify``): a clip is accepted as a known speaker when its
open-set score is ``>= threshold``.

- With unknown samples: the lowest threshold that accepts at most ``target_far`` of them (false accepts).
- Without: the highest threshold that rejects at most ``target_frr`` of the held-out known clips.

Thresholds are computed in the scores' own float type, so comparing float32 scores against them gives
exactly the counted rates.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from srpl_cli.errors import DataError, NotFittedError


def _scores(scores: Any, name: str) -> np.ndarray:
    s = np.asarray(scores)
    if not np.issubdtype(s.dtype, np.floating):
        s = s.astype(np.float64)
    s = s.reshape(-1)
    if s.size == 0:
        raise DataError(f"{name} is empty; cannot calibrate a threshold without scores")
    if not np.isfinite(s).all():
        raise DataError(f"{name} contains NaN or infinite values")
    return s


def _rate(target: float, name: str) -> float:
    if not 0.0 <= float(target) < 1.0:
        raise DataError(f"{name} must be in [0, 1), got {target}")
    return float(target)


def _allowed(target: float, n: int) -> int:
    """How many of n samples a rate ``target`` allows (tolerant of 0.05 * 100 = 5.000000000000001)."""
    return int(math.floor(target * n + 1e-9))


def threshold_at_far(unknown_scores: Any, target_far: float) -> float:
    """Lowest threshold accepting (score >= t) at most ``target_far`` of ``unknown_scores``."""
    s = _scores(unknown_scores, "unknown_scores")
    k = _allowed(_rate(target_far, "target_far"), s.size)
    desc = np.sort(s)[::-1]
    # every score strictly above desc[k] may be accepted; desc[k] itself must not be
    return float(np.nextafter(desc[k], np.array(np.inf, dtype=s.dtype)))


def threshold_at_frr(known_scores: Any, target_frr: float) -> float:
    """Highest threshold rejecting (score < t) at most ``target_frr`` of ``known_scores``."""
    s = _scores(known_scores, "known_scores")
    k = _allowed(_rate(target_frr, "target_frr"), s.size)
    return float(np.sort(s)[k])


@dataclass(frozen=True)
class CalibrationResult:
    """The chosen threshold, the rule that chose it, and the rates it gives on the calibration data.

    ``far`` is None without unknown samples; ``misid`` is the share of held-out known clips accepted
    but attributed to the wrong speaker.
    """

    threshold: float
    rule: str
    far: float | None
    frr: float
    misid: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibrate(
    backend: Any,
    X_known_heldout: Any,
    y_known_heldout: Any,
    X_unknown: Any = None,
    target_far: float = 0.05,
    target_frr: float = 0.05,
) -> CalibrationResult:
    """Threshold for a fitted ``backend`` by the documented rule; apply it with ``backend.set_threshold``.

    ``X_known_heldout`` must be clips of enrolled speakers that were *not* used in ``fit`` (labels
    ``y_known_heldout`` from ``backend.classes_``); ``X_unknown`` clips of people who are not enrolled.
    """
    backend.check_is_fitted()
    y = np.asarray(y_known_heldout)
    scores_k = backend.decision_function(X_known_heldout)
    if y.ndim != 1 or len(y) != len(scores_k):
        raise DataError(
            f"y_known_heldout must have one label per held-out clip ({len(scores_k)}), got {y.shape}"
        )
    classes = list(backend.classes_)
    missing = sorted({str(v) for v in y} - {str(c) for c in classes})
    if missing:
        raise DataError(f"held-out labels not enrolled in the model: {', '.join(missing[:5])}")
    index = {str(c): i for i, c in enumerate(classes)}
    y_idx = np.array([index[str(v)] for v in y])
    known = scores_k.max(axis=1)
    if X_unknown is not None and len(X_unknown) > 0:
        unknown = backend.score_samples(X_unknown)
        threshold = threshold_at_far(unknown, target_far)
        rule = f"far<={target_far:g}"
        far: float | None = float(np.mean(unknown >= threshold))
    else:
        threshold = threshold_at_frr(known, target_frr)
        rule = f"frr<={target_frr:g}"
        far = None
    accepted = known >= threshold
    frr = float(np.mean(~accepted))
    misid = float(np.mean(accepted & (scores_k.argmax(axis=1) != y_idx)))
    return CalibrationResult(threshold=float(threshold), rule=rule, far=far, frr=frr, misid=misid)


class ASNorm:
    """Adaptive symmetric score normalisation (AS-norm) of cosine scores against a cohort.

    ``fit(cohort)`` stores the L2-normalised cohort embeddings of people who are neither enrolled nor
    tested. ``transform(scores, X, centers)`` rescales each cosine score s(x, m) to
    ``((s - mu_x) / sd_x + (s - mu_m) / sd_m) / 2`` where mu/sd are the mean and standard deviation of the
    ``top_n`` highest cohort scores of the test embedding x and of the speaker model m.
    """

    def __init__(self, top_n: int = 200) -> None:
        self.top_n = top_n

    def fit(self, cohort_embeddings: Any) -> ASNorm:
        from srpl_cli.backends.base import check_embeddings
        from srpl_cli.backends.cosine import l2_normalize

        C = check_embeddings(cohort_embeddings, "cohort_embeddings")
        if len(C) < 2:
            raise DataError("AS-norm needs a cohort of at least two embeddings")
        self.cohort_ = l2_normalize(C)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "cohort_"):
            raise NotFittedError("this ASNorm is not fitted yet; call fit(cohort_embeddings) first")

    def _stats(self, E: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from srpl_cli.backends.cosine import l2_normalize

        S = l2_normalize(E) @ self.cohort_.T
        n = max(2, min(int(self.top_n), S.shape[1]))
        top = -np.partition(-S, n - 1, axis=1)[:, :n]
        return top.mean(axis=1), np.maximum(top.std(axis=1), 1e-6)

    def transform(self, scores: Any, X: Any, centers: Any) -> np.ndarray:
        """Normalised scores (n, K) for cosine ``scores`` of test embeddings ``X`` against ``centers``."""
        from srpl_cli.backends.base import check_embeddings

        self._check_fitted()
        X = check_embeddings(X, dim=self.cohort_.shape[1])
        M = check_embeddings(centers, "centers", dim=self.cohort_.shape[1])
        s = np.asarray(scores, dtype=np.float32)
        if s.shape != (len(X), len(M)):
            raise DataError(f"scores must have shape ({len(X)}, {len(M)}), got {s.shape}")
        mu_x, sd_x = self._stats(X)
        mu_m, sd_m = self._stats(M)
        out = 0.5 * ((s - mu_x[:, None]) / sd_x[:, None] + (s - mu_m[None, :]) / sd_m[None, :])
        return out.astype(np.float32)
