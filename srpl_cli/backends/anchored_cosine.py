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

Scale: with at most ``EXACT_MAX_SPEAKERS`` (64) enrolled speakers every score is computed as above, in
float64. Beyond that, memory and the cost per clip stop growing with the number of anchors: each clip's
anchors are searched among those of its 64 most similar prototypes (found in float32), anchors are kept as
neighbour lists (``cos(x, a_ij) = (mix * s_i + (1 - mix) * s_j) / |mix * p_i + (1 - mix) * p_j|`` from the
prototype similarities ``s``), the cross-fitting rounds rank neighbours among the full fit's 64 nearest
prototypes, and scores
are computed in blocks of rows. Whitening is linear in the number of clips at any size. From
``FAISS_MIN_ROWS`` speakers with faiss installed, ``top_k`` and the open-set score come from exact
top-k searches instead of n x K score blocks (``_searched_open_set_max``; same numbers to float32).

Closed form: ``fit`` takes milliseconds and is deterministic (``random_state`` is accepted for a uniform
interface and ignored). ``X_unknown`` is accepted and ignored: audio-level pseudo-unknowns (speed
perturbation of the enrollment) measured worse as anchors than the embedding mixtures.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np

from srpl_cli.backends.base import OpenSetClassifier, check_embeddings, top_columns
from srpl_cli.backends.inner_product_search import InnerProductSearch
from srpl_cli.errors import DataError

#: Each prototype is mixed with at most this many nearest prototypes to form anchors.
MAX_ANCHOR_NEIGHBOURS = 10
#: Cross-fitting rounds for the per-speaker offsets and the default threshold.
HELDOUT_ROUNDS = 5
#: Up to this many speakers every anchor is scored for every clip (the exact method); beyond it, a clip's
#: anchors are searched among those of its this-many most similar prototypes.
EXACT_MAX_SPEAKERS = 64
#: Beyond the exact range with faiss, a clip's open-set score is searched among this many most similar
#: prototypes (then proved to be the max over all, see ``_searched_open_set_max``) ...
OPEN_SET_CANDIDATES = 128
#: ... and among the prototypes of the speakers with this many lowest offsets.
BOOSTED_SPEAKERS = 64
#: Score blocks hold at most about this many values (rows x speakers), so memory stays bounded.
BLOCK_VALUES = 1 << 22


def _normalise(X: np.ndarray) -> np.ndarray:
    return X / np.maximum(np.linalg.norm(X, axis=-1, keepdims=True), 1e-12)


