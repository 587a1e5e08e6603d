"""The unlabeled pool: no label ever leaks, odd pools never break calibration, it beats cosine on real data."""

from __future__ import annotations

import numpy as np
import pytest

from srpl_cli.calibration import fit_backend
from srpl_cli.protocols import evaluate_folds, few_shot_folds, operating_point, split_pool
from tests.conftest import shared_path


def clusters(seed: int = 0, n_speakers: int = 10, per: int = 20, dim: int = 32, spread: float = 0.5):
    """Gaussian speaker clusters on the unit sphere, plus a shared 'room' offset every clip carries."""
    rng = np.random.default_rng(seed)
    room = rng.normal(size=dim) * 2.0
    centres = rng.normal(size=(n_speakers, dim))
    X = np.concatenate([c + room + spread * rng.normal(size=(per, dim)) for c in centres]).astype(np.float32)
    y = np.repeat(np.arange(n_speakers), per)
    return X, y


def enrolled_split(X, y, known=(0, 1, 2, 3), shots=5):
    enroll = np.concatenate([np.flatnonzero(y == k)[:shots] for k in known])
    rest = np.setdiff1d(np.arange(len(y)), enroll)
    return enroll, rest


def balanced_error(model, X, y, known):
    is_known = np.isin(y, known)
    labels = np.searchsorted(model.classes_, y[is_known])
    op = operating_point(
        model.decision_function(X[is_known]), labels, model.decision_function(X[~is_known]), model.threshold_
    )
    return op["balanced_error"]


def test_pool_order_and_duplicates_change_nothing():
    X, y = clusters()
    enroll, rest = enrolled_split(X, y)
    pool = X[rest[::2]]
    a, info_a = fit_backend("pool-propagation", X[enroll], y[enroll], pool=pool)
    perm = np.random.default_rng(1).permutation(len(pool))
    b, info_b = fit_backend("pool-propagation", X[enroll], y[enroll], pool=pool[perm])
    c, info_c = fit_backend("pool-propagation", X[enroll], y[enroll], pool=np.concatenate([pool, pool[:10]]))
    d, info_d = fit_backend("pool-propagation", X[enroll], y[enroll], pool=np.concatenate([pool, pool, pool]))
    test = X[rest[1::2]]
    np.testing.assert_allclose(a.decision_function(test), b.decision_function(test), atol=1e-5)
    np.testing.assert_allclose(a.decision_function(test), c.decision_function(test), atol=1e-5)
    assert info_a["pool"]["clips"] == info_b["pool"]["clips"] == info_d["pool"]["clips"] == len(pool)
    # a repeated clip is one clip for the threshold too (it would sit on both sides of the cross-fitting)
    assert info_c["threshold"] == info_d["threshold"] == info_a["threshold"]
    np.testing.assert_allclose(a.decision_function(test), d.decision_function(test), atol=1e-5)


def test_shuffled_pool_labels_give_identical_results():
    X, y = clusters(2)
    folds = split_pool(few_shot_folds(y, 4, 5, n_folds=2, seed=0), 0.5, seed=0)

    def fit(method, Xe, ye, Xu, seed, fold, origin, pool):
        return fit_backend(method, Xe, ye, Xu, seed, pool=None if method == "cosine" else pool)[0]

    methods = ["cosine", "pool-propagation"]
    for f in folds:  # the pool clips' labels are scrambled; test clips keep theirs
        y_shuffled = y.copy()
        y_shuffled[f.pool] = np.random.default_rng(f.index).permutation(y[f.pool])
        a = evaluate_folds(X, y, [f], methods, fit)
        b = evaluate_folds(X, y_shuffled, [f], methods, fit)
        for m in methods:
            assert a.folds[0][m].metrics == b.folds[0][m].metrics


def test_enrollment_clips_in_the_pool_do_not_leak_into_calibration():
    X, y = clusters(3)
    enroll, rest = enrolled_split(X, y)
    pool = X[rest[::2]]
    _, clean = fit_backend("pool-propagation", X[enroll], y[enroll], pool=pool)
    _, leaky = fit_backend("pool-propagation", X[enroll], y[enroll], pool=np.concatenate([pool, X[enroll]]))
    assert leaky["threshold"] == pytest.approx(clean["threshold"])


@pytest.mark.parametrize("kind", ["strangers", "enrolled", "tiny", "large"])
def test_odd_pools_do_not_break_calibration(kind):
    X, y = clusters(4, n_speakers=12, per=30)
    known = (0, 1, 2, 3)
    enroll, rest = enrolled_split(X, y, known)
    pool_idx, test_idx = rest[::2], rest[1::2]
    is_known = np.isin(y[pool_idx], known)
    pool = {
        "strangers": X[pool_idx[~is_known]],
        "enrolled": X[pool_idx[is_known]],
        "tiny": X[np.random.default_rng(0).choice(pool_idx, 20, replace=False)],
        "large": X[pool_idx],
    }[kind]
    plain, _ = fit_backend("anchored-cosine", X[enroll], y[enroll])
    model, info = fit_backend("pool-propagation", X[enroll], y[enroll], pool=pool)
    assert np.isfinite(info["threshold"])
    err_plain = balanced_error(plain, X[test_idx], y[test_idx], known)
    err_pool = balanced_error(model, X[test_idx], y[test_idx], known)
    assert err_pool <= err_plain + 0.1, (kind, err_pool, err_plain)


