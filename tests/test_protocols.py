from __future__ import annotations

import numpy as np
import pytest

from srpl_cli.errors import DataError
from srpl_cli.protocols import few_shot_folds, first_n_split


def _labels(n_spk=10, n_clips=8):
    return np.repeat(np.arange(n_spk), n_clips)


def test_folds_partition_and_pairing():
    y = _labels()
    folds = few_shot_folds(y, n_known=5, n_shots=3, n_folds=10, seed=1)
    assert len(folds) == 10
    for f in folds:
        assert len(f.known) == 5 and len(f.enroll) == 15
        allidx = np.concatenate([f.enroll, f.test_known, f.test_unknown])
        assert sorted(allidx.tolist()) == list(range(len(y)))  # a partition
        assert set(y[f.test_unknown]).isdisjoint(f.known)
        assert set(y[f.enroll]) == set(f.known)
    # same seed -> same folds; different seed -> different
    again = few_shot_folds(y, 5, 3, 10, seed=1)
    assert all((a.enroll == b.enroll).all() for a, b in zip(folds, again))
    other = few_shot_folds(y, 5, 3, 10, seed=2)
    assert any(not np.array_equal(a.enroll, b.enroll) for a, b in zip(folds, other))


def test_enroll_mask_and_never_known():
    y = _labels(6, 6)
    mask = np.tile([True, True, False, False, False, False], 6)
    never = np.zeros(len(y), bool)
    never[-6:] = True  # speaker 5 is an "other people" pool
    folds = few_shot_folds(y, 3, 2, 5, seed=0, enroll_mask=mask, never_known=never)
    for f in folds:
        assert mask[f.enroll].all()
        assert 5 not in f.known
        assert set(np.flatnonzero(never)).issubset(f.test_unknown)


def test_fixed_known_pool():
    y = _labels()
    folds = few_shot_folds(y, None, 2, 3, seed=0, known_pool=[0, 1, 2])
    assert all(list(f.known) == [0, 1, 2] for f in folds)


def test_errors():
    y = _labels(4, 3)
    with pytest.raises(DataError, match="cannot pick"):
        few_shot_folds(y, 3, 3, 2)  # 3 clips each: none left to test with 3 shots
    with pytest.raises(DataError, match="not found"):
        few_shot_folds(y, None, 1, 2, known_pool=[99])
    with pytest.raises(DataError, match="no unknown"):
        few_shot_folds(y, 4, 1, 1)


def test_first_n_split_uses_numeric_order():
    y = np.array([0, 0, 0, 1, 1, 1, 9, 9])
    order = np.array([2, 0, 1, 1, 0, 2, 0, 1])
    f = first_n_split(y, order, [0, 1], 2)
    assert sorted(f.enroll.tolist()) == [1, 2, 3, 4]
    assert f.test_known.tolist() == [0, 5]
    assert f.test_unknown.tolist() == [6, 7]


def test_bad_shots_or_folds_are_usage_errors():
    from srpl_cli.errors import UsageError

    y = _labels(4, 3)
    with pytest.raises(UsageError, match="--shots"):
        few_shot_folds(y, 2, 0, 2)
    with pytest.raises(UsageError, match="--folds"):
        few_shot_folds(y, 2, 1, 0)


def test_evaluation_known_ids_must_exist_in_the_data(monkeypatch):
    from srpl_cli.evaluation import EvalData, known_names, run_checkpoint, run_fixed_split

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(10, 8))
    y_tr = np.repeat([0, 1, 2], 4)
    y_te = np.repeat([0, 1, 2, 5, 6], 3)
    data = EvalData(
        (centers[y_te] + 0.1 * rng.normal(size=(len(y_te), 8))).astype(np.float32),
        y_te,
        X_train=(centers[y_tr] + 0.1 * rng.normal(size=(len(y_tr), 8))).astype(np.float32),
        y_train=y_tr,
    )
    # 5 is a test speaker with no training clips: was a KeyError deep in score_method
    with pytest.raises(DataError, match=r"\[5\] have no clips in emb_train"):
        run_fixed_split(data, ["cosine"], "0,1,5", None, 0)
    report = run_fixed_split(data, ["cosine"], "0,1", None, 0)
    assert report.protocol["known"] == [0, 1]
    # audio data labels clips by folder name: --known names or numbers must map onto those strings
    labels = np.array(["03", "08", "alice", "1688"])
    assert known_names("alice,1688", labels) == ["1688", "alice"]
    # "03" matches 3; unmatched ids ("4") are left for the protocol to report as not found
    assert {"03", "08", "4"} <= set(known_names("3-8", labels))

    class _Model:
        classes_ = np.array([0, 1, 2, 3])

    monkeypatch.setattr("srpl_cli.evaluation.load_checkpoint", lambda path: (_Model(), "m"))
    with pytest.raises(DataError, match="has clips in emb_test"):
        run_checkpoint(data, "x", "3")  # a class of the checkpoint with no test clips: was "X is empty"


