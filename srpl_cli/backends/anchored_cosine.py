"""Anchored cosine: plain cosine decides *who*, a whitened and anchored score decides *whether known*.

Why this and not a trained head: with 5 clips per speaker, every trained head measured (faithful SRPL,
residual heads, LogitNorm, seeded fusion) pulls unknown voices in as much as it pushes speakers apart, and
costs closed-set accuracy. Three closed-form changes to the cosine *rejection* score gained on the
development protocols instead (docs/accuracy.md has the paired 10-fold numbers and what did not work):

1. **Within-speaker whitening estimated from the enrollment only.** The scatter of each speaker's clips
   around their own mean shows which directions carry words, channel and mood rather than identity; they
   are down-weighted with ``S^-1/2``, ``S = (1 - shrinkage) * S_within * d / tr + shrinkage * I`` (shrunk to
   the identity: 20 degrees of freedom cannot fill a 256-1024-d covariance). No centering: subtracting the
   enrollment mean removes identity shared with strangers and lost on every protocol.
2. **Embedding-space pseudo-unknowns as anchors.** ``a_ij = normalise(mix * p_i + (1 - mix) * p_j)`` for
   each enrolled prototype and (up to 10 of) its nearest others: voices between two enrolled speakers,
   computed in the whitened space. A speaker's score is
   ``cos(x, p_k) - anchor_weight * max_a cos(x, a)``: a stranger is about as close to some anchor as to
   its nearest prototype, and a clip whose similarities all drop (another emotion, another channel) is
   judged against the anchors rather than by its absolute level.
3. **Per-speaker offsets from cross-fitting.** In each of 5 rounds one clip of every speaker is held out
   and scored by a model refitted without them (whitening included); a speaker whose held-out clips score
   high (a tight voice) has half of that surplus subtracted, so one threshold suits every speaker.

Identity is still decided by plain cosine against the mean enrollment embedding: whitening estimated on 5
neutral clips can move a clip of another mood to the wrong speaker. ``decision_function`` returns the
cosine scores shifted so that their maximum equals the open-set score: the argmax is cosine's, the max is
the anchored score. Closed-set accuracy is therefore exactly cosine's.

Closed form: ``fit`` takes milliseconds and is deterministic (``random_state`` is accepted for a uniform
interface and ignored). ``X_unknown`` is accepted and ignored: audio-level pseudo-unknowns (speed
perturbation of the enrollment) measured worse as anchors than the embedding mixtures.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from srpl_cli.backends.base import OpenSetClassifier
from srpl_cli.errors import DataError

#: Each prototype is mixed with at most this many nearest prototypes to form anchors.
MAX_ANCHOR_NEIGHBOURS = 10
#: Cross-fitting rounds for the per-speaker offsets and the default threshold.
HELDOUT_ROUNDS = 5


def _normalise(X: np.ndarray) -> np.ndarray:
    return X / np.maximum(np.linalg.norm(X, axis=-1, keepdims=True), 1e-12)


def _prototypes(Z: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    return _normalise(np.stack([Z[y == k].mean(axis=0) for k in range(n_classes)]))


def _anchors(P: np.ndarray, mix: float) -> np.ndarray:
    """Normalised mixtures ``mix * p_i + (1 - mix) * p_j`` of each prototype with its nearest others.

    Every ordered pair up to ``MAX_ANCHOR_NEIGHBOURS + 1`` speakers; beyond that each prototype is mixed
    only with its ``MAX_ANCHOR_NEIGHBOURS`` most similar prototypes (the best anchor for a clip lies near
    its nearest prototypes anyway), so memory grows linearly with the number of speakers.
    """
    n_neighbours = min(len(P) - 1, MAX_ANCHOR_NEIGHBOURS)
    sim = P @ P.T
    np.fill_diagonal(sim, -np.inf)
    j = np.argsort(-sim, axis=1, kind="stable")[:, :n_neighbours]
    i = np.repeat(np.arange(len(P)), n_neighbours)
    return _normalise(mix * P[i] + (1.0 - mix) * P[j.ravel()])


def _whitening(
    Z: np.ndarray, y: np.ndarray, n_classes: int, shrinkage: float
) -> tuple[np.ndarray, np.ndarray]:
    """Low-rank form of ``S^-1/2`` up to scale: ``x -> x + (x @ V.T) * gain @ V``.

    ``S = B.T @ B + shrinkage * I`` with ``B`` the scaled within-speaker deviations (n x d, rank < n), so
    the whitening only acts in the span ``V`` (r x d) of the deviations; working there keeps fit and the
    leave-one-out refits cheap for any embedding dimension.
    """
    d = Z.shape[1]
    dev = np.concatenate([Z[y == k] - Z[y == k].mean(axis=0) for k in range(n_classes)])
    total = float((dev**2).sum())
    if shrinkage >= 1.0 or total <= 1e-12:  # whitening off, or one clip per speaker: nothing to learn
        return np.zeros((0, d)), np.zeros(0)
    B = dev * np.sqrt((1.0 - shrinkage) * d / total)
    _, sigma, Vt = np.linalg.svd(B, full_matrices=False)
    keep = sigma > 1e-9 * max(1.0, float(sigma.max()))
    basis, sigma = Vt[keep], sigma[keep]
    return basis, np.sqrt(shrinkage / (sigma**2 + shrinkage)) - 1.0


class AnchoredCosineBackend(OpenSetClassifier):
    """Cosine identity + whitened, anchored, per-speaker-offset rejection score (``srpl tune``'s default).

    Parameters
    ----------
    shrinkage:
        Weight of the identity in the within-speaker covariance, in (0, 1]; 1 switches whitening off.
    anchor_weight:
        How much of the best anchor similarity is subtracted; 0 switches the anchors off.
    anchor_mix:
        Position of each anchor between two prototypes (0.5 = midway; larger = nearer the first).
    speaker_offset:
        Share of each speaker's leave-one-out score surplus that is subtracted (0 = off).
    random_state:
        Ignored (the method is closed form); kept so every backend takes the same arguments.
    """

    name: ClassVar[str] = "anchored-cosine"

    def __init__(
        self,
        shrinkage: float = 0.8,
        anchor_weight: float = 0.6,
        anchor_mix: float = 0.5,
        speaker_offset: float = 0.5,
        random_state: int | None = None,
    ) -> None:
        self.shrinkage = shrinkage
        self.anchor_weight = anchor_weight
        self.anchor_mix = anchor_mix
        self.speaker_offset = speaker_offset
        self.random_state = random_state

    # ---- fitting ----
    def _fit(self, X: np.ndarray, y: np.ndarray, X_unknown: np.ndarray | None) -> None:
        if not 0.0 < float(self.shrinkage) <= 1.0:
            raise DataError(f"shrinkage must be in (0, 1], got {self.shrinkage}")
        if not 0.0 <= float(self.anchor_mix) <= 1.0:
            raise DataError(f"anchor_mix must be in [0, 1], got {self.anchor_mix}")
        Z = _normalise(X.astype(np.float64))
        n_classes = len(self.classes_)
        self.centers_ = _prototypes(Z, y, n_classes)
        self.basis_, self.gain_, self.prototypes_, self.anchors_ = self._model(Z, y, n_classes)
        self.heldout_scores_ = self._heldout_scores(Z, y, n_classes)
        have = np.array([np.isfinite(self.heldout_scores_[y == k]).any() for k in range(n_classes)])
        surplus = np.zeros(n_classes)
        for k in np.flatnonzero(have):
            surplus[k] = np.nanmean(self.heldout_scores_[y == k])
        if have.any():
            surplus[have] -= surplus[have].mean()
        self.offsets_ = float(self.speaker_offset) * surplus * have

    def _model(self, Z: np.ndarray, y: np.ndarray, n_classes: int) -> tuple[np.ndarray, ...]:
        basis, gain = _whitening(Z, y, n_classes, float(self.shrinkage))
        P = _prototypes(_transform(Z, basis, gain), y, n_classes)
        return basis, gain, P, _anchors(P, float(self.anchor_mix))

    def _heldout_scores(self, Z: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
        """Own-speaker anchored score of each clip under a model refitted without it (NaN if impossible).

        Round r holds out the clips at position r, r + R, ... of every speaker with two clips or more
        (R = ``HELDOUT_ROUNDS``), so the cost is R fits whatever the number of clips.
        """
        counts = np.bincount(y, minlength=n_classes)
        pos = np.zeros(len(y), dtype=np.int64)
        for k in range(n_classes):
            pos[y == k] = np.arange(counts[k])
        rounds = int(min(HELDOUT_ROUNDS, counts.max()))
        out = np.full(len(Z), np.nan)
        for r in range(rounds):
            held = (pos % rounds == r) & (counts[y] >= 2)
            if not held.any():
                continue
            basis, gain, P, A = self._model(Z[~held], y[~held], n_classes)
            scores = self._anchored(_transform(Z[held], basis, gain), P, A)
            out[held] = scores[np.arange(held.sum()), y[held]]
        return out

    def _anchored(self, Zt: np.ndarray, P: np.ndarray, A: np.ndarray) -> np.ndarray:
        return Zt @ P.T - float(self.anchor_weight) * (Zt @ A.T).max(axis=1, keepdims=True)

    # ---- scoring ----
    def open_set_scores(self, X: np.ndarray) -> np.ndarray:
        """(n, K) whitened, anchored, offset scores; their max is the open-set score."""
        Zt = _transform(_normalise(X.astype(np.float64)), self.basis_, self.gain_)
        return self._anchored(Zt, self.prototypes_, self.anchors_) - self.offsets_[None, :]

    def _decision_function(self, X: np.ndarray) -> np.ndarray:
        cos = _normalise(X.astype(np.float64)) @ self.centers_.T
        return cos - cos.max(axis=1, keepdims=True) + self.open_set_scores(X).max(axis=1, keepdims=True)

    def _default_threshold(self, X: np.ndarray, y: np.ndarray, X_unknown: np.ndarray | None) -> float:
        """Accept every held-out enrollment clip: the lowest cross-fitted score after offsets.

        ``srpl tune`` recalibrates with its own cross-fitted rule; this is the fallback for direct use.
        """
        held = self.heldout_scores_ - self.offsets_[y]
        if not np.isfinite(held).any():
            return float(self.score_samples(X).min() - 1e-6)
        return float(np.nanmin(held) - 1e-6)

    # ---- persistence ----
    def _get_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {
            "centers": self.centers_,
            "basis": self.basis_,
            "gain": self.gain_,
            "prototypes": self.prototypes_,
            "anchors": self.anchors_,
            "offsets": self.offsets_,
            "heldout_scores": self.heldout_scores_,
        }
        return {k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()}, {}

    def _set_state(self, arrays: dict[str, np.ndarray], extra: dict[str, Any]) -> None:
        names = ("centers", "basis", "gain", "prototypes", "anchors", "offsets", "heldout_scores")
        missing = [n for n in names if n not in arrays]
        if missing:
            raise DataError(f"saved anchored-cosine model lacks the array(s) {', '.join(missing)}")
        for n in names:
            setattr(self, f"{n}_", np.asarray(arrays[n], dtype=np.float64))
        d, K = self.n_features_in_, len(self.classes_)
        if (
            self.centers_.shape != (K, d)
            or self.prototypes_.shape != (K, d)
            or self.basis_.shape[1:] != (d,)
            or self.gain_.shape != self.basis_.shape[:1]
            or self.offsets_.shape != (K,)
        ):
            raise DataError("saved anchored-cosine model has arrays of the wrong shape")


def _transform(Z: np.ndarray, basis: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """Whiten unit-length rows ``Z`` (low-rank form of ``_whitening``) and normalise again."""
    if len(basis) == 0:
        return Z
    return _normalise(Z + ((Z @ basis.T) * gain) @ basis)
