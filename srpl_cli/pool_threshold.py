"""The rejection threshold read from an unlabeled pool's score mixture.

A deployment's pool holds clips of enrolled people and of strangers. Their open-set scores form two
groups: high (an enrolled voice) and low (nobody known). A two-component Gaussian mixture fitted to
those scores estimates both groups in the deployment's own room, channel and moods. The pool threshold
minimises the *balanced* error (the mean of the share of known clips rejected and the share of
strangers accepted) over the pool's clips, each counted by its posterior membership of each group,
whatever the pool's proportions.

Two things keep that estimate honest (measured in docs/accuracy.md):

- **Pool scores like test scores.** A backend that learns from the pool scores each pool clip with a
  model refitted without that clip's fold (``POOL_FOLDS``-fold cross-fitting). Two folds left each
  model only half the pool, which raised every pool score above what the full model gives a new clip.
- **The known group is no broader than a known voice.** Strangers' scores often have a long upper
  tail (many single clips of different people, some close to an enrolled voice); a free Gaussian for
  the known group swallows that tail and puts the threshold far too low. The known group's standard
  deviation is capped at that of the enrollment's own held-out clips (cross-fitting), the one measure
  of how much a known voice's scores spread that needs no labels. The fit is the same EM as
  scikit-learn's ``GaussianMixture`` (which starts it and decides by BIC whether there are two groups
  at all) with that one constraint, which scikit-learn cannot express.

The pool's threshold is trusted only when the mixture shows two clearly separated groups of real
weight (a pool of only strangers or only enrolled people is one group) and when the high group could be
enrolled voices: more than ``MAX_KNOWN_SHIFT`` of their spreads below the held-out enrollment clips it
is the upper tail of a strangers-only pool. Otherwise the cross-fitted threshold of
``srpl_cli.calibration`` stays. A trusted threshold is kept between the bounds the cross-fitting
allows (see ``mixture_threshold``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: fewest pool clips whose mixture is trusted
MIN_POOL = 20
#: each group must hold at least this share of the pool
MIN_WEIGHT = 0.05
#: and at least this many clips (expected): fewer cannot say where a group ends
MIN_GROUP_CLIPS = 10
#: groups must be this many pooled standard deviations apart (Ashman's D)
MIN_SEPARATION = 2.0
#: the high group is no enrolled voice when its mean is this many held-out genuine standard deviations
#: below the genuine median (it is then the upper tail of the strangers' scores)
MAX_KNOWN_SHIFT = 3.0
#: a pool that shows one group with at least this share above the cross-fitted threshold holds no strangers
NO_STRANGER_SHARE = 0.8
#: fewest held-out genuine scores whose spread caps the high group (fewer: no cap, no shift check)
MIN_GENUINE = 5
#: share of the balanced error's known side counted on the held-out enrollment clips (the rest on the
#: pool's high group): they are enrolled voices for sure, so the split stays below where enrolled voices
#: score when the high group takes in a tail of strangers
GENUINE_SHARE = 0.5
#: cross-fitting folds for the pool scores of a backend that learns from the pool
POOL_FOLDS = 5
#: EM iterations of the capped two-group fit (1-D: converges in a few dozen)
EM_STEPS = 200


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
    ``POOL_FOLDS`` times, each time without one fold of the pool, and scores that fold; any other
    backend never saw the pool and ``model`` scores it. ``extra_unknown``: the user's unknown samples,
    which every refit learns from as the full model did.
    """
    from srpl_cli.backends import get_backend

    negatives = getattr(model, "pool_negatives", False)
    if not getattr(model, "uses_pool", False) and not negatives:
        return np.asarray(model.score_samples(pool), dtype=np.float64)
    folds = np.random.default_rng(seed).permutation(len(pool)) % min(POOL_FOLDS, len(pool))
    out = np.empty(len(pool))
    for f in np.unique(folds):
        side = folds == f
        if side.all():  # one clip: score it with the full model
            out[side] = model.score_samples(pool[side])
            continue
        learn = pool[~side]
        if negatives:  # it trains on the other folds' strangers, as the full model did on all of them
            from srpl_cli.pool import in_domain_negatives

            learn = in_domain_negatives(X, y, learn)
        if extra_unknown is not None and len(extra_unknown):
            learn = np.concatenate([extra_unknown, learn]) if len(learn) else extra_unknown
        m = get_backend(method, **kwargs).fit(X, y, learn if len(learn) else None)
        out[side] = m.score_samples(pool[side])
    return out


