"""ERes2NetV2 through its real loading code: a tiny state dict in a pre-populated ModelScope cache."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from srpl_cli.backbones import _hub, get_backbone
from srpl_cli.backbones.eres2netv2 import ERes2NetV2Backbone, read_config, shipped_model_class
from srpl_cli.errors import ModelUnavailableError

SR = 16000


@pytest.fixture(autouse=True)
def _reference_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading is checked against the eager reference path; the fast paths are tests/backbones/test_cpu_paths.py."""
    monkeypatch.setenv("SRPL_CPU_PATH", "eager")


TINY = {"m_channels": 4, "embed_dim": 16, "baseWidth": 26, "scale": 2, "expansion": 2}
HUB = _hub.HUB_MODELS["eres2netv2"]


def write_tiny_model(folder: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """What `srpl download --model eres2netv2` leaves: configuration.json + pretrained_eres2netv2.ckpt."""
    torch.manual_seed(seed)
    model = shipped_model_class()(
        m_channels=TINY["m_channels"],
        embed_dim=TINY["embed_dim"],
        baseWidth=TINY["baseWidth"],
        scale=TINY["scale"],
        expansion=TINY["expansion"],
    )
    # non-trivial batch-norm statistics so eval mode is exercised
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    folder.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    torch.save(state, folder / "pretrained_eres2netv2.ckpt")
    config = {
        "framework": "pytorch",
        "task": "speaker-verification",
        "model": {
            "type": "eres2netv2-sv",
            "model_config": {
                "sample_rate": 16000,
                "fbank_dim": 80,
                "embed_dim": TINY["embed_dim"],
                "baseWidth": TINY["baseWidth"],
                "scale": TINY["scale"],
                "expansion": TINY["expansion"],
            },
            "pretrained_model": "pretrained_eres2netv2.ckpt",
        },
        "pipeline": {"type": "speaker-verification-eres2netv2"},
    }
    (folder / "configuration.json").write_text(json.dumps(config))
    return state


def cache_root() -> Path:
    return Path(os.environ["MODELSCOPE_CACHE"])


def new_layout_dir() -> Path:
    return cache_root() / "models" / "iic--speech_eres2netv2_sv_zh-cn_16k-common" / "snapshots" / HUB.revision


def waves() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (SR, 2 * SR, SR, int(1.5 * SR))]


def test_shipped_class_without_modelscope_registry() -> None:
    cls = shipped_model_class()
    assert cls.__name__ == "ERes2NetV2"
    assert "modelscope.models" not in sys.modules  # the registry was never imported
    full = cls(m_channels=64, feat_dim=80, embed_dim=192, baseWidth=26, scale=2, expansion=2)
    assert 17.5e6 < sum(p.numel() for p in full.parameters()) < 18.2e6  # ERes2NetV2 "common": 17.8 M


def test_loads_from_modelscope_cache_offline() -> None:
    state = write_tiny_model(new_layout_dir())
    bb = get_backbone("eres2netv2", device="cpu")  # SRPL_OFFLINE=1 from conftest: cache only
    assert isinstance(bb, ERes2NetV2Backbone)
    assert bb.identifier.startswith("eres2netv2:") and bb.dim == 16
    same = ERes2NetV2Backbone.load(new_layout_dir(), device="cpu")  # as with --backbone-path
    assert same.identifier == bb.identifier
    out = bb.embed(waves())
    assert out.shape == (4, 16) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    # same as running modelscope's class by hand on the documented front end
    model = shipped_model_class()(**TINY, feat_dim=80).eval()
    model.load_state_dict(state)
    with torch.inference_mode():
        ref = model(ERes2NetV2Backbone.features(waves()[1]).unsqueeze(0))
    ref = torch.nn.functional.normalize(ref, dim=1).numpy()[0]
    np.testing.assert_allclose(out[1], ref, atol=1e-5)


def test_modelscope_own_local_lookup_finds_new_layout() -> None:
    write_tiny_model(new_layout_dir())
    found = _hub._snapshot(HUB, local_files_only=True)
    assert found is not None and found.resolve() == new_layout_dir().resolve()


def test_loads_from_legacy_cache_layout() -> None:
    write_tiny_model(cache_root() / "models" / "iic" / "speech_eres2netv2_sv_zh-cn_16k-common")
    bb = ERes2NetV2Backbone.load(device="cpu")
    assert bb.embed(waves()[:1]).shape == (1, 16)


def test_explicit_folder_and_bad_checkpoint(tmp_path: Path) -> None:
    write_tiny_model(tmp_path / "model")
    bb = ERes2NetV2Backbone.load(tmp_path / "model", device="cpu")
    assert bb.identifier.startswith("eres2netv2:")
    with pytest.raises(ModelUnavailableError, match="missing pretrained_eres2netv2.ckpt"):
        ERes2NetV2Backbone.load(tmp_path)
    (tmp_path / "model" / "pretrained_eres2netv2.ckpt").write_bytes(b"garbage")
    with pytest.raises(ModelUnavailableError, match="not a readable"):
        ERes2NetV2Backbone.load(tmp_path / "model")


def test_config_reading(tmp_path: Path) -> None:
    write_tiny_model(tmp_path)
    config, ckpt = read_config(tmp_path)
    assert ckpt == "pretrained_eres2netv2.ckpt"
    assert config["embed_dim"] == 16 and config["feat_dim"] == 80 and "m_channels" not in config


def test_features_are_mean_normalised_fbank() -> None:
    feat = ERes2NetV2Backbone.features(waves()[0])
    assert feat.shape == (98, 80)  # 1 s: (16000 - 400) // 160 + 1 frames, snip_edges
    np.testing.assert_allclose(feat.mean(0).numpy(), 0.0, atol=1e-4)


def test_batches_are_exact_and_long_clips_windowed() -> None:
    write_tiny_model(new_layout_dir())
    bb = ERes2NetV2Backbone.load(device="cpu")
    ws = waves()
    batch = bb.embed(ws)
    single = np.vstack([bb.embed([w]) for w in ws])
    np.testing.assert_allclose(batch, single, atol=1e-5)  # equal-length buckets: batch-independent
    bb.window_s = 1.0
    long = np.concatenate(ws[:2])  # 3 s -> 3 windows of 1 s
    assert bb.embed([long]).shape == (1, 16)
