"""WavLM x-vector through its real loading code with a tiny locally created model."""

from __future__ import annotations

import hashlib
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from srpl_cli.backbones import get_backbone
from srpl_cli.backbones.wavlm import WavLMBackbone
from srpl_cli.errors import ModelUnavailableError

SR = 16000


@pytest.fixture(autouse=True)
def _reference_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading is checked against the eager reference path; the fast paths are tests/backbones/test_cpu_paths.py."""
    monkeypatch.setenv("SRPL_CPU_PATH", "eager")


COMMIT = "0123456789abcdef0123456789abcdef01234567"


def tiny_model_dir(folder: Path) -> Path:
    """A 2-layer WavLMForXVector + feature extractor saved with save_pretrained."""
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMForXVector

    torch.manual_seed(0)
    config = WavLMConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=48,
        conv_dim=(16, 16, 16),
        conv_kernel=(10, 4, 4),
        conv_stride=(5, 4, 4),  # 80 samples per frame: short sequences, fast tests
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        num_buckets=16,
        max_bucket_distance=64,
        tdnn_dim=(16, 16, 32),
        tdnn_kernel=(3, 1, 1),
        tdnn_dilation=(1, 1, 1),
        xvector_output_dim=24,
        use_weighted_layer_sum=True,
        classifier_proj_size=16,
    )
    WavLMForXVector(config).eval().save_pretrained(folder)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=SR, padding_value=0.0, do_normalize=False, return_attention_mask=True
    ).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("wavlm") / "tiny")


@pytest.fixture(scope="module")
def local_bb(model_dir: Path) -> WavLMBackbone:
    return WavLMBackbone.load(model_dir, device="cpu", path="eager")


def populate_hf_cache(model_dir: Path) -> Path:
    """Lay the files out as huggingface_hub does: blobs named by sha256, snapshot symlinks, refs/main."""
    repo = Path(os.environ["HF_HOME"]) / "hub" / "models--microsoft--wavlm-base-plus-sv"
    snap = repo / "snapshots" / COMMIT
    (repo / "blobs").mkdir(parents=True)
    snap.mkdir(parents=True)
    for f in model_dir.iterdir():
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copy(f, repo / "blobs" / digest)
        (snap / f.name).symlink_to(Path("..") / ".." / "blobs" / digest)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return snap


def waves() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (SR, int(2.5 * SR), 2 * SR)]


def test_loads_from_explicit_folder(local_bb: WavLMBackbone) -> None:
    bb = local_bb
    assert bb.identifier.startswith("wavlm:") and bb.dim == 24
    out = bb.embed(waves())
    assert out.shape == (3, 24) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_loads_from_hf_cache_offline(model_dir: Path, local_bb: WavLMBackbone) -> None:
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    snap = populate_hf_cache(model_dir)
    bb = get_backbone("wavlm", device="cpu")
    weights = snap / "model.safetensors"
    digest = Path(os.path.realpath(weights)).name
    assert bb.identifier.startswith(f"wavlm:{digest[:12]}:fe1")
    assert bb.identifier == local_bb.identifier  # same weights, same id, wherever they were loaded from
    np.testing.assert_allclose(bb.embed(waves()), local_bb.embed(waves()), atol=1e-6)


def test_matches_transformers_directly(model_dir: Path, local_bb: WavLMBackbone) -> None:
    from transformers import AutoFeatureExtractor, WavLMForXVector

    bb = local_bb
    fe = AutoFeatureExtractor.from_pretrained(model_dir)
    model = WavLMForXVector.from_pretrained(model_dir).eval()
    w = waves()[1]
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ref = model(**fe([w], sampling_rate=SR, return_tensors="pt")).embeddings
    ref = torch.nn.functional.normalize(ref, dim=1).numpy()[0]
    np.testing.assert_allclose(bb.embed([w])[0], ref, atol=1e-5)


def test_batch_neighbours_do_not_matter(local_bb: WavLMBackbone) -> None:
    bb = local_bb
    ws = waves()
    batch = bb.embed(ws)
    single = np.vstack([bb.embed([w]) for w in ws])
    assert (np.sum(batch * single, axis=1) >= 0.99999).all()  # equal-length groups: never padded


def test_long_clip_windowed(local_bb: WavLMBackbone) -> None:
    bb = WavLMBackbone(local_bb._model, local_bb._extractor, "cpu", local_bb.identifier, 24, window_s=1.0)
    out = bb.embed([np.concatenate(waves())])
    assert out.shape == (1, 24) and np.isfinite(out).all()


def test_bad_folder(tmp_path: Path, model_dir: Path) -> None:
    with pytest.raises(ModelUnavailableError, match="not a 'wavlm' model folder"):
        WavLMBackbone.load(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"junk")
    with pytest.raises(ModelUnavailableError, match="cannot load"):
        WavLMBackbone.load(broken)
