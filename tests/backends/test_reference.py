from __future__ import annotations

import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch

from srpl_cli.backends import load_backend
from srpl_cli.backends.reference import CRITERION_FILE, MODEL_FILE, load_reference_checkpoint, safe_torch_load
from srpl_cli.backends.srpl import SRPLBackend
from srpl_cli.errors import DataError


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_safe_torch_load_reads_numpy_pickles(tmp_path) -> None:
    arr = np.arange(6, dtype=np.float32).reshape(1, 6)
    torch.save(arr, tmp_path / "0.npy")
    out = safe_torch_load(tmp_path / "0.npy")
    np.testing.assert_array_equal(out, arr)
    torch.save({"w": torch.ones(2), "a": np.zeros(3, dtype=np.float64)}, tmp_path / "d.pth")
    d = safe_torch_load(tmp_path / "d.pth")
    assert torch.equal(d["w"], torch.ones(2)) and d["a"].dtype == np.float64


def test_safe_torch_load_refuses_code(tmp_path, capsys) -> None:
    torch.save({"x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(DataError, match="refused"):
        safe_torch_load(tmp_path / "evil.pth")
    (tmp_path / "plain.pkl").write_bytes(pickle.dumps(Evil(), protocol=2))
    with pytest.raises(DataError):
        safe_torch_load(tmp_path / "plain.pkl")
    assert "must never run" not in capsys.readouterr().out
    with pytest.raises(DataError, match="not found"):
        safe_torch_load(tmp_path / "missing.pth")


def test_safe_torch_load_garbage_is_a_data_error(tmp_path) -> None:
    """Non-torch bytes and directories give a DataError naming the file, never a traceback."""
    (tmp_path / "text.pth").write_text("hello, not a checkpoint\n")
    with pytest.raises(DataError, match="text.pth: refused"):
        safe_torch_load(tmp_path / "text.pth")  # the legacy unpickler raised KeyError here
    (tmp_path / "folder.pth").mkdir()
    with pytest.raises(DataError, match="folder.pth: cannot read"):
        safe_torch_load(tmp_path / "folder.pth")


def _fake_checkpoint(path, dims=(8, 6, 4), in_dim=5, n_points=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    names = [("fc1", "bn1"), ("fc1_1", "bn1_1"), ("fc1_2", "bn1_2")]
    net = OrderedDict()
    prev = in_dim
    for (fc, bn), d in zip(names, dims):
        net[f"module.{fc}.weight"] = torch.randn(d, prev, generator=g)
        net[f"module.{bn}.weight"] = torch.rand(d, generator=g) + 0.5
        net[f"module.{bn}.bias"] = torch.randn(d, generator=g)
        net[f"module.{bn}.running_mean"] = torch.randn(d, generator=g)
        net[f"module.{bn}.running_var"] = torch.rand(d, generator=g) + 0.5
        net[f"module.{bn}.num_batches_tracked"] = torch.tensor(7)
        prev = d
    net["module.fc2.weight"] = torch.randn(n_points, prev, generator=g)
    points = torch.randn(n_points, prev, generator=g)
    crit = OrderedDict(points=points, radius=torch.tensor([2.5]), **{"Dist.centers": points.clone()})
    crit["Dist2.centers"] = torch.randn(n_points, prev, generator=g)
    path.mkdir()
    torch.save(net, path / MODEL_FILE)
    torch.save(crit, path / CRITERION_FILE)
    return net, crit


def _manual_logits(net, crit, X):
    h = torch.from_numpy(X)
    for fc, bn in [("fc1", "bn1"), ("fc1_1", "bn1_1"), ("fc1_2", "bn1_2")]:
        h = h @ net[f"module.{fc}.weight"].T
        mean, var = net[f"module.{bn}.running_mean"], net[f"module.{bn}.running_var"]
        h = (h - mean) / torch.sqrt(var + 1e-5) * net[f"module.{bn}.weight"] + net[f"module.{bn}.bias"]
        h = torch.relu(h)
    return -(h @ crit["points"].T).numpy()


def test_load_reference_checkpoint_scores_like_the_reference(tmp_path) -> None:
    net, crit = _fake_checkpoint(tmp_path / "ckpt")
    X = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
    est = SRPLBackend.from_reference_checkpoint(tmp_path / "ckpt")
    assert est.hidden_dims == (8, 6, 4) and est.n_features_in_ == 5
    assert list(est.classes_) == [0, 1, 2, 3]
    np.testing.assert_allclose(est.decision_function(X), _manual_logits(net, crit, X), rtol=1e-5, atol=1e-5)
    assert est.threshold_ == pytest.approx(1 - 2.5)
    # our own format afterwards
    est.save(tmp_path / "ours")
    again = load_backend(tmp_path / "ours")
    np.testing.assert_array_equal(again.decision_function(X), est.decision_function(X))
    # a subset of the points, named
    sub = load_reference_checkpoint(tmp_path / "ckpt", classes=["x", "y"])
    assert list(sub.classes_) == ["x", "y"]
    np.testing.assert_allclose(
        sub.decision_function(X), _manual_logits(net, crit, X)[:, :2], rtol=1e-5, atol=1e-5
    )


def test_load_reference_checkpoint_errors(tmp_path) -> None:
    with pytest.raises(DataError, match="not a directory"):
        load_reference_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="missing"):
        load_reference_checkpoint(tmp_path / "empty")
    _fake_checkpoint(tmp_path / "ckpt")
    with pytest.raises(DataError, match="classes"):
        load_reference_checkpoint(tmp_path / "ckpt", classes=list(range(9)))
    crit = torch.load(tmp_path / "ckpt" / CRITERION_FILE, weights_only=True)
    del crit["radius"]
    torch.save(crit, tmp_path / "ckpt" / CRITERION_FILE)
    with pytest.raises(DataError, match="radius"):
        load_reference_checkpoint(tmp_path / "ckpt")
    torch.save({"x": Evil()}, tmp_path / "ckpt" / MODEL_FILE)
    with pytest.raises(DataError, match="refused"):
        load_reference_checkpoint(tmp_path / "ckpt")
