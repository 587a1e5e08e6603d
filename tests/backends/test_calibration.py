from __future__ import annotations

import numpy as np
import pytest

from srpl_cli.backends.calibration import ASNorm, calibrate, threshold_at_far, threshold_at_frr
from srpl_cli.backends.cosine import CosineBackend
from srpl_cli.errors import DataError, NotFittedError


def test_threshold_at_far_accepts_at_most_the_target_share() -> None:
    u = np.arange(100, dtype=np.float32)  # 0..99
    t = threshold_at_far(u, 0.05)
    assert np.sum(u >= t) == 5  # 95..99
    assert 94 < t <= 95
    assert np.sum(u >= threshold_at_far(u, 0.0)) == 0
    assert np.sum(u >= threshold_at_far(u, 0.049)) == 4


def test_threshold_at_far_with_ties_stays_at_or_below_target() -> None:
    u = np.array([1, 2, 3, 3, 3, 3], dtype=np.float32)
    t = threshold_at_far(u, 0.34)  # allows 2 of 6, but the four 3s move together
    assert np.sum(u >= t) == 0
    assert t > 3


def test_threshold_is_exact_for_float32_comparisons() -> None:
    u = np.array([0.1, 0.2, 0.30000001], dtype=np.float32)
    t = threshold_at_far(u, 0.0)
    # numpy compares float32 scores with a Python float in float32: the top score must still be rejected
    assert not (u >= t).any()
    assert not (u.max() >= np.float32(t))


def test_threshold_at_frr_rejects_at_most_the_target_share() -> None:
    k = np.linspace(0, 1, 201)
    t = threshold_at_frr(k, 0.05)
    assert np.sum(k < t) == 10
    assert threshold_at_frr(k, 0.0) == k.min()
    k = np.array([1.0, 1.0, 1.0, 2.0])
    assert np.sum(k < threshold_at_frr(k, 0.5)) == 0  # ties at the cut are kept


@pytest.mark.parametrize("bad", [[], [np.nan, 1.0]])
def test_bad_scores(bad: list) -> None:
    with pytest.raises(DataError):
        threshold_at_far(bad, 0.1)
    with pytest.raises(DataError):
        threshold_at_frr(bad, 0.1)


def test_bad_rate() -> None:
    with pytest.raises(DataError):
        threshold_at_far([1.0], 1.5)


def _model():
    X = np.array([[1, 0, 0], [1, 0.1, 0], [0, 1, 0], [0.1, 1, 0]], dtype=np.float32)
    return CosineBackend().fit(X, ["a", "a", "b", "b"])


def test_calibrate_with_unknowns_uses_the_far_rule() -> None:
    model = _model()
    rng = np.random.default_rng(0)
    known = np.array(
        [[1, 0.05 * i, 0.3] for i in range(10)] + [[0.05 * i, 1, 0.3] for i in range(10)], np.float32
    )
    y = ["a"] * 10 + ["b"] * 10
    unknown = np.abs(rng.normal(size=(40, 3))).astype(np.float32) * [0.3, 0.3, 1]
    res = calibrate(model, known, y, X_unknown=unknown, target_far=0.1)
    assert res.rule == "far<=0.1"
    assert res.far is not None and res.far <= 0.1
    assert res.far == np.mean(model.score_samples(unknown) >= res.threshold)
    assert res.frr == np.mean(model.score_samples(known) < res.threshold)
    assert 0.0 <= res.misid <= 1.0
    assert res.to_dict()["threshold"] == res.threshold


def test_calibrate_without_unknowns_uses_the_frr_rule() -> None:
    model = _model()
    known = np.array([[1, 0.04 * i, 0] for i in range(20)], np.float32)
    res = calibrate(model, known, ["a"] * 20, target_frr=0.1)
    assert res.rule == "frr<=0.1" and res.far is None
    assert res.frr <= 0.1
    assert res.misid == 0.0
    model.set_threshold(res.threshold)
    assert np.mean(model.predict(known) == -1) == res.frr


def test_calibrate_rejects_unenrolled_labels() -> None:
    with pytest.raises(DataError):
        calibrate(_model(), np.ones((2, 3), np.float32), ["a", "zed"])
    with pytest.raises(DataError):
        calibrate(_model(), np.ones((2, 3), np.float32), ["a"])


def test_asnorm_matches_hand_computation() -> None:
    rng = np.random.default_rng(1)
    cohort = rng.normal(size=(30, 4)).astype(np.float32)
    X = rng.normal(size=(5, 4)).astype(np.float32)
    M = rng.normal(size=(2, 4)).astype(np.float32)

    def unit(a):
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    scores = unit(X) @ unit(M).T
    out = ASNorm(top_n=10).fit(cohort).transform(scores, X, M)

    def stats(E):
        top = np.sort(unit(E) @ unit(cohort).T, axis=1)[:, ::-1][:, :10]
        return top.mean(1), top.std(1)

    mx, sx = stats(X)
    mm, sm = stats(M)
    expected = 0.5 * ((scores - mx[:, None]) / sx[:, None] + (scores - mm[None]) / sm[None])
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    assert out.shape == (5, 2) and out.dtype == np.float32


def test_asnorm_errors() -> None:
    with pytest.raises(NotFittedError):
        ASNorm().transform(np.zeros((1, 1)), np.ones((1, 3)), np.ones((1, 3)))
    norm = ASNorm(top_n=5).fit(np.random.default_rng(0).normal(size=(8, 3)))
    with pytest.raises(DataError):
        norm.transform(np.zeros((2, 2)), np.ones((1, 3)), np.ones((1, 3)))
    with pytest.raises(DataError):
        norm.transform(np.zeros((1, 1)), np.ones((1, 4)), np.ones((1, 4)))
    with pytest.raises(DataError):
        ASNorm().fit(np.ones((1, 3)))