def test_pool_method_without_a_pool_is_a_clear_error():
    from srpl_cli.errors import DataError

    X, y = clusters()
    enroll, _ = enrolled_split(X, y)
    with pytest.raises(DataError, match="unlabeled"):
        fit_backend("pool-propagation", X[enroll], y[enroll])


def test_saved_pool_model_scores_the_same(tmp_path):
    from srpl_cli.backends import load_backend

    X, y = clusters(5)
    enroll, rest = enrolled_split(X, y)
    model, _ = fit_backend("pool-propagation", X[enroll], y[enroll], pool=X[rest[::2]])
    model.save(tmp_path / "m")
    again = load_backend(tmp_path / "m")
    np.testing.assert_allclose(again.decision_function(X[rest]), model.decision_function(X[rest]), atol=1e-6)
    assert again.threshold_ == model.threshold_


def test_operating_point_counts_misnamed_clips_and_finds_the_oracle():
    known = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.6], [0.3, 0.4]])
    labels = np.array([0, 1, 1, 1])  # clip 2 is named speaker 0: wrong at any threshold it passes
    unknown = np.array([[0.5, 0.2], [0.1, 0.35]])
    op = operating_point(known, labels, unknown, threshold=0.45)
    assert op["known_wrong"] == pytest.approx(2 / 4)  # clip 2 misnamed, clip 3 rejected
    assert op["unknown_accepted"] == pytest.approx(1 / 2)
    assert op["balanced_error"] == pytest.approx(0.5)
    # best: accept >= 0.4 -> known wrong 1/4 (misnamed), unknown accepted 1/2; or >= 0.8 -> 3/4, 0
    assert op["balanced_error_oracle"] == pytest.approx(min((1 / 4 + 1 / 2) / 2, (2 / 4 + 0) / 2, 3 / 8))


def test_pool_store_dedupes_and_keeps_provenance(tmp_path):
    from srpl_cli.embeddings import file_sha256
    from srpl_cli.pool import add_to_pool, load_pool
    from srpl_cli.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    clips = []
    for i in range(3):
        p = tmp_path / f"c{i}.wav"
        p.write_bytes(b"same" if i < 2 else b"other")  # c0 and c1 have the same content
        clips.append(p)
    X = np.arange(9, dtype=np.float32).reshape(3, 3)
    hashes = [file_sha256(p) for p in clips]
    pool, added = add_to_pool(ws, "dvector", "dvector@abc", X, clips, hashes, "test")
    assert added == 2 and len(pool) == 2
    _, added = add_to_pool(ws, "dvector", "dvector@abc", X, clips, hashes, "again")
    assert added == 0
    back = load_pool(ws, "dvector", "dvector@abc")
    np.testing.assert_array_equal(back.X, X[[0, 2]])
    assert [c["source"] for c in back.clips] == ["test", "test"]
    assert len(load_pool(ws, "dvector", "dvector@other-weights")) == 0  # another embedding space
    assert len(load_pool(ws, "dvector", "dvector@abc:bf16")) == 2  # another CPU path: the same space


def test_pool_default_beats_cosine_on_qspeech():
    """Real WavLM embeddings: 3 paired folds, half of each fold's test clips as the unlabeled pool."""
    from srpl_cli.evaluation import load_embedding_data, run_folds

    data = load_embedding_data(shared_path("qspeech-wavlm"), cs_my=False)
    report = run_folds(data, ["cosine", "pool-propagation"], 3, "0-4", 5, seed=5, unlabeled_share=0.5)
    gain = report.paired("oscr", "pool-propagation")
    assert gain["wins"] == 3 and gain["mean"] > 5.0
    ratio = report.error_ratio("pool-propagation")
    assert ratio["ratio"] < 0.8 and ratio["worse"] == 0
    acc = report.paired("acc", "pool-propagation")
    assert acc["mean"] > -2.0


