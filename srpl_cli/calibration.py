"""Calibration of the rejection threshold, shared by `srpl tune` and `srpl evaluate`.

A backend is fitted on the enrollment, and its accept/reject threshold is set from scores of clips it
did not train on: genuine scores by cross-fitting the enrollment, impostor scores by leaving whole
speakers out (plus any unknown samples). The threshold rules themselves (at a false-accept or
false-reject rate) live in ``srpl_cli.backends.calibration``.

With an unlabeled pool (``tune --unlabeled``), the pool's own scores are a second source: the pool is
a mixture of enrolled people and strangers of the deployment's domain, so its score distribution shows
where "known" ends far better than left-out enrolled speakers do. ``srpl_cli.pool_threshold`` reads
the threshold from that mixture and falls back to the cross-fitted one whenever the mixture does not
clearly show two groups.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: None: threshold where held-out false accepts equal false rejects; a number: that false-accept rate
DEFAULT_TARGET_FAR: float | None = None
#: false-accept rate used when impostor scores exist but no genuine ones (one clip per speaker)
FALLBACK_FAR = 0.05
#: false-reject rate aimed for on held-out enrollment clips when there are too few speakers for impostors
DEFAULT_TARGET_FRR = 0.05
#: held-out scores per side (genuine, left-out speakers) after which no further cross-fitting round is
#: run: at thousands of speakers one round already yields thousands of scores (docs/usage.md)
SCORES_PER_SIDE = 5000
#: below this many values in the enrollment (clips x dim), linear algebra runs on one thread: the
#: matrices are so small that starting threads costs more than it saves
SINGLE_THREAD_VALUES = 200_000


def fit_backend(
    method: str,
    X: np.ndarray,
    y: np.ndarray,
    X_unknown: np.ndarray | None = None,
    seed: int = 0,
    target_far: float | None = DEFAULT_TARGET_FAR,
    params: dict[str, Any] | None = None,
    origin: np.ndarray | None = None,
    pool: np.ndarray | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Fit backend ``method`` and calibrate its rejection threshold (the same rule in tune and evaluate).

    The threshold needs scores of clips the model did not train on (docs/usage.md, "Rejection
    threshold"). Genuine scores come from cross-fitting the enrollment (each round holds one clip of
    every speaker out); impostor scores from leaving whole speakers out (their clips, scored by a
    model that does not know them, are in-domain strangers) plus any unknown samples. With
    ``target_far=None`` the threshold is where held-out false accepts equal false rejects; otherwise it
    accepts at most ``target_far`` of the impostor scores. ``origin`` (see ``held_out_scores``) ties
    synthetic variants to the clip they were made from.

    ``pool``: unlabeled in-domain clips (enrolled people and strangers, labels never used). A backend
    that ``uses_pool`` learns from it (with any unknown samples added to it, unlabeled too); for every
    backend the pool's score mixture sets the threshold when it shows two groups (``pool_threshold``).
    """
    from srpl_cli.backends import backend_class, get_backend
    from srpl_cli.backends.calibration import threshold_at_far

    cls = backend_class(method)
    kwargs = dict(params or {})
    if "random_state" in cls._param_names() and "random_state" not in kwargs:
        kwargs["random_state"] = seed
    user_unknown = X_unknown  # the pool threshold's refits learn from these too, as the full model does
    pool, X_unknown, learn_pool = route_pool(cls, X, y, X_unknown, pool)
    has_pool = pool is not None
    pool_info: dict[str, Any] | None = None
    with _blas_threads(np.asarray(X).size):
        model = get_backend(method, **kwargs).fit(X, y, learn_pool if cls.uses_pool else X_unknown)
        kwargs = {**kwargs, **model.refit_params()}  # held-out refits score on the full model's scale
        genuine, impostor = held_out_scores(method, kwargs, X, y, X_unknown, origin=origin, pool=learn_pool)
        if has_pool and target_far is None:
            from srpl_cli.pool_threshold import holds_no_strangers, mixture_threshold, pool_scores

            scores = pool_scores(method, kwargs, X, y, pool, model, seed, extra_unknown=user_unknown)
            pool_info = mixture_threshold(scores, genuine, impostor)
            safe = model.strangerless_params() if cls.uses_pool else None
            if (
                pool_info["threshold"] is None
                and safe is not None
                and len(genuine)
                and len(impostor)
                and holds_no_strangers(scores, equal_error_threshold(genuine, impostor))
            ):
                # enrolled people only: what the pool would teach about strangers is wrong; refit without it
                kwargs = {**kwargs, **safe}
                model = get_backend(method, **kwargs).fit(X, y, learn_pool)
                genuine, impostor = held_out_scores(
                    method, kwargs, X, y, None, origin=origin, pool=learn_pool
                )
                pool_info["reason"] = (
                    "the pool seems to hold enrolled people only: learned nothing about strangers"
                )
                pool_info["strangers"] = False
            elif getattr(model, "stranger_evidence_", None) == 0.0:  # the backend saw no strangers either
                pool_info["strangers"] = False
    if pool_info is not None and pool_info.get("threshold") is not None:
        thr = float(pool_info["threshold"])
        rule = "the unlabeled pool's score mixture (known and unknown groups equally likely to err)"
    elif len(impostor) and len(genuine) and target_far is None:
        thr = equal_error_threshold(genuine, impostor)
        rule = "equal held-out false-accept and false-reject rates"
    elif len(impostor):
        far = target_far if target_far is not None else FALLBACK_FAR
        thr = threshold_at_far(impostor, far)
        rule = f"accept at most {far:.0%} of held-out impostor scores"
    elif len(genuine):
        from srpl_cli.backends.calibration import threshold_at_frr

        thr = threshold_at_frr(genuine, DEFAULT_TARGET_FRR)
        rule = f"reject at most {DEFAULT_TARGET_FRR:.0%} of held-out enrollment clips (too few speakers for impostors)"
    else:
        thr = float(model.threshold_)
        rule = "backend default (too few clips to hold any out)"
    model.set_threshold(thr)
    info: dict[str, Any] = {
        "rule": rule,
        "threshold": float(thr),
        "target_far": target_far,
        "heldout_genuine": int(len(genuine)),
        "heldout_impostor": int(len(impostor)),
    }
    if len(genuine):
        info["heldout_frr"] = float((genuine < thr).mean())
    if len(impostor):
        info["heldout_far"] = float((impostor >= thr).mean())
    if pool_info is not None:
        info["pool"] = pool_info
    return model, info


