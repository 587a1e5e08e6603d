"""The selection policy on constructed embeddings, where the right answer is known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from srpl_cli.errors import DataError
from srpl_cli.synthesis.select import SelectionParams, centroids, select


def unit(*coords: float, dim: int = 6) -> np.ndarray:
    v = np.zeros(dim)
    v[: len(coords)] = coords
    return v / np.linalg.norm(v)


@pytest.fixture
def enroll() -> tuple[np.ndarray, list[str]]:
    # two speakers on axes 0 and 1, two clips each
    X = np.stack([unit(1, 0.1), unit(1, -0.1), unit(0.1, 1), unit(-0.1, 1)])
    return X, ["a", "a", "b", "b"]


def test_centroids_are_normalised_means(enroll) -> None:
    speakers, cents = centroids(*enroll)
    assert speakers == ["a", "b"]
    np.testing.assert_allclose(cents, np.stack([unit(1), unit(0, 1)]), atol=1e-12)


def test_keeps_the_k_variants_nearest_each_centroid(enroll) -> None:
    # speaker a: variants at decreasing similarity; speaker b: two variants
    known = np.stack([unit(1, 0.9), unit(1, 0.05), unit(1, 0.5), unit(1, 2), unit(0.2, 1), unit(0, 1)])
    labels = ["a", "a", "a", "a", "b", "b"]
    res = select(*enroll, known, labels, params=SelectionParams(k_known=2))
    assert res.known_kept == [1, 2, 4, 5]
    assert res.known_dropped == [0, 3]
    assert res.known_scores[1] == pytest.approx(float(unit(1, 0.05) @ unit(1)))
    assert res.to_dict()["known"] == {"kept": 4, "dropped": 2}
    # k=None keeps everything
    assert select(*enroll, known, labels, params=SelectionParams(k_known=None)).known_dropped == []


def test_unknowns_below_bound_alternate_nearest_and_farthest(enroll) -> None:
    # candidate i has cosine c_i to speaker a's centroid and 0 to b's: mean = c_i / 2
    cos = np.array([0.9, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0, -0.3])
    unknown = np.stack([np.array([c, 0, np.sqrt(1 - c**2), 0, 0, 0]) for c in cos])
    res = select(*enroll, unknown=unknown, params=SelectionParams(unknown_bound=0.22, n_unknown=3))
    # eligible: mean < 0.22 -> indices 2..7 (0.9 and 0.5 are too close to the targets)
    assert res.unknown_eligible == 6
    assert res.unknown_scores[0] == pytest.approx(0.45)
    # target a: nearest 2 (0.4), farthest 7 (-0.3), next nearest 3; target b (all 0 -> stable order):
    # nearest is the first eligible not taken (4), farthest the last not taken (6), then 5
    assert res.unknown_kept == [2, 3, 4, 5, 6, 7]
    assert res.unknown_dropped == [0, 1]
    small = select(*enroll, unknown=unknown, params=SelectionParams(unknown_bound=0.22, n_unknown=1))
    assert small.unknown_kept == [2, 3]  # each target takes its own nearest not yet taken
    none = select(*enroll, unknown=unknown, params=SelectionParams(unknown_bound=None, n_unknown=None))
    assert none.unknown_kept == list(range(8))
    empty = select(*enroll, unknown=unknown, params=SelectionParams(unknown_bound=-0.9))
    assert empty.unknown_kept == [] and empty.unknown_eligible == 0


def test_default_params_match_the_paper() -> None:
    p = SelectionParams()
    assert (p.k_known, p.unknown_bound, p.n_unknown) == (3, 0.3, 12)


def test_mismatched_inputs_are_data_errors(enroll) -> None:
    X, y = enroll
    with pytest.raises(DataError):
        select(X, y[:3])
    with pytest.raises(DataError):
        select(X, y, np.ones((2, 6)), ["a"])
    with pytest.raises(DataError):
        select(X, y, np.ones((1, 6)), ["zed"])
