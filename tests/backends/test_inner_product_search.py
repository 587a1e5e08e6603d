"""The exact top-k search behind identify at scale: faiss and numpy give the same answers."""

from __future__ import annotations

import numpy as np
import pytest

from srpl_cli.backends import anchored_cosine as ac
from srpl_cli.backends import inner_product_search as ips
from srpl_cli.backends.cosine import CosineBackend, l2_normalize
from srpl_cli.backends.inner_product_search import InnerProductSearch


def _speakers(K: int, shots: int = 5, dim: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(K, dim))
    X = np.repeat(centres, shots, axis=0) + 0.7 * rng.normal(size=(K * shots, dim))
    return X.astype(np.float32), np.repeat(np.arange(K), shots)


def _queries(K: int) -> np.ndarray:
    """150 clips of enrolled speakers and 50 strangers."""
    known = _speakers(K, shots=1, seed=2)[0][:150]
    return np.concatenate([known, np.random.default_rng(3).normal(size=(50, 32)).astype(np.float32)])


def _paths(monkeypatch: pytest.MonkeyPatch, model, fn):
    """``fn(model)`` on the numpy path, then on the faiss path (fresh derived state for each)."""
    out = []
    for limit in (1 << 62, 0):
        monkeypatch.setattr(ips, "FAISS_MIN_ROWS", limit)
        model._cache, model._search = {}, None
        out.append(fn(model))
    return out


def test_faiss_and_numpy_searches_agree() -> None:
    pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    B = l2_normalize(rng.normal(size=(3000, 48)).astype(np.float32))
    Q = l2_normalize(rng.normal(size=(300, 48)).astype(np.float32))
    fast, slow = InnerProductSearch(B, use_faiss=True), InnerProductSearch(B, use_faiss=False)
    assert fast.fast_for(300) and not fast.fast_for(ips.FAISS_MIN_QUERIES - 1) and not slow.fast_for(300)
    (fi, fv), (si, sv) = fast.search(Q, 50), slow.search(Q, 50)
    np.testing.assert_array_equal(fi, si)
    np.testing.assert_allclose(fv, sv, atol=1e-6)
    np.testing.assert_allclose(sv, np.take_along_axis(Q @ B.T, si, axis=1), atol=1e-6)
    ids = rng.integers(0, len(B), (300, 17))
    np.testing.assert_allclose(fast.products(Q, ids), slow.products(Q, ids), atol=1e-6)
    np.testing.assert_allclose(slow.products(Q, ids), np.einsum("nd,nmd->nm", Q, B[ids]), atol=1e-6)
    assert fast.search(Q, 10**6)[0].shape == (300, 3000)  # k beyond the database: every row
    np.testing.assert_array_equal(fast.B, B)  # a view of the index's copy


def test_faiss_is_used_only_from_the_measured_size_and_only_when_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    B = np.eye(40, dtype=np.float32)
    assert not InnerProductSearch(B).fast_for(100)  # 40 rows: far below FAISS_MIN_ROWS
    monkeypatch.setattr(ips, "FAISS_MIN_ROWS", 10)
    monkeypatch.setattr(ips, "faiss_available", lambda: False)
    search = InnerProductSearch(B)  # faiss "absent": numpy, same answers
    assert not search.fast_for(100)
    idx, val = search.search(B[::-1] * 2, 3)
    np.testing.assert_array_equal(idx[:, 0], np.arange(40)[::-1])
    np.testing.assert_allclose(val[:, 0], 2.0)


@pytest.mark.parametrize("adversarial", [False, True])
def test_anchored_cosine_faiss_path_equals_numpy_path(adversarial: bool, monkeypatch) -> None:
    """Scores, chosen speakers and top-100 lists of the faiss path equal the block-wise numpy path.

    With the fitted offsets the bound proves every row from its candidates. ``adversarial`` lowers the
    offsets of the 100 speakers least similar to a direction ``u`` and adds clips near ``u``: their best
    ``S - offset`` may be a dissimilar speaker outside the candidates and the boosted set, so the bound
    fails and they are scored against every prototype.
    """
    pytest.importorskip("faiss")
    K = 300
    X, y = _speakers(K, seed=1)
    model = ac.AnchoredCosineBackend().fit(X, y)
    assert model.anchors_ is None
    Q = _queries(K)
    if adversarial:  # 100 speakers far from u get -1: more than BOOSTED_SPEAKERS, outside the candidates
        u = model.prototypes_[0]
        model.offsets_ = np.where(np.argsort(np.argsort(model.prototypes_ @ u)) < 100, -1.0, 0.0)
        rng = np.random.default_rng(5)
        Q = np.concatenate([Q, (u + 0.05 * rng.normal(size=(40, len(u)))).astype(np.float32)])
    assert len(Q) >= ips.FAISS_MIN_QUERIES
    slow, fast = _paths(
        monkeypatch, model, lambda m: (m.score_samples(Q), *m.top_k(Q, 100), m.decision_function(Q))
    )
    assert model._cached("prototypes").fast_for(len(Q))
    np.testing.assert_allclose(fast[0], slow[0], atol=1e-5)
    np.testing.assert_array_equal(fast[1][:, 0], slow[1][:, 0])
    np.testing.assert_allclose(fast[2], slow[2], atol=1e-5)
    np.testing.assert_allclose(fast[3], slow[3], atol=1e-5)
    np.testing.assert_array_equal(fast[3].argmax(axis=1), slow[3].argmax(axis=1))
    # which side of the bound the rows fell on (recomputed from the full scores)
    Zt = ac._transform(ac._normalise(Q.astype(np.float64)), model.basis_, model.gain_)
    S = (Zt @ model.prototypes_.T).astype(np.float32)
    off = model.offsets_.astype(np.float32)
    boosted, off_rest = model._cached("boosted")
    C = ac.OPEN_SET_CANDIDATES
    last = -np.partition(-S, C - 1, axis=1)[:, C - 1]
    best = np.maximum(np.where(S >= last[:, None], S - off, -np.inf), (S - off)[:, boosted].max(1)[:, None])
    unsure = int((best.max(axis=1) < last - off_rest).sum())
    assert unsure == 0 if not adversarial else unsure >= 20


def test_cosine_faiss_path_equals_numpy_path_and_follows_refits(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("faiss")
    X, y = _speakers(300)
    model = CosineBackend().fit(X, y)
    Q = _queries(300)
    (si, sv), (fi, fv) = _paths(monkeypatch, model, lambda m: m.top_k(Q, 100))
    np.testing.assert_array_equal(fi[:, 0], si[:, 0])
    np.testing.assert_allclose(fv, sv, atol=1e-6)
    np.testing.assert_allclose(sv[:, 0], model.score_samples(Q), atol=1e-6)
    model.fit(X[::-1][: 5 * 200], y[::-1][: 5 * 200])  # a refit drops the old search
    np.testing.assert_array_equal(model.top_k(Q, 1)[0][:, 0], model.decision_function(Q).argmax(axis=1))
