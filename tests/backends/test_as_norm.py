"""cosine + AS-norm as a backend: the cohort baseline issue 5 compares against."""

from __future__ import annotations

import numpy as np
import pytest

from srpl_cli.backends import get_backend
from srpl_cli.backends.calibration import ASNorm
from srpl_cli.errors import DataError


def data(seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(4, 16))
    X = np.concatenate([c + 0.3 * rng.normal(size=(5, 16)) for c in centers]).astype(np.float32)
    y = np.repeat(["a", "b", "c", "d"], 5)
    cohort = rng.normal(size=(30, 16)).astype(np.float32)
    return X, y, cohort


def test_scores_are_as_normalised_cosine():
    X, y, cohort = data()
    est = get_backend("as-norm", top_n=10).fit(X, y, cohort)
    cos = get_backend("cosine").fit(X, y)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    expected = ASNorm(top_n=10).fit(cohort).transform(Xn @ cos.centers_.T, X, cos.centers_)
    np.testing.assert_allclose(est.decision_function(X), expected, rtol=1e-5, atol=1e-5)
    assert (est.predict(X) == np.repeat(np.arange(4), 5)).mean() == 1.0


def test_a_voice_like_the_cohort_falls_below_enrolled_speakers():
    """The point of AS-norm: a voice close to many cohort voices loses its advantage.

    Here strangers sound like speaker "a" and so does the whole cohort; cosine ranks the strangers
    above most genuine clips, AS-norm ranks them last.
    """
    X, y, _ = data(3)
    rng = np.random.default_rng(42)
    a = X[:5].mean(axis=0)
    crowd = a + 0.125 * np.linalg.norm(a) * rng.normal(size=16)
    cohort = (crowd + 0.3 * rng.normal(size=(40, 16))).astype(np.float32)
    strangers = (crowd + 0.3 * rng.normal(size=(5, 16))).astype(np.float32)
    genuine = (X + 0.8 * rng.normal(size=X.shape)).astype(np.float32)  # new clips of enrolled speakers

    def mean_rank_of_strangers(model):  # 0 = best score; 20 genuine + 5 strangers
        s = np.concatenate([model.score_samples(genuine), model.score_samples(strangers)])
        return np.argsort(np.argsort(-s))[len(genuine) :].mean()

    assert mean_rank_of_strangers(get_backend("cosine").fit(X, y)) < 5
    assert mean_rank_of_strangers(get_backend("as-norm", top_n=20).fit(X, y, cohort)) == 22.0


def test_needs_a_cohort():
    X, y, _ = data()
    with pytest.raises(DataError, match="--unknown-dir DIR for `srpl tune`, --cohort DIR"):
        get_backend("as-norm").fit(X, y)
    with pytest.raises(DataError, match="top_n"):
        get_backend("as-norm", top_n=1).fit(X, y, data()[2])
