"""The pool threshold: a two-group mixture of the pool's scores, the known group capped in spread."""

import numpy as np
import pytest

from srpl_cli.pool_threshold import (
    POOL_FOLDS,
    _balanced_split,
    _capped_mixture,
    mixture_threshold,
    pool_scores,
)


def _long_tail_pool(rng: np.random.Generator, n_known: int = 15, n_strangers: int = 75):
    """Known voices tight around 1.2; strangers around 0.25 with a long upper tail (single clips of
    many people, some near an enrolled voice), as librispeech-mini's pool scores look."""
    known = rng.normal(1.2, 0.1, n_known)
    strangers = 0.15 + rng.gamma(1.5, 0.12, n_strangers)
    return known, strangers


def _balanced_error(t: float, known: np.ndarray, strangers: np.ndarray) -> float:
    return ((known < t).mean() + (strangers >= t).mean()) / 2


def test_a_long_stranger_tail_does_not_drag_the_threshold_down():
    rng = np.random.default_rng(0)
    capped, free = [], []
    for _ in range(20):
        known, strangers = _long_tail_pool(rng)
        genuine = rng.normal(1.2, 0.1, 25)  # held-out enrollment clips spread like a known voice
        impostor = rng.normal(0.2, 0.1, 25)
        pool = np.concatenate([known, strangers])
        t_capped = mixture_threshold(pool, genuine, impostor)["threshold"]
        t_free = mixture_threshold(pool, genuine * 0 + np.linspace(-5, 5, 25), impostor)["threshold"]
        fresh_known, fresh_strangers = _long_tail_pool(rng, 500, 500)
        capped.append(_balanced_error(t_capped, fresh_known, fresh_strangers))
        free.append(_balanced_error(t_free, fresh_known, fresh_strangers))
    assert np.mean(capped) < 0.5 * np.mean(free)
    assert np.mean(capped) < 0.02


def test_the_cap_changes_nothing_when_the_known_group_is_narrow_enough():
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(1)
    s = np.concatenate([rng.normal(0.0, 0.1, 200), rng.normal(1.0, 0.1, 100)])
    gm = GaussianMixture(2, n_init=3, random_state=0, tol=1e-8).fit(s.reshape(-1, 1))
    o = np.argsort(gm.means_.ravel())
    start = (gm.means_.ravel()[o], gm.covariances_.ravel()[o], gm.weights_[o])
    mu, var, w, _ = _capped_mixture(s, *start, cap=10.0)  # a cap that never binds: scikit-learn's answer
    np.testing.assert_allclose(mu, start[0], atol=1e-4)
    np.testing.assert_allclose(var, start[1], rtol=1e-3)
    assert np.sqrt(_capped_mixture(s, *start, cap=0.05)[1][1]) <= 0.05 + 1e-12


def test_a_gap_in_the_pool_puts_the_threshold_at_its_upper_edge():
    """Strangers' scores have the long upper tail: a new clip in the gap is more likely theirs."""
    s = np.array([0.1, 0.2, 0.3, 0.5, 1.0, 1.1, 1.2])
    resp = np.stack([s < 0.7, s > 0.7], axis=1).astype(float)
    assert _balanced_split(s, resp) == 1.0  # accepts 1.0 and above, rejects anything in (0.5, 1.0)


def test_held_out_enrollment_clips_hold_the_known_side_when_the_high_group_takes_strangers():
    s = np.array([0.1, 0.15, 0.2, 0.4, 0.5, 0.6, 1.0, 1.1, 1.2])
    high = np.where(s < 0.3, 0.0, np.where(s < 0.9, 0.5, 1.0))  # 0.4-0.6: half taken for known voices
    resp = np.stack([1.0 - high, high], axis=1)
    assert _balanced_split(s, resp) < 0.9  # rejecting them costs the known side as much as accepting
    genuine = np.array([0.95, 1.0, 1.05, 1.1, 1.2])  # enrolled voices score near 1
    assert _balanced_split(s, resp, genuine) == 0.95


def test_one_group_is_not_trusted():
    rng = np.random.default_rng(2)
    info = mixture_threshold(rng.normal(0.3, 0.1, 200), rng.normal(1.0, 0.1, 25), rng.normal(0.2, 0.1, 25))
    assert info["threshold"] is None and "two groups" in info["reason"]


class _Recorder:
    """A pool backend that records which pool clips each refit learned from and scores by row sum."""

    uses_pool = True
    fits: list = []

    def __init__(self, **kwargs):
        pass

    def fit(self, X, y, pool):
        _Recorder.fits.append({row.tobytes() for row in pool})
        return self

    def score_samples(self, X):
        return X.sum(axis=1)


def test_pool_scores_never_come_from_a_model_that_saw_the_clip(monkeypatch):
    import srpl_cli.backends as backends

    monkeypatch.setattr(backends, "get_backend", lambda name, **kw: _Recorder())
    _Recorder.fits = []
    pool = np.arange(40, dtype=np.float32).reshape(20, 2)
    scores = pool_scores("recorder", {}, np.zeros((2, 2)), np.array([0, 1]), pool, _Recorder(), seed=3)
    assert len(_Recorder.fits) == POOL_FOLDS
    np.testing.assert_allclose(scores, pool.sum(axis=1))
    seen_by = [sum(row.tobytes() in f for f in _Recorder.fits) for row in pool]
    assert seen_by == [POOL_FOLDS - 1] * len(pool)  # every clip is left out of exactly one refit


@pytest.mark.parametrize("n", [1, 3])
def test_tiny_pools_are_scored(monkeypatch, n):
    import srpl_cli.backends as backends

    monkeypatch.setattr(backends, "get_backend", lambda name, **kw: _Recorder())
    pool = np.ones((n, 2), np.float32) * np.arange(n)[:, None]
    scores = pool_scores("recorder", {}, np.zeros((2, 2)), np.array([0, 1]), pool, _Recorder(), seed=0)
    assert scores.shape == (n,) and np.isfinite(scores).all()


def test_a_strangers_only_pool_keeps_the_cross_fitted_threshold():
    """Strangers alone still show two groups (the bulk and its long upper tail); the tail sits far
    below the enrollment's held-out clips, so it is not taken for enrolled voices."""
    rng = np.random.default_rng(3)
    _, strangers = _long_tail_pool(rng, 0, 150)
    info = mixture_threshold(strangers, rng.normal(1.2, 0.1, 25), rng.normal(0.2, 0.1, 25))
    assert info["threshold"] is None and "strangers only" in info["reason"]


def test_a_pool_of_enrolled_people_only_teaches_nothing_about_strangers():
    from srpl_cli.calibration import fit_backend
    from tests.test_pool import clusters, enrolled_split

    X, y = clusters(4, n_speakers=12, per=30)
    known = (0, 1, 2, 3)
    enroll, rest = enrolled_split(X, y, known)
    pool_idx = rest[::2]
    only_enrolled = X[pool_idx[np.isin(y[pool_idx], known)]]
    model, info = fit_backend("pool-propagation", X[enroll], y[enroll], pool=only_enrolled)
    assert info["pool"]["strangers"] is False and "enrolled people only" in info["pool"]["reason"]
    assert float(model.propagation_weight_[0]) == 0.0
    mixed, info = fit_backend("pool-propagation", X[enroll], y[enroll], pool=X[pool_idx])
    assert "strangers" not in info["pool"] and float(mixed.propagation_weight_[0]) > 0