def route_pool(
    cls: Any, X: np.ndarray, y: np.ndarray, X_unknown: np.ndarray | None, pool: np.ndarray | None
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """How an unlabeled pool reaches backend class ``cls`` (``fit_backend``, and evaluate's uncalibrated
    fits): (the pool without the enrollment's own rows and repeats, ``None`` when empty; the unknown
    samples the backend fits with; the pool a ``uses_pool`` backend fits with, the unknown samples
    added, else ``None``). A ``pool_negatives`` backend gets the pool's in-domain strangers as unknown
    samples."""
    if pool is not None and len(pool):
        pool = _without_rows(pool, X)  # enrollment clips and repeats would leak into cross-fitting
    if pool is None or not len(pool):
        pool = None
    if cls.uses_pool:
        from srpl_cli.backends.pool_propagation import NEEDS_POOL
        from srpl_cli.errors import DataError

        if pool is None:
            raise DataError(NEEDS_POOL)
        learn_pool = pool if X_unknown is None or not len(X_unknown) else np.concatenate([pool, X_unknown])
        return pool, None, learn_pool
    if cls.pool_negatives and pool is not None:
        from srpl_cli.pool import in_domain_negatives

        negatives = in_domain_negatives(X, y, pool)
        if len(negatives):
            X_unknown = negatives if X_unknown is None else np.concatenate([X_unknown, negatives])
    return pool, X_unknown, None


def _without_rows(pool: np.ndarray, X: np.ndarray) -> np.ndarray:
    """``pool`` without the rows that are exactly rows of ``X``, and each repeated row once (in order):
    a clip heard twice would otherwise sit on both sides of the pool's cross-fitting and count twice in
    its score mixture."""
    seen = {row.tobytes() for row in np.asarray(X, dtype=np.float32)}
    P = np.asarray(pool, dtype=np.float32)
    keep = []
    for row in P:
        key = row.tobytes()
        keep.append(key not in seen)
        seen.add(key)
    return P[keep]


def _blas_threads(n_values: int) -> Any:
    """One BLAS thread for small problems (threadpoolctl, the library scikit-learn uses for this)."""
    from contextlib import nullcontext

    if n_values >= SINGLE_THREAD_VALUES:
        return nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def calibration_plan(
    n_speakers: int, n_scored_clips: int, rounds: int, max_speaker_groups: int
) -> tuple[int, int]:
    """How many genuine rounds and left-out speaker groups ``held_out_scores`` runs (the subsampling rule).

    A genuine round scores one held-out clip per speaker, a left-out group about ``n_scored_clips /
    groups`` clips. Rounds (and groups) stop once ``SCORES_PER_SIDE`` scores are expected on that side,
    never fewer than one: every round and group is run up to 1,000 speakers x 5 clips; at 10,000 speakers
    one round and one group of 1,000 speakers (5,000 clips) remain, so the cost of calibration grows like
    one fit instead of fifteen. ``rounds`` and ``max_speaker_groups`` are the caps at small sizes.
    """
    n_rounds = min(rounds, max(1, -(-SCORES_PER_SIDE // max(1, n_speakers))))
    n_groups = min(max_speaker_groups, n_speakers)
    per_group = max(1, n_scored_clips // max(1, n_groups))
    return n_rounds, min(n_groups, max(1, -(-SCORES_PER_SIDE // per_group)))


def equal_error_threshold(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """Threshold (accept when score >= t) where the false-reject rate of ``genuine`` best equals the
    false-accept rate of ``impostor``; midway between neighbouring scores so it generalises."""
    scores = np.unique(np.concatenate([genuine, impostor]))
    g = np.sort(genuine)
    i = np.sort(impostor)
    frr = np.searchsorted(g, scores, side="left") / len(g)
    far = 1.0 - np.searchsorted(i, scores, side="left") / len(i)
    k = int(np.argmin(np.abs(frr - far) + 1e-9 * np.arange(len(scores))))
    lower = scores[k - 1] if k > 0 else scores[k] - 1e-6
    return float((lower + scores[k]) / 2)


def held_out_scores(
    method: str,
    kwargs: dict[str, Any],
    X: np.ndarray,
    y: np.ndarray,
    X_unknown: np.ndarray | None,
    rounds: int = 5,
    max_speaker_groups: int = 10,
    origin: np.ndarray | None = None,
    pool: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(genuine, impostor) open-set scores of clips the fitted model did not see.

    Genuine: round r holds clip r of every speaker out; the clip scores its best column, as in
    `identify`. Impostor: each round leaves a group of speakers out entirely (at most
    ``max_speaker_groups`` rounds, so cost stays bounded), and their clips' best scores are what a
    stranger of the same domain would get; unknown samples are held out 1/rounds at a time. With
    thousands of speakers ``calibration_plan`` runs fewer rounds and groups (one each at 10,000).

    ``origin[i]`` is the row of the real clip that row ``i`` was made from: ``i`` for a real clip, the
    source row for a synthetic variant, -1 for a variant of no single clip. Only real clips are scored,
    and a held-out clip takes its variants out with it (a variant of the test clip in the training data
    would make the genuine scores optimistic). Without ``origin`` every row is a real clip.

    ``pool`` (backends that ``uses_pool``): the unlabeled pool every refit learns from; it is never
    held out nor scored (it holds enrolled people too, so its scores are no impostor scores).
    """
    from srpl_cli.backends import get_backend

    y = np.asarray(y)
    real = np.ones(len(y), bool) if origin is None else np.asarray(origin) == np.arange(len(y))
    classes, y_idx = np.unique(y, return_inverse=True)
    counts = np.bincount(y_idx[real], minlength=len(classes))
    plan_rounds, plan_groups = calibration_plan(len(classes), int(real.sum()), rounds, max_speaker_groups)
    genuine: list[np.ndarray] = []
    impostor: list[np.ndarray] = []
    has_unknown = X_unknown is not None and len(X_unknown) > 0
    if counts.min() >= 2:
        pos = np.full(len(y), -1)
        for c in range(len(classes)):
            idx = np.flatnonzero(real & (y_idx == c))
            pos[idx] = np.arange(len(idx))
        if origin is not None:  # a variant follows its source clip in and out
            derived = ~real & (np.asarray(origin) >= 0)
            pos[derived] = pos[np.asarray(origin)[derived]]
        n_rounds = int(min(rounds, counts.min()))
        u_fold = np.arange(len(X_unknown)) % n_rounds if has_unknown else None
        for r in range(min(n_rounds, plan_rounds)):  # rounds past the plan's count are not run (large K)
            held = (pos >= 0) & (pos % n_rounds == r)
            Xu_train = X_unknown[u_fold != r] if u_fold is not None else None
            m = get_backend(method, **kwargs).fit(X[~held], y[~held], Xu_train if pool is None else pool)
            genuine.append(m.score_samples(X[held & real]))
            if u_fold is not None and (u_fold == r).any():  # fewer unknowns than rounds: some hold none
                impostor.append(m.score_samples(X_unknown[u_fold == r]))
    if len(classes) >= 3:  # the model left after removing a group must still know 2 speakers
        n_groups = min(max_speaker_groups, len(classes))
        group_of = np.arange(len(classes)) % n_groups
        for g in range(plan_groups):  # groups past the plan's count are not left out (large K)
            out = group_of[y_idx] == g
            if len(np.unique(y_idx[~out])) < 2:
                continue
            m = get_backend(method, **kwargs).fit(X[~out], y[~out], X_unknown if pool is None else pool)
            impostor.append(m.score_samples(X[out & real]))
    return (
        np.concatenate(genuine) if genuine else np.zeros(0, np.float32),
        np.concatenate(impostor) if impostor else np.zeros(0, np.float32),
    )