def test_a_pool_of_enrolled_people_only_teaches_nothing_on_qspeech():
    """Real WavLM embeddings: the propagation reaches nearly all of an enrolled-only pool, so its part fades
    out (the enrollment-only score stays); a pool with strangers keeps its full weight."""
    from srpl_cli.backends.pool_propagation import PoolPropagationBackend, _unreached_evidence
    from srpl_cli.evaluation import load_embedding_data
    from srpl_cli.protocols import few_shot_folds, split_pool

    data = load_embedding_data(shared_path("qspeech-wavlm"), cs_my=False)
    X, y = data.X, data.y
    for fold in split_pool(few_shot_folds(y, None, 5, 3, seed=7, known_pool=[0, 1, 2, 3, 4]), 0.5, seed=7):
        known = np.isin(y[fold.pool], fold.known)
        Xe, ye = X[fold.enroll], y[fold.enroll]
        mixed = PoolPropagationBackend().fit(Xe, ye, X[fold.pool])
        enrolled = PoolPropagationBackend().fit(Xe, ye, X[fold.pool[known]])
        reached = mixed.mass_[len(Xe) :].max(axis=1)  # the strangers' clusters stay unreached
        assert _unreached_evidence(reached) == 1.0 and mixed.propagation_weight_[0] > 0.5
        assert enrolled.propagation_weight_[0] == 0.0
    model, info = fit_backend("pool-propagation", Xe, ye, pool=X[fold.pool[known]])  # as tune fits it
    assert model.propagation_weight_[0] == 0.0 and info["pool"]["strangers"] is False  # tune warns


def test_unreached_share_fades_the_propagated_part_in():
    from srpl_cli.backends.pool_propagation import UNREACHED_MASS, UNREACHED_SHARE, _unreached_evidence

    low, high = UNREACHED_SHARE
    reached = lambda share: np.where(np.arange(1000) < round(share * 1000), UNREACHED_MASS / 2, 1.0)  # noqa: E731
    assert _unreached_evidence(reached(0.0)) == 0.0
    assert _unreached_evidence(reached(low)) == 0.0
    assert _unreached_evidence(reached((low + high) / 2)) == pytest.approx(0.5)
    assert _unreached_evidence(reached(high)) == 1.0
    assert _unreached_evidence(np.zeros(0)) == 0.0


def test_in_domain_negatives_leave_out_enrolled_voices():
    from srpl_cli.pool import in_domain_negatives

    X, y = clusters(6, spread=0.3)
    enroll, rest = enrolled_split(X, y)
    pool = rest[::2]
    neg = in_domain_negatives(X[enroll], y[enroll], X[pool])
    kept = np.isin(
        X[pool].view([("", X.dtype)] * X.shape[1]).ravel(), neg.view([("", X.dtype)] * X.shape[1]).ravel()
    )
    is_known = np.isin(y[pool], (0, 1, 2, 3))
    assert kept[~is_known].mean() > 0.9  # strangers stay
    assert kept[is_known].mean() < 0.5  # most clips of enrolled people are recognised and left out


def test_pool_readers_never_see_a_half_swapped_pool(tmp_path):
    """A `tune` reading the pool while an `identify --learn` (another process) keeps adding to it sees
    the whole old pool or the whole new one: never a missing or an inconsistent one."""
    import subprocess
    import sys
    import textwrap

    from srpl_cli.pool import add_to_pool, load_pool
    from srpl_cli.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    first = tmp_path / "first.wav"
    first.write_bytes(b"clip -1")
    add_to_pool(ws, "dvector", "dvector@abc", np.zeros((1, 4), np.float32), [first], ["h-1"], "test")
    writer = textwrap.dedent(
        f"""
        import numpy as np
        from pathlib import Path
        from srpl_cli.pool import add_to_pool
        from srpl_cli.workspace import Workspace
        ws = Workspace({str(tmp_path / "ws")!r})
        for i in range(150):
            p = Path({str(tmp_path)!r}) / f"c{{i}}.wav"
            p.write_bytes(f"clip {{i}}".encode())
            x = np.full((1, 4), i, np.float32)
            add_to_pool(ws, "dvector", "dvector@abc", x, [p], [f"h{{i}}"], "learn")
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", writer])
    sizes = []
    try:
        while proc.poll() is None:
            pool = load_pool(ws, "dvector", "dvector@abc")  # raises on an inconsistent read
            assert len(pool) >= 1 and len(pool.clips) == len(pool.X)
            sizes.append(len(pool))
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == 0
    assert sizes == sorted(sizes)  # a reader never goes back to an older pool
    assert len(load_pool(ws, "dvector", "dvector@abc")) == 151


def test_uncalibrated_evaluate_fit_routes_the_pool_as_tune_does():
    """`evaluate --no-calibrate`'s fit takes the pool through the same routing as `fit_backend`: an
    enrollment clip also in the pool is left out of it (else it would be its own unlabeled neighbour)."""
    from srpl_cli.evaluation import _fit

    X, y = clusters(5)
    enroll, rest = enrolled_split(X, y)
    pool = X[rest[::2]]
    fit = _fit(calibrate=False)
    test = X[rest[1::2]]
    for method in ("pool-propagation", "srpl-v2"):
        clean = fit(method, X[enroll], y[enroll], None, 0, pool=pool)
        leaky = fit(method, X[enroll], y[enroll], None, 0, pool=np.concatenate([pool, X[enroll]]))
        np.testing.assert_array_equal(clean.decision_function(test), leaky.decision_function(test))
