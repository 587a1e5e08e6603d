from __future__ import annotations

import numpy as np
import pytest

from srpl_cli.backends.cosine import CosineBackend, l2_normalize


def test_scores_are_cosine_to_normalised_mean_of_normalised_embeddings() -> None:
    X = np.array([[3.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [-5.0, 0.1]], dtype=np.float32)
    y = np.array(["a", "a", "b", "b"])
    est = CosineBackend().fit(X, y)
    # normalise first: [1,0] and [0,1] average to [.5,.5] -> direction 45 degrees (a raw mean would tilt to x)
    np.testing.assert_allclose(est.centers_[0], [np.sqrt(0.5), np.sqrt(0.5)], atol=1e-6)
    q = np.array([[1.0, 1.0], [2.0, 0.0]], dtype=np.float32)
    expected = l2_normalize(q) @ est.centers_.T
    np.testing.assert_allclose(est.decision_function(q), expected, atol=1e-6)
    np.testing.assert_allclose(est.decision_function(q)[0, 0], 1.0, atol=1e-6)
    assert np.all(np.abs(est.decision_function(X)) <= 1.0 + 1e-6)


def test_scale_invariant_and_separable_data_is_perfect() -> None:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(5, 16))
    X = np.concatenate([c + 0.05 * rng.normal(size=(6, 16)) for c in centers]).astype(np.float32)
    y = np.repeat(np.arange(5), 6)
    est = CosineBackend().fit(X, y)
    np.testing.assert_array_equal(est.decision_function(X).argmax(1), y)
    np.testing.assert_allclose(est.decision_function(10 * X), est.decision_function(X), atol=1e-6)
    # the default threshold accepts every enrollment clip
    assert (est.predict(X) == y).all()


def test_l2_normalize_keeps_zero_rows() -> None:
    out = l2_normalize(np.array([[0.0, 0.0], [3.0, 4.0]]))
    np.testing.assert_allclose(out, [[0, 0], [0.6, 0.8]])
    assert out.dtype == np.float32


@pytest.mark.parametrize("per", [1, 3])
def test_one_clip_per_speaker_is_fine(per: int) -> None:
    X = np.eye(4, dtype=np.float32)[:2].repeat(per, axis=0)
    est = CosineBackend().fit(X, np.repeat([0, 1], per))
    np.testing.assert_allclose(est.decision_function(X[:1]), [[1.0, 0.0]], atol=1e-6)


def test_hand_edited_meta_json_is_a_data_error(tmp_path) -> None:
    import json

    from srpl_cli.backends import load_backend
    from srpl_cli.errors import DataError

    X = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]], dtype=np.float32)
    CosineBackend().fit(X, ["a", "a", "b", "b"]).save(tmp_path)
    meta = json.loads((tmp_path / "meta.json").read_text())
    for broken in ({k: v for k, v in meta.items() if k != "classes"}, {**meta, "params": {"x": 1}}, []):
        (tmp_path / "meta.json").write_text(json.dumps(broken))
        with pytest.raises(DataError):  # was an internal KeyError / TypeError
            load_backend(tmp_path)