def mixture_threshold(scores: np.ndarray, genuine: np.ndarray, impostor: np.ndarray) -> dict[str, Any]:
    """What the pool's scores say about the threshold: ``threshold`` None when they are not trusted.

    ``genuine`` / ``impostor``: the cross-fitted enrollment's held-out scores. The high group's spread
    is capped at the genuine scores' (module docstring). The two-group fit must beat one group by BIC
    and its groups be ``MIN_SEPARATION`` apart, each must hold ``MIN_WEIGHT`` of the pool and
    ``MIN_GROUP_CLIPS`` clips, and the high group must lie within ``MAX_KNOWN_SHIFT`` genuine spreads
    of the genuine median. The threshold is then clipped to the range the cross-fitting supports: never
    above the median held-out genuine score (it would reject most enrollment-like clips) and never below
    the median score of left-out enrolled speakers (it would accept most strangers).
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
    cap = float(np.std(genuine)) if len(genuine) >= MIN_GENUINE else None
    mu, var, w, resp = _capped_mixture(
        s.ravel(), two.means_.ravel()[order], two.covariances_.ravel()[order], two.weights_[order], cap
    )
    separation = float(abs(mu[1] - mu[0]) / np.sqrt((var[0] + var[1]) / 2))
    bic_gain = float(one.bic(s) - two.bic(s))  # > 0: two groups describe the scores better than one
    info.update(
        known_weight=float(w[1]),
        known_sd=float(np.sqrt(var[1])),
        known_sd_cap=cap,
        separation=separation,
        bic_gain=bic_gain,
    )
    if bic_gain <= 0 or separation < MIN_SEPARATION:
        info["reason"] = "the pool's scores do not show two groups (only strangers, only enrolled people?)"
        return info
    if w.min() < MIN_WEIGHT or w.min() * len(s) < MIN_GROUP_CLIPS:
        info["reason"] = (
            f"one group of the pool's scores holds under {MIN_GROUP_CLIPS} clips or {MIN_WEIGHT:.0%} of them"
        )
        return info
    if cap is not None and mu[1] < float(np.median(genuine)) - MAX_KNOWN_SHIFT * cap:
        info["reason"] = "the pool's high group scores far below held-out enrollment clips (strangers only?)"
        return info
    t = _balanced_split(s.ravel(), resp, genuine if cap is not None else None)
    if len(genuine):
        t = min(t, float(np.median(genuine)))
    if len(impostor):
        t = max(t, float(np.median(impostor)))
    info["threshold"] = float(t)
    return info


def holds_no_strangers(scores: np.ndarray, threshold: float) -> bool:
    """Whether a pool whose scores show one group (``mixture_threshold`` did not trust it) is enrolled
    people only: ``NO_STRANGER_SHARE`` of it is accepted at the cross-fitted ``threshold``.

    A pool method then learns "nobody I know" from nothing: every clip near anyone enrolled looks
    known (measured in docs/accuracy.md, *Robust pools*). Pools of strangers only, or mixed, leave
    most of their clips below that threshold.
    """
    s = np.asarray(scores, dtype=np.float64)
    return bool(len(s) and (s >= threshold).mean() >= NO_STRANGER_SHARE)


def _capped_mixture(
    s: np.ndarray, mu: np.ndarray, var: np.ndarray, w: np.ndarray, cap: float | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """EM for two 1-D Gaussians (low, high) from a scikit-learn start, the high group's standard
    deviation kept at most ``cap`` (None: free). Returns means, variances, weights, posteriors."""
    mu, var, w = (np.asarray(a, dtype=np.float64).copy() for a in (mu, var, w))
    floor = 1e-6 * float(s.var()) + 1e-12

    def posteriors() -> np.ndarray:
        if cap is not None:
            var[1] = min(var[1], max(cap**2, floor))
        lp = (
            -0.5 * (s[:, None] - mu) ** 2 / var
            - 0.5 * np.log(2 * np.pi * var)
            + np.log(np.maximum(w, 1e-300))
        )
        p = np.exp(lp - lp.max(axis=1, keepdims=True))
        return p / p.sum(axis=1, keepdims=True)

    for _ in range(EM_STEPS if cap is not None else 0):  # free: scikit-learn's fit is the answer
        p = posteriors()
        n = p.sum(axis=0) + 1e-12
        w, mu = n / n.sum(), (p * s[:, None]).sum(axis=0) / n
        var = np.maximum((p * (s[:, None] - mu) ** 2).sum(axis=0) / n, floor)
    return mu, var, w, posteriors()


def _balanced_split(s: np.ndarray, resp: np.ndarray, genuine: np.ndarray | None = None) -> float:
    """Threshold (accept when score >= t) minimising the balanced error of the pool's clips, each counted
    by its posterior membership of the low (``resp[:, 0]``) and high (``resp[:, 1]``) group: the empirical
    scores decide, the mixture only says how much each clip belongs to each group. With ``genuine``
    (held-out enrollment scores) the known side's error is ``GENUINE_SHARE`` theirs and the rest the high
    group's.

    Where the error is flat (a gap between the pool's scores) the threshold is the gap's upper edge, the
    lowest score the split accepts: known voices' scores are tight (the capped spread), strangers' have a
    long upper tail, so a new clip in the gap is more likely a stranger's (docs/accuracy.md)."""
    order = np.argsort(s)
    s, resp = s[order], resp[order]
    pts = np.unique(s if genuine is None else np.concatenate([s, genuine]))
    cand = np.concatenate([pts, [pts[-1] + 1e-6]])
    below = np.searchsorted(s, cand)  # pool clips under each candidate (rejected)
    high_below = np.concatenate([[0.0], np.cumsum(resp[:, 1])])[below] / max(resp[:, 1].sum(), 1e-12)
    low_above = 1.0 - np.concatenate([[0.0], np.cumsum(resp[:, 0])])[below] / max(resp[:, 0].sum(), 1e-12)
    if genuine is not None and len(genuine):
        g_below = np.searchsorted(np.sort(genuine), cand) / len(genuine)
        high_below = (1.0 - GENUINE_SHARE) * high_below + GENUINE_SHARE * g_below
    return float(cand[int(np.argmin(high_below + low_above))])  # first minimum: the lowest such edge
