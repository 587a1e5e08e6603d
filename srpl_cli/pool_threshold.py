"""The rejection threshold read from an unlabeled pool's score mixture.

A deployment's pool holds clips of enrolled people and of strangers. Their open-set scores form two
groups: high (an enrolled voice) and low (nobody known). A two-component Gaussian mixture fitted to
those scores (scikit-learn's ``GaussianMixture``: EM with several restarts, well tested) estimates
both groups in the deployment's own room, channel and moods. The pool threshold minimises the
*balanced* error (the mean of the share of known clips rejected and the share of strangers accepted)
over the pool's clips, each counted by its posterior membership of each group, whatever the pool's
proportions; it is averaged with the cross-fitted threshold (measured: better than either alone on
every development protocol, docs/accuracy.md).

Cross-fitting the enrollment (``srpl_cli.calibration``) only sees held-out *enrollment* clips (the
same mood and session as the enrollment) and left-out enrolled speakers as strangers; its threshold
transfers badly to the deployment's real clips. The pool's threshold is trusted only when the mixture
shows two clearly separated groups of real weight (a pool of only strangers or only enrolled people
is one group: then the cross-fitted threshold stays), and is kept between the bounds the cross-fitting
allows (see ``mixture_threshold``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: fewest pool clips whose mixture is trusted
MIN_POOL = 20
#: each group must hold at least this share of the pool
MIN_WEIGHT = 0.05
#: groups must be this many pooled standard deviations apart (Ashman's D)
MIN_SEPARATION = 2.0


def pool_scores(
    method: str,
    kwargs: dict[str, Any],
    X: np.ndarray,
    y: np.ndarray,
    pool: np.ndarray,
    model: Any,
    seed: int = 0,
    extra_unknown: np.ndarray | None = None,
) -> np.ndarray:
    """Open-set scores of every pool clip by a model that did not learn from that clip.

    A backend that learns from the pool (``uses_pool``, or ``pool_negatives``: its strangers) is refitted
    twice, each time on half of it, and scores the other half (two-fold cross-fitting); any other
    backend never saw the pool and ``model`` scores it. ``extra_unknown``: the user's unknown samples,
    which every refit learns from as the full model did.
    """
    from srpl_cli.backends import get_backend

    negatives = getattr(model, "pool_negatives", False)
    if not getattr(model, "uses_pool", False) and not negatives:
        return np.asarray(model.score_samples(pool), dtype=np.float64)
    rng = np.random.default_rng(seed)
    half = rng.permutation(len(pool)) % 2 == 0
    out = np.empty(len(pool))
    for side in (half, ~half):
        if not side.any() or side.all():  # one clip: score it with the full model
            out[side] = model.score_samples(pool[side]) if side.any() else out[side]
            continue
        learn = pool[~side]
        if negatives:  # it trains on the other half's strangers, as the full model did on all of them
            from srpl_cli.pool import in_domain_negatives

            learn = in_domain_negatives(X, y, learn)
        if extra_unknown is not None and len(extra_unknown):
            learn = np.concatenate([extra_unknown, learn]) if len(learn) else extra_unknown
        m = get_backend(method, **kwargs).fit(X, y, learn if len(learn) else None)
        out[side] = m.score_samples(pool[side])
    return out


def mixture_threshold(scores: np.ndarray, genuine: np.ndarray, impostor: np.ndarray) -> dict[str, Any]:
    """What the pool's scores say about the threshold: ``threshold`` None when they are not trusted.

    The two-group fit must beat one group by BIC, each group must hold ``MIN_WEIGHT`` of the pool and
    be ``MIN_SEPARATION`` apart. The threshold is then clipped to the range the cross-fitting supports:
    never above the median held-out genuine score (it would reject most enrollment-like clips) and
    never below the median score of left-out enrolled speakers (it would accept most strangers).
    """
    from sklearn.mixture import GaussianMixture

    s = np.asarray(scores, dtype=np.float64).reshape(-1, 1)
    info: dict[str, Any] = {"clips": int(len(s)), "threshold": None}
    if len(s) < MIN_POOL or float(s.std()) <= 1e-9:
        info["reason"] = f"fewer than {MIN_POOL} distinct pool scores"
        return info
    one = GaussianMixture(1, random_state=0).fit(s)
    two = GaussianMixture(2, n_init=3, random_state=0).fit(s)
    order = np.argsort(two.means_.ravel())
    mu = two.means_.ravel()[order]
    var = two.covariances_.ravel()[order]
    w = two.weights_[order]
    separation = float(abs(mu[1] - mu[0]) / np.sqrt((var[0] + var[1]) / 2))
    info.update(
        known_weight=float(w[1]),
        separation=separation,
        bic_gain=float(one.bic(s) - two.bic(s)),
    )
    if one.bic(s) <= two.bic(s) or w.min() < MIN_WEIGHT or separation < MIN_SEPARATION:
        info["reason"] = "the pool's scores do not show two groups (only strangers, only enrolled people?)"
        return info
    t = _balanced_split(s.ravel(), two.predict_proba(s)[:, order])
    if len(genuine) and len(impostor):
        from srpl_cli.calibration import equal_error_threshold

        # the cross-fitted threshold knows the enrollment's own voices; the pool knows the room
        t = (t + equal_error_threshold(genuine, impostor)) / 2
    if len(genuine):
        t = min(t, float(np.median(genuine)))
    if len(impostor):
        t = max(t, float(np.median(impostor)))
    info["threshold"] = float(t)
    return info


def _balanced_split(s: np.ndarray, resp: np.ndarray) -> float:
    """Threshold minimising the balanced error of the pool's clips, each counted by its posterior
    membership of the low (``resp[:, 0]``) and high (``resp[:, 1]``) group: the empirical scores
    decide, the mixture only says how much each clip belongs to each group."""
    order = np.argsort(s)
    s, resp = s[order], resp[order]
    high_below = np.concatenate([[0.0], np.cumsum(resp[:, 1])]) / max(resp[:, 1].sum(), 1e-12)
    low_above = 1.0 - np.concatenate([[0.0], np.cumsum(resp[:, 0])]) / max(resp[:, 0].sum(), 1e-12)
    cand = np.concatenate([[s[0] - 1e-6], (s[:-1] + s[1:]) / 2, [s[-1] + 1e-6]])
    return float(cand[int(np.argmin(high_below + low_above))])