def test_folds_json_uses_one_unit():
    from srpl_cli.protocols import FoldsReport, MethodResult

    report = FoldsReport(["cosine"], baseline="cosine")
    for acc in (0.5, 1.0):
        report.folds.append({"cosine": MethodResult({"acc": acc, "min_dcf": 0.25})})
    d = report.to_dict()
    assert d["summary"]["cosine"]["acc"]["mean"] == 75.0
    # per_fold used to be fractions beside a summary in percent
    assert [f["cosine"]["acc"] for f in d["per_fold"]] == [50.0, 100.0]
    assert d["per_fold"][0]["cosine"]["min_dcf"] == 0.25


def test_evaluate_audio_missing_unknown_dir_is_an_error(tmp_path):
    """A mistyped --unknown-dir used to be one more 'skipped clip' and the pool silently vanished."""
    from srpl_cli.evaluation import load_audio_data
    from srpl_cli.workspace import Workspace

    for spk in ("a", "b", "c"):
        (tmp_path / "data" / spk).mkdir(parents=True)
        (tmp_path / "data" / spk / "0.wav").write_bytes(b"")
    with pytest.raises(DataError, match="no such directory"):
        load_audio_data(
            tmp_path / "data", "dvector", Workspace(tmp_path / "ws"), None, tmp_path / "typo", None, None
        )


def test_calibration_with_fewer_unknown_samples_than_rounds():
    """tune --unknown-dir with 1 clip (or --synthetic with 2 voices) failed with "error: X is empty"."""
    from srpl_cli.calibration import fit_backend, held_out_scores

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 8))
    y = np.repeat(["a", "b", "c"], 4)
    X = (centers[np.repeat([0, 1, 2], 4)] + 0.2 * rng.normal(size=(12, 8))).astype(np.float32)
    X_unknown = rng.normal(size=(1, 8)).astype(np.float32)
    genuine, impostor = held_out_scores("cosine", {}, X, y, X_unknown)
    assert len(genuine) == 12 and len(impostor) == 1 + 12  # the one unknown, once; plus left-out speakers
    model, info = fit_backend("cosine", X, y, X_unknown)
    assert info["heldout_impostor"] == 13 and np.isfinite(model.threshold_)


def test_variants_follow_their_source_clip_out_of_calibration_training():
    """A synthetic variant of a held-out clip left in training made the genuine scores optimistic."""
    from srpl_cli.calibration import held_out_scores

    rng = np.random.default_rng(1)
    centers = rng.normal(size=(3, 8))
    y = np.repeat(["a", "b", "c"], 4)
    X = (centers[np.repeat([0, 1, 2], 4)] + 0.5 * rng.normal(size=(12, 8))).astype(np.float32)
    # each clip gets an exact copy as its "variant": with the copy tracked, every cosine prototype is
    # the mean of the same clips as without variants, so the scores must be identical
    X2, y2 = np.concatenate([X, X]), np.concatenate([y, y])
    origin = np.concatenate([np.arange(12), np.arange(12)])
    plain = held_out_scores("cosine", {}, X, y, None)
    tracked = held_out_scores("cosine", {}, X2, y2, None, origin=origin)
    np.testing.assert_allclose(tracked[0], plain[0], rtol=1e-6)
    np.testing.assert_allclose(tracked[1], plain[1], rtol=1e-6)
    untracked = held_out_scores("cosine", {}, X2, y2, None)
    assert len(untracked[0]) == 24 and untracked[0].mean() > plain[0].mean() + 0.05  # the leak
    # a variant of no single clip (origin -1) stays in training and is never scored
    origin[12:] = -1
    assert len(held_out_scores("cosine", {}, X2, y2, None, origin=origin)[0]) == 12


def test_variant_sources_match_enrollment_rows(tmp_path):
    from srpl_cli.pipeline import _source_rows

    clips = [[tmp_path / "a" / "1.wav", tmp_path / "a" / "2.wav"], [tmp_path / "b" / "1.wav"]]
    sources = {
        "v1": str(tmp_path / "a" / "2.wav"),  # same path
        "v2": "elsewhere/b/1.wav",  # relative to another directory: "1.wav" is ambiguous
        "v3": "other/2.wav",  # ...but "2.wav" is not
        "v4": "gone.wav",
    }
    assert _source_rows(sources, clips) == {"v1": 1, "v3": 1}
    # a source clip of another speaker never claims a variant
    assert _source_rows(sources, clips, {"v1": 1, "v3": 0}) == {"v3": 1}


def test_as_norm_calibrates_like_tune_with_its_cohort():
    """`srpl tune --method as-norm --unknown-dir DIR`: the cohort is also held-out impostor data."""
    from srpl_cli.calibration import fit_backend

    rng = np.random.default_rng(2)
    centers = rng.normal(size=(4, 8))
    y = np.repeat(["a", "b", "c", "d"], 5)
    X = (centers[np.repeat(np.arange(4), 5)] + 0.3 * rng.normal(size=(20, 8))).astype(np.float32)
    cohort = rng.normal(size=(12, 8)).astype(np.float32)
    model, info = fit_backend("as-norm", X, y, cohort)
    assert info["heldout_impostor"] == 12 + 20 and info["heldout_genuine"] == 20
    assert np.isfinite(model.threshold_) and len(model.cohort_) == 12
