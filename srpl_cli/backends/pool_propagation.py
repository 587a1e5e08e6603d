"""Pool propagation: learn "who" and "nobody I know" from unlabeled in-domain audio (the pool).

A deployment hears many clips of its enrolled people and of strangers, in its own room and channel,
before anyone labels anything. This backend uses such a pool, without labels, in two ways (measured in
docs/accuracy.md; each setting was chosen on fold seeds 0 and 1 and reported on fresh ones):

1. **In-domain whitening.** The pool's mean is subtracted and its covariance, shrunk toward the
   identity (``S = (1 - shrinkage) C d / tr C + shrinkage I``), is whitened away: directions in which
   the room's clips vary most (channel, language, loudness) count less, and what every clip of the
   room shares is removed. Enrollment-only whitening could not tell these directions apart.
2. **Label propagation** (Zhou et al., 2004, "learning with local and global consistency") over a
   symmetric k-nearest-neighbour graph of the enrollment and the pool, edge weights ``cos^power``:
   each enrolled speaker's label mass flows from their enrollment clips to the pool clips that are
   near them, and on to the pool clips near those (the same voice in another mood or another
   sentence). Pool clips of strangers form their own clusters that receive little mass. A new clip is
   scored by the mass of its ``k`` nearest enrollment or pool clips, weighted the same way, plus
   ``cosine_weight`` times its whitened cosine to each speaker's mean (which breaks ties between
   clips with no labelled neighbour and keeps a clip close to one enrollment on that speaker).
3. **Plus the enrollment-only score.** ``anchored_weight`` times the per-speaker score of
   ``anchored-cosine`` (fitted on the enrollment alone) is added: where the pool teaches little (a
   protocol where cosine is already near perfect, a pool of a few clips) the score stays close to
   the no-pool default; it also keeps closed-set accuracy at cosine's level.
4. **Safety fades.** The propagated part is weighted down when the pool is small (no weight for a
   pool the size of the enrollment, full weight from 4x its size) and when the pool shows no
   strangers: a pool of only enrolled people gives every clip near anyone a high mass. Two signs
   must both show strangers: clips below every held-out enrollment clip's enrollment-only score
   (5 % for full weight), and clips the propagation leaves almost unreached (under a tenth of an
   enrollment clip's mass; 20-40 % fades in). Measured in docs/accuracy.md (*Robust pools*); both
   miss an enrolled-only pool of emotional speech, see there.

The mass is rescaled so that an enrollment clip's own mass averages 1: scores then mean "how much of
an enrolled speaker's label reaches this clip". Identity is the best column (it can differ from plain
cosine: the pool carries a speaker's voice into moods the enrollment lacks). Exact duplicate pool
clips are merged (a clip heard twice must not count as its own neighbour).

``X_unknown`` is the pool (``uses_pool``): clips of unknown identity, enrolled people and strangers
alike, never labels. Closed form and deterministic; the fit costs one (n + m)^2 similarity matrix and
20 sparse steps (about 0.05 s for 25 enrollment + 300 pool clips).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from srpl_cli.backends.anchored_cosine import AnchoredCosineBackend
from srpl_cli.backends.base import OpenSetClassifier
from srpl_cli.errors import DataError

#: below this estimated share of strangers in the pool, the propagated score fades out
MIN_STRANGER_SHARE = 0.05
#: a pool clip holding under this share of an enrollment clip's mass after propagation is unreached
UNREACHED_MASS = 0.1
#: the propagated score fades in as the unreached share of the pool rises from the first to the second
#: (strangers form clusters no enrolled voice reaches; a pool of enrolled people alone is reached almost
#: whole: 0-3 % on average on qspeech and librispeech-mini, against 35-89 % for pools with strangers)
UNREACHED_SHARE = (0.2, 0.4)
#: the propagated score has full weight once the pool holds this many times the enrollment's clips
FULL_POOL_RATIO = 4.0
#: the message for a pool method without a pool (tune, evaluate)
NEEDS_POOL = (
    "this method learns from unlabeled in-domain audio: give a pool (tune --unlabeled DIR, "
    "evaluate --unlabeled-share 0.5 or --unlabeled DIR)"
)


def _normalise(X: np.ndarray) -> np.ndarray:
    return X / np.maximum(np.linalg.norm(X, axis=-1, keepdims=True), 1e-12)


def pool_whitening(P: np.ndarray, shrinkage: float) -> tuple[np.ndarray, np.ndarray]:
    """(mean, W) with ``x -> normalise((normalise(x) - mean) @ W)`` whitening the pool's covariance.

    ``W = S^-1/2`` for the shrunk covariance ``S``; computed in the span of the pool (an SVD of the
    centred pool, rank < m), so it costs O(m^2 d) for any dimension d, then expanded to d x d.
    """
    Z = _normalise(P.astype(np.float64))
    d = Z.shape[1]
    mean = Z.mean(axis=0)
    D = Z - mean
    total = float((D**2).sum())
    if len(Z) < 2 or total <= 1e-12:  # one distinct clip: nothing to whiten, centring only
        return mean, np.eye(d)
    B = D * np.sqrt((1.0 - shrinkage) * d / total)
    _, sigma, Vt = np.linalg.svd(B, full_matrices=False)
    keep = sigma > 1e-9 * max(1.0, float(sigma.max()))
    V, sigma = Vt[keep], sigma[keep]
    gain = np.sqrt(shrinkage / (sigma**2 + shrinkage)) - 1.0  # S^-1/2 / shrinkage^-1/2 minus 1 in the span
    W = np.eye(d) + (V.T * gain) @ V
    return mean, W


def _knn_weights(S: np.ndarray, k: int, power: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices and ``max(cos, 0)^power`` weights of each row's ``k`` largest similarities."""
    k = min(k, S.shape[1])
    idx = np.argpartition(-S, k - 1, axis=1)[:, :k]
    w = np.maximum(np.take_along_axis(S, idx, axis=1), 0.0) ** power
    return idx, w