def _block_rows(n_cols: int) -> int:
    return max(16, BLOCK_VALUES // max(1, n_cols))


def _group_order(y: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows grouped by class (stable), and where each class starts: one pass instead of a mask per class."""
    counts = np.bincount(y, minlength=n_classes)
    return np.argsort(y, kind="stable"), np.concatenate([[0], np.cumsum(counts)[:-1]])


def _class_means(Z: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-class means (every class must have a row); same sums, in the same order, as a per-class loop."""
    order, starts = _group_order(y, n_classes)
    return np.add.reduceat(Z[order], starts, axis=0) / np.bincount(y, minlength=n_classes)[:, None]


def _prototypes(Z: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    return _normalise(_class_means(Z, y, n_classes))


def _neighbours(P: np.ndarray, n: int = MAX_ANCHOR_NEIGHBOURS, among: np.ndarray | None = None) -> np.ndarray:
    """(K, n) indices of each prototype's ``n`` most similar others, most similar first.

    Beyond the exact range: float32, a block of rows at a time (memory linear in K), and with ``among``
    (K, m) only those candidates are ranked (m x K cheaper: the cross-fitting rounds rank the full fit's
    ``EXACT_MAX_SPEAKERS`` nearest, among which a round's 10 nearest all but surely are).
    """
    K = len(P)
    n = min(K - 1, n)
    if K <= EXACT_MAX_SPEAKERS:
        sim = P @ P.T
        np.fill_diagonal(sim, -np.inf)
        return np.argsort(-sim, axis=1, kind="stable")[:, :n]
    if among is not None:
        out = np.empty((K, n), dtype=np.int64)
        step = _block_rows(among.shape[1] * P.shape[1])
        for s in range(0, K, step):
            cand = among[s : s + step]
            sim = np.einsum("kd,kmd->km", P[s : s + step], P[cand])
            out[s : s + step] = np.take_along_axis(cand, top_columns(sim, n), axis=1)
        return out
    P32 = P.astype(np.float32)
    out = np.empty((K, n), dtype=np.int64)
    step = _block_rows(K)
    for s in range(0, K, step):
        sim = P32[s : s + step] @ P32.T
        rows = np.arange(len(sim))
        sim[rows, rows + s] = -np.inf
        out[s : s + step] = top_columns(sim, n)
    return out


def _anchors(P: np.ndarray, mix: float, neighbours: np.ndarray | None = None) -> np.ndarray:
    """Normalised mixtures ``mix * p_i + (1 - mix) * p_j`` of each prototype with its nearest others.

    Every ordered pair up to ``MAX_ANCHOR_NEIGHBOURS + 1`` speakers; beyond that each prototype is mixed
    only with its ``MAX_ANCHOR_NEIGHBOURS`` most similar prototypes (the best anchor for a clip lies near
    its nearest prototypes anyway), so memory grows linearly with the number of speakers. Row
    ``i * n + t`` mixes prototype ``i`` with its ``t``-th neighbour.
    """
    j = _neighbours(P) if neighbours is None else neighbours
    i = np.repeat(np.arange(len(P)), j.shape[1])
    return _normalise(mix * P[i] + (1.0 - mix) * P[j.ravel()])


def _anchor_inverse_norms(P: np.ndarray, neighbours: np.ndarray, mix: float) -> np.ndarray:
    """(K, n) ``1 / |mix * p_i + (1 - mix) * p_j|``: the anchor cosine from prototype similarities alone."""
    out = np.empty(neighbours.shape)
    step = _block_rows(neighbours.shape[1] * P.shape[1])
    for s in range(0, len(P), step):
        nb = neighbours[s : s + step]
        mixed = mix * P[s : s + step, None, :] + (1.0 - mix) * P[nb]
        out[s : s + step] = 1.0 / np.maximum(np.linalg.norm(mixed, axis=-1), 1e-12)
    return out


def _whitening(
    Z: np.ndarray, y: np.ndarray, n_classes: int, shrinkage: float
) -> tuple[np.ndarray, np.ndarray]:
    """Low-rank form of ``S^-1/2`` up to scale: ``x -> x + (x @ V.T) * gain @ V``.

    ``S = B.T @ B + shrinkage * I`` with ``B`` the scaled within-speaker deviations (n x d, rank < n), so
    the whitening only acts in the span ``V`` (r x d) of the deviations; working there keeps fit and the
    leave-one-out refits cheap for any embedding dimension.
    """
    d = Z.shape[1]
    order, _ = _group_order(y, n_classes)
    dev = Z[order] - _class_means(Z, y, n_classes)[y[order]]
    total = float((dev**2).sum())
    if shrinkage >= 1.0 or total <= 1e-12:  # whitening off, or one clip per speaker: nothing to learn
        return np.zeros((0, d)), np.zeros(0)
    B = dev * np.sqrt((1.0 - shrinkage) * d / total)
    if n_classes <= EXACT_MAX_SPEAKERS or len(B) <= d:
        _, sigma, Vt = np.linalg.svd(B, full_matrices=False)
        keep = sigma > 1e-9 * max(1.0, float(sigma.max()))
        basis, sigma = Vt[keep], sigma[keep]
    else:  # many clips: the d x d scatter's eigenvectors, n d^2 work instead of an n x d SVD
        ev, V = np.linalg.eigh(B.T @ B)
        keep = ev > 1e-12 * max(1.0, float(ev.max()))  # directions dropped here have gain ~ 1e-12
        basis, sigma = V[:, keep].T, np.sqrt(ev[keep])
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
        self.basis_, self.gain_, self.prototypes_, self.neighbours_, self.anchors_ = self._model(
            Z, y, n_classes
        )
        self._cache: dict[str, np.ndarray] = {}
        self.heldout_scores_ = self._heldout_scores(Z, y, n_classes)
        heldout_sums = np.bincount(y, np.nan_to_num(self.heldout_scores_), minlength=n_classes)
        held_counts = np.bincount(y, np.isfinite(self.heldout_scores_), minlength=n_classes)
        have = held_counts > 0
        surplus = np.zeros(n_classes)
        if n_classes <= EXACT_MAX_SPEAKERS:  # the original per-speaker loop, to the last bit
            for k in np.flatnonzero(have):
                surplus[k] = np.nanmean(self.heldout_scores_[y == k])
        else:
            surplus[have] = heldout_sums[have] / held_counts[have]
        if have.any():
            surplus[have] -= surplus[have].mean()
        self.offsets_ = float(self.speaker_offset) * surplus * have

    def _model(
        self, Z: np.ndarray, y: np.ndarray, n_classes: int, among: np.ndarray | None = None
    ) -> tuple[Any, ...]:
        """(basis, gain, prototypes, neighbour lists, anchors or None beyond the exact range)."""
        basis, gain = _whitening(Z, y, n_classes, float(self.shrinkage))
        P = _prototypes(_transform(Z, basis, gain), y, n_classes)
        nbr = _neighbours(P, among=among)
        A = _anchors(P, float(self.anchor_mix), nbr) if n_classes <= EXACT_MAX_SPEAKERS else None
        return basis, gain, P, nbr, A

    def _heldout_scores(self, Z: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
        """Own-speaker anchored score of each clip under a model refitted without it (NaN if impossible).

        Round r holds out the clips at position r, r + R, ... of every speaker with two clips or more
        (R = ``HELDOUT_ROUNDS``), so the cost is R fits whatever the number of clips. Beyond the exact
        range each round ranks neighbours among the full fit's nearest prototypes only.
        """
        counts = np.bincount(y, minlength=n_classes)
        order, starts = _group_order(y, n_classes)
        pos = np.empty(len(y), dtype=np.int64)
        pos[order] = np.arange(len(y)) - np.repeat(starts, counts)
        rounds = int(min(HELDOUT_ROUNDS, counts.max()))
        # beyond the exact range a round ranks only the full fit's nearest prototypes (see _neighbours)
        among = None if n_classes <= EXACT_MAX_SPEAKERS else _neighbours(self.prototypes_, EXACT_MAX_SPEAKERS)
        out = np.full(len(Z), np.nan)
        for r in range(rounds):
            held = (pos % rounds == r) & (counts[y] >= 2)
            if not held.any():
                continue
            basis, gain, P, nbr, A = self._model(Z[~held], y[~held], n_classes, among)
            Zt, yh = _transform(Z[held], basis, gain), y[held]
            own = np.empty(len(Zt))
            for rows, S, best_anchor in self._blocks(Zt, P, A, nbr):
                own[rows] = S[np.arange(len(S)), yh[rows]] - float(self.anchor_weight) * best_anchor
            out[held] = own
        return out

    # ---- scoring ----
    def _cached(self, name: str) -> Any:
        """What scoring beyond the exact range derives from the fitted arrays (never saved): float32
        offsets, anchor norms, and exact inner-product searches over the centres and prototypes."""
        cache = self.__dict__.setdefault("_cache", {})
        if name not in cache:
            if name == "offsets32":
                cache[name] = self.offsets_.astype(np.float32)
            elif name == "inv_norms":
                cache[name] = _anchor_inverse_norms(
                    self.prototypes_, self.neighbours_, float(self.anchor_mix)
                )
            elif name == "boosted":  # the lowest offsets, and the lowest of the others
                order = np.argsort(self.offsets_, kind="stable")
                cut = min(len(order) - 1, BOOSTED_SPEAKERS)
                cache[name] = (order[:cut], float(self._cached("offsets32")[order[cut]]))
            elif name in ("centers", "prototypes"):  # float32 copies (in a faiss index at scale)
                cache[name] = InnerProductSearch(getattr(self, f"{name}_"))
        return cache[name]

    def _blocks(
        self,
        Zt: np.ndarray,
        P: np.ndarray,
        A: np.ndarray | None,
        nbr: np.ndarray | None,
        inv_norms: np.ndarray | None = None,
        P32: np.ndarray | None = None,
    ) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
        """Blocks of (rows, prototype similarities ``Zt @ P.T``, best anchor cosine of each row).

        With anchors ``A``: every anchor, float64 (the exact method). Without: each row's anchors are
        those of its ``EXACT_MAX_SPEAKERS`` most similar prototypes, from float32 similarities.
        """
        K = len(P)
        if A is not None:
            step = _block_rows(K + len(A))
            for s in range(0, len(Zt), step):
                z = Zt[s : s + step]
                yield slice(s, s + len(z)), z @ P.T, (z @ A.T).max(axis=1)
            return
        assert nbr is not None
        mix = float(self.anchor_mix)
        inv = _anchor_inverse_norms(P, nbr, mix) if inv_norms is None else inv_norms
        P32 = P.astype(np.float32) if P32 is None else P32
        T = min(K, EXACT_MAX_SPEAKERS)
        step = _block_rows(K)
        for s in range(0, len(Zt), step):
            S = Zt[s : s + step].astype(np.float32) @ P32.T
            top = (
                np.argpartition(-S, T - 1, axis=1)[:, :T] if T < K else np.broadcast_to(np.arange(K), S.shape)
            )
            nb = nbr[top]  # (rows, T, n)
            s_i = np.take_along_axis(S, top, axis=1)[..., None]
            s_j = np.take_along_axis(S, nb.reshape(len(S), -1), axis=1).reshape(nb.shape)
            best = ((mix * s_i + (1.0 - mix) * s_j) * inv[top]).max(axis=(1, 2))
            yield slice(s, s + len(S)), S, best

    def _model_blocks(self, X: np.ndarray) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
        Zt = _transform(_normalise(X.astype(np.float64)), self.basis_, self.gain_)
        if self.anchors_ is not None:
            yield from self._blocks(Zt, self.prototypes_, self.anchors_, None)
        else:
            yield from self._blocks(
                Zt,
                self.prototypes_,
                None,
                self.neighbours_,
                self._cached("inv_norms"),
                self._cached("prototypes").B,
            )

    def open_set_scores(self, X: np.ndarray) -> np.ndarray:
        """(n, K) whitened, anchored, offset scores; their max is the open-set score."""
        out = np.empty((len(X), len(self.classes_)))
        for rows, S, best_anchor in self._model_blocks(X):
            out[rows] = S - float(self.anchor_weight) * best_anchor[:, None] - self.offsets_[None, :]
        return out

    def _open_set_max(self, X: np.ndarray) -> np.ndarray:
        """(n,) the max of ``open_set_scores`` without holding all n x K scores at once."""
        if self.anchors_ is None and self._cached("prototypes").fast_for(len(X)):
            return self._searched_open_set_max(X)
        out = np.empty(len(X))
        w = float(self.anchor_weight)
        for rows, S, best_anchor in self._model_blocks(X):
            if S.dtype == np.float32:  # beyond the exact range: the same max, without an n x K float64 copy
                out[rows] = (S - self._cached("offsets32")).max(axis=1) - w * best_anchor
            else:
                out[rows] = (S - w * best_anchor[:, None] - self.offsets_[None, :]).max(axis=1)
        return out

    def _searched_open_set_max(self, X: np.ndarray) -> np.ndarray:
        """``_open_set_max`` beyond the exact range from a top-k search (faiss): the same numbers, without
        an n x K score matrix.

        The search gives each row's ``OPEN_SET_CANDIDATES`` most similar prototypes and similarities,
        the first ``EXACT_MAX_SPEAKERS`` of which carry the anchors (their neighbours' similarities come
        from one product per pair). The max of ``S - offsets`` is then exact by a bound: a prototype
        outside the candidates has ``S <= s_last`` (the last candidate's similarity), so once the best
        candidate beats ``s_last - min(offsets)`` none can do better. The ``BOOSTED_SPEAKERS`` lowest
        offsets are scored for every row so that ``min`` is over the others (a few loose voices would
        otherwise weaken the bound for everyone); rows where the bound still fails are scored against
        every prototype.
        """
        search = self._cached("prototypes")
        inv, off = self._cached("inv_norms"), self._cached("offsets32")
        boosted, off_rest = self._cached("boosted")
        mix, w = float(self.anchor_mix), float(self.anchor_weight)
        K = len(self.classes_)
        T, C = min(K, EXACT_MAX_SPEAKERS), min(K, OPEN_SET_CANDIDATES)
        Zt = _transform(_normalise(X.astype(np.float64)), self.basis_, self.gain_).astype(np.float32)
        out = np.empty(len(X))
        step = max(64, BLOCK_VALUES // (T * self.neighbours_.shape[1] + C))
        for s in range(0, len(Zt), step):
            z = Zt[s : s + step]
            cand, s_c = search.search(z, C)
            top, s_i = cand[:, :T], s_c[:, :T]
            nb = self.neighbours_[top]  # (rows, T, n)
            s_j = search.products(z, nb.reshape(len(z), -1)).reshape(nb.shape)
            best = ((mix * s_i[..., None] + (1.0 - mix) * s_j) * inv[top]).max(axis=(1, 2))
            osmax = np.maximum(
                (s_c - off[cand]).max(axis=1), (z @ search.B[boosted].T - off[boosted]).max(axis=1)
            )
            unsure = np.flatnonzero(osmax < s_c[:, -1] - off_rest)
            rows = _block_rows(K)
            for u in range(0, len(unsure), rows):
                r = unsure[u : u + rows]
                osmax[r] = (z[r] @ search.B.T - off).max(axis=1)
            out[s : s + len(z)] = osmax - w * best
        return out

    def _decision_function(self, X: np.ndarray) -> np.ndarray:
        cos = _normalise(X.astype(np.float64)) @ self.centers_.T
        return cos - cos.max(axis=1, keepdims=True) + self._open_set_max(X)[:, None]

    def score_samples(self, X: Any) -> np.ndarray:
        """Open-set score (n,): the same values as ``decision_function(X).max(axis=1)``, in blocks."""
        self.check_is_fitted()
        X = check_embeddings(X, dim=self.n_features_in_)
        return self._open_set_max(X).astype(np.float32)

    def top_k(self, X: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """See ``OpenSetClassifier.top_k``; beyond the exact range the cosine ranking is float32."""
        if len(self.classes_) <= EXACT_MAX_SPEAKERS:
            return super().top_k(X, k)
        self.check_is_fitted()
        X = check_embeddings(X, dim=self.n_features_in_)
        k = max(1, min(int(k), len(self.classes_)))
        osmax = self._open_set_max(X)
        idx, best = self._cached("centers").search(_normalise(X.astype(np.float32)), k)
        return idx, (best - best[:, :1] + osmax[:, None]).astype(np.float32)

    def _default_threshold(self, X: np.ndarray, y: np.ndarray, X_unknown: np.ndarray | None) -> float:
        """Accept every held-out enrollment clip: the lowest cross-fitted score after offsets.

        ``srpl tune`` recalibrates with its own cross-fitted rule; this is the fallback for direct use.
        """
        held = self.heldout_scores_ - self.offsets_[y]
        if not np.isfinite(held).any():
            return float(self.score_samples(X).min() - 1e-6)
        return float(np.nanmin(held) - 1e-6)

    # ---- persistence ----
    _ARRAYS = ("centers", "basis", "gain", "prototypes", "offsets", "heldout_scores")

    def _get_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {n: np.asarray(getattr(self, f"{n}_"), dtype=np.float64) for n in self._ARRAYS}
        arrays["anchor_neighbours"] = np.asarray(self.neighbours_, dtype=np.int64)
        if self.anchors_ is not None:  # beyond the exact range the neighbour lists stand for them
            arrays["anchors"] = np.asarray(self.anchors_, dtype=np.float64)
        return arrays, {}

    def _set_state(self, arrays: dict[str, np.ndarray], extra: dict[str, Any]) -> None:
        missing = [n for n in self._ARRAYS if n not in arrays]
        if "anchors" not in arrays and "anchor_neighbours" not in arrays:
            missing.append("anchors")
        if missing:
            raise DataError(f"saved anchored-cosine model lacks the array(s) {', '.join(missing)}")
        for n in self._ARRAYS:
            setattr(self, f"{n}_", np.asarray(arrays[n], dtype=np.float64))
        self.anchors_ = np.asarray(arrays["anchors"], dtype=np.float64) if "anchors" in arrays else None
        self.neighbours_ = (
            np.asarray(arrays["anchor_neighbours"], dtype=np.int64) if "anchor_neighbours" in arrays else None
        )
        d, K = self.n_features_in_, len(self.classes_)
        if (
            self.centers_.shape != (K, d)
            or self.prototypes_.shape != (K, d)
            or self.basis_.shape[1:] != (d,)
            or self.gain_.shape != self.basis_.shape[:1]
            or self.offsets_.shape != (K,)
            or (self.anchors_ is not None and self.anchors_.shape[1:] != (d,))
            or (self.neighbours_ is not None and not _valid_neighbours(self.neighbours_, K))
        ):
            raise DataError("saved anchored-cosine model has arrays of the wrong shape")
        self._cache = {}


def _valid_neighbours(nbr: np.ndarray, K: int) -> bool:
    return nbr.ndim == 2 and nbr.shape[0] == K and bool(((nbr >= 0) & (nbr < K)).all())


def _transform(Z: np.ndarray, basis: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """Whiten unit-length rows ``Z`` (low-rank form of ``_whitening``) and normalise again."""
    if len(basis) == 0:
        return Z
    return _normalise(Z + ((Z @ basis.T) * gain) @ basis)
