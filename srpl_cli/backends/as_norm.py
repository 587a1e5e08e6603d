"""Cosine + AS-norm: the score-normalisation baseline of speaker verification, as an open-set backend.

Adaptive symmetric normalisation rescales each cosine score ``s(x, m)`` by how the test clip ``x`` and
the speaker model ``m`` score against a *cohort* of other people (``srpl_cli.backends.calibration.ASNorm``):
a clip that resembles everybody gets its scores pulled down. It is one of the baselines issue 5 asks
the default to beat, so it is a backend of its own and ``srpl evaluate --cohort DIR`` reports it.

The cohort is the backend's ``X_unknown``: ``srpl tune --method as-norm --unknown-dir DIR`` and
``srpl evaluate --cohort DIR`` both hand it other people's speech. Identity is cosine's argmax only up
to the model-side normalisation (each speaker's cohort statistics shift its column).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from srpl_cli.backends.base import OpenSetClassifier
from srpl_cli.backends.calibration import ASNorm
from srpl_cli.backends.cosine import CosineBackend
from srpl_cli.errors import DataError

#: the message every "no cohort" path gives, so the user learns both ways to pass one
NEEDS_COHORT = (
    "as-norm needs a cohort of other people's speech (at least 2 clips): "
    "--unknown-dir DIR for `srpl tune`, --cohort DIR for `srpl evaluate`"
)


class ASNormBackend(OpenSetClassifier):
    """Cosine scores against the mean enrollment embedding, AS-normalised against a cohort.

    Parameters
    ----------
    top_n:
        Cohort scores used for each mean / standard deviation (the highest ``top_n``; all of them when
        the cohort is smaller).
    """

    name: ClassVar[str] = "as-norm"
    #: ``X_unknown`` is a cohort, not training negatives: `srpl evaluate --cohort` feeds only such backends
    uses_cohort: ClassVar[bool] = True

    def __init__(self, top_n: int = 50) -> None:
        self.top_n = top_n

    def _fit(self, X: np.ndarray, y: np.ndarray, X_unknown: np.ndarray | None) -> None:
        if X_unknown is None or len(X_unknown) < 2:
            raise DataError(NEEDS_COHORT)
        if int(self.top_n) < 2:
            raise DataError(f"top_n must be at least 2, got {self.top_n}")
        cosine = CosineBackend().fit(X, y)
        self.centers_ = cosine.centers_
        self._norm = ASNorm(top_n=int(self.top_n)).fit(X_unknown)
        self.cohort_ = self._norm.cohort_

    def _decision_function(self, X: np.ndarray) -> np.ndarray:
        from srpl_cli.backends.cosine import l2_normalize

        return self._norm.transform(l2_normalize(X) @ self.centers_.T, X, self.centers_)

    def _get_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return {"centers": self.centers_, "cohort": self.cohort_}, {}

    def _set_state(self, arrays: dict[str, np.ndarray], extra: dict[str, Any]) -> None:
        missing = [n for n in ("centers", "cohort") if n not in arrays]
        if missing:
            raise DataError(f"saved as-norm model lacks the array(s) {', '.join(missing)}")
        self.centers_ = np.asarray(arrays["centers"], dtype=np.float32)
        self.cohort_ = np.asarray(arrays["cohort"], dtype=np.float32)
        if self.centers_.shape != (len(self.classes_), self.n_features_in_) or self.cohort_.shape[1:] != (
            self.n_features_in_,
        ):
            raise DataError("saved as-norm model has arrays of the wrong shape")
        self._norm = ASNorm(top_n=int(self.top_n))
        self._norm.cohort_ = self.cohort_  # saved normalised: fitting again would round differently