def propagate(Z: np.ndarray, Y: np.ndarray, k: int, power: float, alpha: float, steps: int) -> np.ndarray:
    """Label spreading ``F <- alpha D^-1/2 W D^-1/2 F + (1 - alpha) Y`` over a symmetric kNN graph."""
    n = len(Z)
    S = Z @ Z.T
    np.fill_diagonal(S, -np.inf)  # no self loops
    idx, w = _knn_weights(S, min(k, n - 1), power)
    W = np.zeros((n, n))
    W[np.repeat(np.arange(n), idx.shape[1]), idx.ravel()] = w.ravel()
    W = np.maximum(W, W.T)
    deg = W.sum(axis=1)
    inv = np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1e-300)), 0.0)
    A = W * inv[:, None] * inv[None, :]
    F = Y.copy()
    for _ in range(steps):
        F = alpha * (A @ F) + (1.0 - alpha) * Y
    return F


def _unreached_evidence(reached: np.ndarray) -> float:
    """Weight of the propagated score from how much of the pool no enrolled voice reaches.

    ``reached``: each pool clip's largest propagated mass (an enrollment clip's own averages 1). Clusters
    of strangers receive almost none; a pool of enrolled people alone is reached nearly whole, and then
    propagation would lend every clip near anyone a speaker's mass.
    """
    if not len(reached):
        return 0.0
    low, high = UNREACHED_SHARE
    share = float((reached < UNREACHED_MASS).mean())
    return float(np.clip((share - low) / (high - low), 0.0, 1.0))


