"""One API contract for every registered backend (scikit-learn's ``parametrize_with_checks`` idea).

A backend registered in ``srpl_cli.backends.BACKENDS`` is tested here without any change to this file.
Training-heavy hyper-parameters are shrunk through :data:`FAST` when the backend has them.
"""

from __future__ import annotations

import numpy as np
import pytest

from srpl_cli.backends import BACKENDS, backend_class, get_backend, load_backend
from srpl_cli.backends.base import UNKNOWN
from srpl_cli.errors import DataError, NotFittedError

#: small values for common training hyper-parameters, applied only where the backend has them
FAST = {"epochs": 3, "hidden_dims": (16, 8), "device": "cpu", "random_state": 0, "n_models": 2, "steps": 5}

DIM = 12
#: other people's embeddings for cohort backends (AS-norm) and unlabeled clips for pool backends,
#: which cannot score without them
COHORT = np.random.default_rng(9).normal(size=(6, DIM)).astype(np.float32)


def make(name: str):
    cls = backend_class(name)
    names = set(cls._param_names())
    return get_backend(name, **{k: v for k, v in FAST.items() if k in names})


def fit(est, X, y, X_unknown=None):
    """``est.fit``, giving cohort and pool backends the cohort / pool they always need."""
    if (est.uses_cohort or est.uses_pool) and X_unknown is None:
        X_unknown = COHORT
    return est.fit(X, y, X_unknown=X_unknown)


def blobs(n_speakers: int = 4, per: int = 4, seed: int = 0, labels=None):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_speakers, DIM))
    X = np.concatenate([c + 0.1 * rng.normal(size=(per, DIM)) for c in centers]).astype(np.float32)
    y = np.repeat(np.arange(n_speakers) if labels is None else np.asarray(labels), per)
    return X, y


@pytest.fixture(params=sorted(BACKENDS))
def name(request: pytest.FixtureRequest) -> str:
    return request.param


def test_fit_returns_self_and_scores(name: str) -> None:
    X, y = blobs()
    est = make(name)
    assert fit(est, X, y) is est
    assert list(est.classes_) == [0, 1, 2, 3]
    scores = est.decision_function(X[:5])
    assert scores.shape == (5, 4) and scores.dtype == np.float32
    np.testing.assert_array_equal(est.score_samples(X[:5]), scores.max(axis=1))
    pred = est.predict(X)
    assert pred.shape == (len(X),)
    assert set(pred.tolist()) <= {UNKNOWN, 0, 1, 2, 3}
    assert np.isfinite(est.threshold_)
    # a single embedding as a 1-D vector is one sample
    assert est.decision_function(X[0]).shape == (1, 4)


def test_not_fitted_raises(name: str) -> None:
    X, _ = blobs()
    est = make(name)
    for call in (est.decision_function, est.score_samples, est.predict):
        with pytest.raises(NotFittedError):
            call(X)
    with pytest.raises(NotFittedError):
        est.save("unused")


def test_bad_input_raises_data_error(name: str) -> None:
    X, y = blobs()
    with pytest.raises(DataError):
        fit(make(name), X[:, :, None], y)
    with pytest.raises(DataError):
        fit(make(name), X, y[:-1])
    with pytest.raises(DataError):
        fit(make(name), X, np.zeros(len(X)))  # a single speaker
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(DataError):
        fit(make(name), bad, y)
    with pytest.raises(DataError):
        fit(make(name), X, y, X_unknown=np.zeros((3, DIM + 1), np.float32))
    est = fit(make(name), X, y)
    with pytest.raises(DataError):
        est.decision_function(np.zeros((2, DIM + 1), np.float32))
    with pytest.raises(DataError):
        est.predict(np.zeros((0, DIM), np.float32))


def test_save_load_round_trip(name: str, tmp_path) -> None:
    X, y = blobs()
    est = fit(make(name), X, y)
    est.set_threshold(0.25)
    est.save(tmp_path / "m", metadata={"note": "x"})
    for loaded in (backend_class(name).load(tmp_path / "m"), load_backend(tmp_path / "m")):
        assert type(loaded) is type(est)
        np.testing.assert_array_equal(loaded.decision_function(X), est.decision_function(X))
        np.testing.assert_array_equal(loaded.predict(X), est.predict(X))
        assert loaded.threshold_ == 0.25
        assert loaded.get_params() == est.get_params()
        assert loaded.metadata_ == {"note": "x"}
    # saving again over the same directory replaces the files
    est.set_threshold(0.5).save(tmp_path / "m")
    assert load_backend(tmp_path / "m").threshold_ == 0.5


def test_params(name: str) -> None:
    est = make(name)
    params = est.get_params()
    assert set(params) == set(type(est)._param_names())
    clone = type(est)(**params)
    assert clone.get_params() == params
    if params:
        key = next(iter(params))
        assert est.set_params(**{key: params[key]}) is est
    with pytest.raises(ValueError):
        est.set_params(no_such_parameter=1)


def test_many_speakers(name: str) -> None:
    X, y = blobs(n_speakers=20, per=3, seed=1)
    est = fit(make(name), X, y)
    assert est.decision_function(X).shape == (60, 20)
    assert est.predict(X).max() <= 19


def test_unknown_samples_accepted(name: str) -> None:
    X, y = blobs()
    Xu = np.random.default_rng(5).normal(size=(7, DIM)).astype(np.float32)
    est = fit(make(name), X, y, X_unknown=Xu)
    assert est.decision_function(Xu).shape == (7, 4)
    empty = np.zeros((0, DIM), np.float32)
    if backend_class(name).uses_cohort:  # an empty cohort is no cohort: say how to pass one
        with pytest.raises(DataError, match="--cohort"):
            make(name).fit(X, y, X_unknown=empty)
    elif backend_class(name).uses_pool:  # an empty pool is no pool: say how to give one
        with pytest.raises(DataError, match="--unlabeled"):
            make(name).fit(X, y, X_unknown=empty)
    else:
        assert make(name).fit(X, y, X_unknown=empty) is not None


def test_string_labels(name: str, tmp_path) -> None:
    X, y = blobs(n_speakers=3, labels=["bob", "alice", "carol"])
    est = fit(make(name), X, y)
    assert list(est.classes_) == ["alice", "bob", "carol"]
    assert est.decision_function(X).shape == (len(X), 3)
    est.save(tmp_path / "s")
    loaded = load_backend(tmp_path / "s")
    assert list(loaded.classes_) == ["alice", "bob", "carol"]
    np.testing.assert_array_equal(loaded.decision_function(X), est.decision_function(X))
