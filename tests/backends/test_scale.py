"""Many enrolled speakers: the calibration subsampling rule, the large-K scoring path, top_k."""

from __future__ import annotations

import numpy as np
import pytest

from srpl_cli.backends import anchored_cosine as ac
from srpl_cli.backends import get_backend
from srpl_cli.calibration import calibration_plan, fit_backend, held_out_scores


def _speakers(K: int, shots: int = 5, dim: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(K, dim))
    X = np.repeat(centres, shots, axis=0) + 0.7 * rng.normal(size=(K * shots, dim))
    return X.astype(np.float32), np.repeat(np.arange(K), shots)


def test_plan_runs_every_round_and_group_at_small_and_medium_sizes() -> None:
    for K in (2, 3, 10, 20, 50, 200, 1000):
        assert calibration_plan(K, 5 * K, 5, 10) == (5, min(10, K))
    assert calibration_plan(2000, 10_000, 5, 10) == (3, 5)
    assert calibration_plan(10_000, 50_000, 5, 10) == (1, 1)


@pytest.mark.parametrize("method", ["anchored-cosine", "cosine"])
@pytest.mark.parametrize("K", [3, 20, 50])
def test_thresholds_identical_to_full_cross_fitting_up_to_50_speakers(
    method: str, K: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The subsampling rule never applies at K <= 50: fit_backend's threshold is the full rule's."""
    import srpl_cli.calibration as cal

    X, y = _speakers(K)
    _, info = fit_backend(method, X, y)
    # the full procedure: every round (5) and every speaker group (min(10, K)), whatever the plan says
    monkeypatch.setattr(cal, "calibration_plan", lambda n, m, rounds, groups: (rounds, min(groups, n)))
    genuine, impostor = held_out_scores(method, {}, X, y, None)
    assert info["heldout_genuine"] == len(genuine) == 5 * K
    assert info["threshold"] == cal.equal_error_threshold(genuine, impostor)


def test_large_speaker_counts_match_the_exact_method_to_float32() -> None:
    """Beyond 64 speakers anchors are searched among each clip's 64 best prototypes: same scores here."""
    X, y = _speakers(150, seed=1)
    Q = np.concatenate([_speakers(150, shots=1, seed=2)[0], np.random.default_rng(3).normal(size=(50, 32))])
    fast = ac.AnchoredCosineBackend().fit(X, y)
    assert fast.anchors_ is None and fast.neighbours_.shape == (150, ac.MAX_ANCHOR_NEIGHBOURS)
    exact_limit = ac.EXACT_MAX_SPEAKERS
    try:
        ac.EXACT_MAX_SPEAKERS = 10**9
        exact = ac.AnchoredCosineBackend().fit(X, y)
    finally:
        ac.EXACT_MAX_SPEAKERS = exact_limit
    assert exact.anchors_ is not None
    np.testing.assert_allclose(fast.heldout_scores_, exact.heldout_scores_, atol=1e-5)
    np.testing.assert_allclose(fast.score_samples(Q), exact.score_samples(Q), atol=1e-5)
    np.testing.assert_array_equal(fast.neighbours_, exact.neighbours_)


def test_large_model_round_trips_without_materialised_anchors(tmp_path) -> None:
    from srpl_cli.backends import load_backend

    X, y = _speakers(80)
    est = ac.AnchoredCosineBackend().fit(X, y)
    est.save(tmp_path / "m")
    back = load_backend(tmp_path / "m")
    assert back.anchors_ is None
    np.testing.assert_allclose(back.decision_function(X[:40]), est.decision_function(X[:40]), atol=1e-6)


@pytest.mark.parametrize("method", ["anchored-cosine", "cosine"])
@pytest.mark.parametrize("K", [5, 100])
def test_top_k_is_the_best_columns_of_decision_function(method: str, K: int) -> None:
    X, y = _speakers(K)
    est = get_backend(method).fit(X, y)
    Q = X[::3]
    S = est.decision_function(Q)
    idx, val = est.top_k(Q, 4)
    assert idx.shape == val.shape == (len(Q), 4)
    np.testing.assert_array_equal(idx[:, 0], S.argmax(axis=1))
    np.testing.assert_allclose(val, np.take_along_axis(S, idx, axis=1), atol=1e-5)
    assert (np.diff(val, axis=1) <= 1e-6).all()
    np.testing.assert_allclose(val[:, 0], est.score_samples(Q), atol=1e-5)
    assert est.top_k(Q, 10 * K)[0].shape == (len(Q), K)  # k beyond K: every speaker