class PoolPropagationBackend(OpenSetClassifier):
    """Pool-whitened label propagation (``srpl tune``'s default when a pool is given).

    Parameters
    ----------
    shrinkage:
        Weight of the identity in the pool covariance, in (0, 1]; 1 = centring only.
    neighbours:
        k of the kNN graph and of the scoring of a new clip.
    power:
        Edge weight ``max(cos, 0)^power`` (higher: trust only the closest neighbours).
    alpha:
        Share of a node's mass that comes from its neighbours (0: no propagation).
    steps:
        Propagation iterations.
    cosine_weight:
        Weight of the whitened cosine to each speaker's mean added to the propagated mass.
    anchored_weight:
        Weight of the enrollment-only ``anchored-cosine`` per-speaker score added (0 = off).
    propagation_weight:
        Weight of the propagated score; None estimates it from the pool: 0 for a pool no larger than
        the enrollment, 1 from ``FULL_POOL_RATIO`` times its size, times ``_stranger_evidence`` and
        ``_unreached_evidence`` (the lower of the two).
        Calibration refits pin it to the full model's value (``refit_params``) so that every held-out
        score is on one scale.
    random_state:
        Ignored (closed form); kept so every backend takes the same arguments.
    """

    name: ClassVar[str] = "pool-propagation"
    uses_pool: ClassVar[bool] = True

    def __init__(
        self,
        shrinkage: float = 0.9,
        neighbours: int = 10,
        power: float = 3.0,
        alpha: float = 0.9,
        steps: int = 20,
        cosine_weight: float = 0.3,
        anchored_weight: float = 0.5,
        propagation_weight: float | None = None,
        random_state: int | None = None,
    ) -> None:
        self.propagation_weight = propagation_weight
        self.shrinkage = shrinkage
        self.neighbours = neighbours
        self.power = power
        self.alpha = alpha
        self.steps = steps
        self.cosine_weight = cosine_weight
        self.anchored_weight = anchored_weight
        self.random_state = random_state

    def _fit(self, X: np.ndarray, y: np.ndarray, X_unknown: np.ndarray | None) -> None:
        if X_unknown is None:
            raise DataError(NEEDS_POOL)
        if not 0.0 < float(self.shrinkage) <= 1.0:
            raise DataError(f"shrinkage must be in (0, 1], got {self.shrinkage}")
        if not 0.0 <= float(self.alpha) < 1.0:
            raise DataError(f"alpha must be in [0, 1), got {self.alpha}")
        if int(self.neighbours) < 1:
            raise DataError(f"neighbours must be at least 1, got {self.neighbours}")
        pool = np.unique(X_unknown.astype(np.float32), axis=0)  # a duplicated clip is one node
        self.mean_, self.whitening_ = pool_whitening(pool, float(self.shrinkage))
        K = len(self.classes_)
        Z = self._transform(np.concatenate([X, pool]))
        Y = np.zeros((len(Z), K))
        Y[np.arange(len(X)), y] = 1.0
        F = propagate(Z, Y, int(self.neighbours), float(self.power), float(self.alpha), int(self.steps))
        own = F[np.arange(len(X)), y].mean()
        self.nodes_ = Z
        self.mass_ = F / max(float(own), 1e-12)
        ZE = Z[: len(X)]
        self._enroll_y = y
        self.centers_ = _normalise(np.stack([ZE[y == c].mean(axis=0) for c in range(K)]))
        self.anchored_ = AnchoredCosineBackend().fit(X, y)  # y is 0..K-1 here: same column order
        pw = self.propagation_weight
        self.stranger_evidence_: float | None = None  # measured only when the weight is estimated
        if pw is None:
            # a pool about the size of the enrollment cannot outvote it: fade in from 1x to 4x its size
            size = float(np.clip((len(pool) / len(X) - 1.0) / (FULL_POOL_RATIO - 1.0), 0.0, 1.0))
            reached = self.mass_[len(X) :].max(axis=1)
            # 0: the pool seems to hold enrolled people only (tune warns); not saved with the model
            self.stranger_evidence_ = min(self._stranger_evidence(pool), _unreached_evidence(reached))
            pw = size * self.stranger_evidence_
        self.propagation_weight_ = np.array([float(pw)])

    def refit_params(self) -> dict[str, Any]:
        return {"propagation_weight": float(self.propagation_weight_[0])}

    def strangerless_params(self) -> dict[str, Any]:
        return {"propagation_weight": 0.0}  # the enrollment-only score, on the pool-whitened scale

    def _stranger_evidence(self, pool: np.ndarray) -> float:
        """Weight of the propagated score, from how much of the pool sounds like strangers.

        Propagation can only tell "nobody I know" from clusters of strangers in the pool; a pool of
        enrolled people alone gives every clip near anyone a high mass. The share of pool clips that
        the enrollment-only score puts below every held-out enrollment clip estimates the strangers'
        share; below ``MIN_STRANGER_SHARE`` the propagated part fades out, leaving the enrollment-only
        score (docs/accuracy.md, *Robust pools*).
        """
        a = self.anchored_
        held = a.heldout_scores_ - a.offsets_[self._enroll_y]
        floor = float(np.nanmin(held)) if np.isfinite(held).any() else -np.inf
        share = float((a.score_samples(pool) < floor).mean())
        return min(1.0, share / MIN_STRANGER_SHARE)

    def _transform(self, X: np.ndarray) -> np.ndarray:
        return _normalise((_normalise(X.astype(np.float64)) - self.mean_) @ self.whitening_)

    def _decision_function(self, X: np.ndarray) -> np.ndarray:
        Z = self._transform(X)
        out = np.empty((len(Z), len(self.classes_)))
        for start in range(0, len(Z), 4096):  # bounded memory for long identify runs
            Zb = Z[start : start + 4096]
            idx, w = _knn_weights(Zb @ self.nodes_.T, int(self.neighbours), float(self.power))
            mass = (w[:, :, None] * self.mass_[idx]).sum(axis=1) / np.maximum(w.sum(1, keepdims=True), 1e-12)
            out[start : start + len(Zb)] = mass + float(self.cosine_weight) * (Zb @ self.centers_.T)
        out *= float(self.propagation_weight_[0])
        if float(self.anchored_weight):
            out += float(self.anchored_weight) * self.anchored_.open_set_scores(X)
        return out

    # ---- persistence ----
    _ARRAYS = ("mean", "whitening", "nodes", "mass", "centers", "propagation_weight")

    def _get_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {n: np.asarray(getattr(self, f"{n}_"), dtype=np.float64) for n in self._ARRAYS}
        sub, _ = self.anchored_._get_state()
        arrays.update({f"anchored.{k}": v for k, v in sub.items()})
        return arrays, {"anchored_params": self.anchored_.get_params()}

    def _set_state(self, arrays: dict[str, np.ndarray], extra: dict[str, Any]) -> None:
        try:
            self.anchored_ = AnchoredCosineBackend(**extra.get("anchored_params", {}))
        except TypeError as exc:
            raise DataError(f"saved pool-propagation model: bad anchored-cosine parameters ({exc})") from None
        self.anchored_.classes_ = np.arange(len(self.classes_))
        self.anchored_.n_features_in_ = self.n_features_in_
        self.anchored_._set_state({k[9:]: v for k, v in arrays.items() if k.startswith("anchored.")}, {})
        missing = [n for n in self._ARRAYS if n not in arrays]
        if missing:
            raise DataError(f"saved pool-propagation model lacks the array(s) {', '.join(missing)}")
        for n in self._ARRAYS:
            setattr(self, f"{n}_", np.asarray(arrays[n], dtype=np.float64))
        d, K = self.n_features_in_, len(self.classes_)
        if (
            self.mean_.shape != (d,)
            or self.whitening_.shape != (d, d)
            or self.nodes_.shape[1:] != (d,)
            or self.mass_.shape != (len(self.nodes_), K)
            or self.centers_.shape != (K, d)
        ):
            raise DataError("saved pool-propagation model has arrays of the wrong shape")
