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
