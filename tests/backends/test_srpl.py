from __future__ import annotations

import numpy as np
import pytest
import torch

from srpl_cli.backends.losses import build_losses
from srpl_cli.backends.srpl import SRPLBackend
from srpl_cli.errors import UsageError

FAST = {"hidden_dims": (16, 8), "epochs": 15, "device": "cpu"}


def blobs(n_speakers: int = 3, per: int = 5, dim: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_speakers, dim))
    X = np.concatenate([c + 0.2 * rng.normal(size=(per, dim)) for c in centers]).astype(np.float32)
    return X, np.repeat(np.arange(n_speakers), per)


@pytest.mark.parametrize(
    "regime", [{}, {"optimizer": "sgd", "batch_size": 2}, {"optimizer": "adam", "batch_size": None}]
)
def test_same_seed_same_model_on_cpu(regime: dict) -> None:
    X, y = blobs()
    a = SRPLBackend(**FAST, **regime, random_state=3).fit(X, y).decision_function(X)
    b = SRPLBackend(**FAST, **regime, random_state=3).fit(X, y).decision_function(X)
    c = SRPLBackend(**FAST, **regime, random_state=4).fit(X, y).decision_function(X)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_fit_leaves_global_rng_alone() -> None:
    X, y = blobs()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    SRPLBackend(**FAST).fit(X, y)
    np.testing.assert_array_equal(torch.rand(3), expected)


def test_loss_decreases_and_learns_the_speakers() -> None:
    X, y = blobs()
    est = SRPLBackend(hidden_dims=(32, 16), epochs=40, device="cpu").fit(X, y)
    assert len(est.loss_curve_) == 40
    assert est.loss_curve_[-1] < 0.5 * est.loss_curve_[0]
    assert (est.decision_function(X).argmax(1) == y).mean() == 1.0


def test_unknown_samples_change_the_model() -> None:
    X, y = blobs()
    Xu = np.random.default_rng(9).normal(size=(12, X.shape[1])).astype(np.float32)
    plain = SRPLBackend(**FAST).fit(X, y)
    plus = SRPLBackend(**FAST, beta=1.0).fit(X, y, X_unknown=Xu)
    assert not np.allclose(plain.decision_function(X), plus.decision_function(X))
    # beta=0 turns SRPL+ back into SRPL exactly (no unknown batches are drawn)
    off = SRPLBackend(**FAST, beta=0.0).fit(X, y, X_unknown=Xu)
    np.testing.assert_array_equal(off.decision_function(X), plain.decision_function(X))


def test_single_sample_last_batch_is_merged() -> None:
    X, y = blobs(per=3)  # 9 samples, batch 2 -> last batch of one
    SRPLBackend(hidden_dims=(8,), epochs=2, optimizer="sgd", batch_size=2, device="cpu").fit(X, y)


def test_bad_hyper_parameters_raise_usage_error() -> None:
    X, y = blobs()
    for bad in ({"optimizer": "rmsprop"}, {"batch_size": 1}, {"epochs": 0}, {"radius_metric": "cos"}):
        with pytest.raises(UsageError):
            SRPLBackend(**{**FAST, **bad}).fit(X, y)


def test_loss_matches_the_reference_formula() -> None:
    torch.manual_seed(0)
    crit = build_losses()["SRPLLoss"](3, 4, weight_pl=5.0)
    with torch.no_grad():
        crit.radius.fill_(0.7)
    f = torch.randn(6, 4)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    P, Q, R = crit.points, crit.q_points, crit.radius
    ce = torch.nn.functional.cross_entropy
    dot = (f * P[labels]).sum(1)
    expected = (
        ce(-(f @ P.T), labels)
        + 5.0 * torch.clamp(dot - R + 1, min=0).mean()
        + ce(-(f @ Q.T), labels)
        + 5.0 * ((f - P[labels]) ** 2).mean() / 2
    )
    torch.testing.assert_close(crit(f, labels), expected)
    # ARPL's squared-distance radius term
    crit.radius_metric = "l2"
    sq = ((f - P[labels]) ** 2).mean(1)
    expected_l2 = (
        expected - 5.0 * torch.clamp(dot - R + 1, min=0).mean() + 5.0 * torch.clamp(sq - R + 1, min=0).mean()
    )
    torch.testing.assert_close(crit(f, labels), expected_l2)


def test_unknown_loss_is_exp_of_negative_entropy() -> None:
    crit = build_losses()["SRPLLoss"](4, 3, entropy_metric="logits")
    with torch.no_grad():
        crit.points.zero_()
    # all logits equal -> uniform p -> exp(-log 4) = 1/4 (its minimum)
    torch.testing.assert_close(crit.unknown_loss(torch.randn(5, 3)), torch.tensor(0.25))
    crit = build_losses()["SRPLLoss"](4, 3)  # the reference's squared-L2 / d logits
    f = torch.randn(5, 3)
    d = ((f[:, None, :] - crit.points[None]) ** 2).sum(-1) / 3
    p = torch.softmax(d, 1)
    torch.testing.assert_close(crit.unknown_loss(f), (p * p.log()).sum(1).mean().exp())


def test_transform_gives_head_features() -> None:
    X, y = blobs()
    est = SRPLBackend(**FAST).fit(X, y)
    f = est.transform(X)
    assert f.shape == (len(X), 8)
    points = est.criterion_.points.detach().numpy()
    np.testing.assert_allclose(est.decision_function(X), -(f @ points.T), rtol=1e-5, atol=1e-5)


def test_reference_checkpoint_reproduces_the_published_numbers(tmp_path) -> None:
    from conftest import shared_path

    from srpl_cli import metrics
    from srpl_cli.backends import load_backend
    from srpl_cli.backends.reference import safe_torch_load

    ckpt = shared_path("qspeech-wavlm", "reference-checkpoint")
    files = sorted(shared_path("qspeech-wavlm", "emb_test").glob("*/*.npy"))
    X = np.stack([np.asarray(safe_torch_load(f), dtype=np.float32).reshape(-1) for f in files])
    y = np.array([int(f.parent.name) for f in files])
    assert X.shape == (661, 512)
    known = y < 5
    est = SRPLBackend.from_reference_checkpoint(ckpt)
    assert list(est.classes_) == list(range(15))
    lk, lu = est.decision_function(X[known]), est.decision_function(X[~known])
    assert 100 * metrics.closed_set_accuracy(lk, y[known]) == pytest.approx(97.209, abs=0.005)
    assert 100 * metrics.auroc(lk.max(1), lu.max(1)) == pytest.approx(95.726, abs=0.005)
    assert 100 * metrics.oscr(lk, y[known], lu, legacy=True) == pytest.approx(94.251, abs=0.005)
    # and it survives our own format
    est.save(tmp_path / "ref")
    np.testing.assert_array_equal(
        load_backend(tmp_path / "ref").decision_function(X), est.decision_function(X)
    )


def test_random_state_none_draws_fresh_models() -> None:
    X, y = blobs()
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    a = SRPLBackend(**FAST, random_state=None).fit(X, y).decision_function(X)
    b = SRPLBackend(**FAST, random_state=None).fit(X, y).decision_function(X)
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(torch.rand(1), before)
