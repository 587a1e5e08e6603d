"""`srpl export --onnx`: onnxruntime reproduces the PyTorch path (tiny random backbones, every backend)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from srpl_cli.audio import load_audio
from srpl_cli.backends import get_backend
from srpl_cli.errors import UsageError
from srpl_cli.export import export_onnx
from tests.conftest import shared_path

ort = pytest.importorskip("onnxruntime")


def speech() -> list[np.ndarray]:
    clips = sorted(shared_path("librispeech-mini", "speakers").glob("*/*.flac"))[:6:3]
    return [load_audio(c)[: 3 * 16000] for c in clips]


def fitted(name: str, dim: int) -> object:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((24, dim)).astype(np.float32)
    y = np.repeat(["alice", "bob", "carol"], 8)
    X += 2.0 * rng.standard_normal((3, dim)).astype(np.float32)[np.repeat(np.arange(3), 8)]
    unknown = rng.standard_normal((12, dim)).astype(np.float32)
    params = {"epochs": 2, "hidden_dims": (32,), "device": "cpu"} if name == "srpl" else {}
    backend = get_backend(name, **params)
    return backend.fit(X, y, unknown if name in ("as-norm", "srpl") else None)


def eres(tmp_path: Path):
    from srpl_cli.backbones.eres2netv2 import ERes2NetV2Backbone
    from tests.backbones.test_eres2netv2 import write_tiny_model

    write_tiny_model(tmp_path / "eres")
    return ERes2NetV2Backbone.load(tmp_path / "eres", device="cpu", path="eager")


def run(folder: Path, name: str, x: np.ndarray) -> np.ndarray:
    meta = json.loads((folder / "model.json").read_text())
    session = ort.InferenceSession(str(folder / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    feed = {meta["frontend"]["input"] if name == "backbone" else "embedding": x}
    return session.run(None, feed)[0]


def test_eres2netv2_artifact_matches_pytorch_on_real_speech(tmp_path: Path) -> None:
    bb = eres(tmp_path)
    backend = fitted("anchored-cosine", bb.dim)
    report = export_onnx(tmp_path / "out", bb, backend)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "backbone.onnx",
        "backend.onnx",
        "model.json",
    ]
    meta = json.loads((out / "model.json").read_text())
    assert meta["classes"] == ["alice", "bob", "carol"] and meta["threshold"] == pytest.approx(
        backend.threshold_
    )
    assert meta["backbone_id"] == bb.identifier and report.embedding_cos >= 0.99999
    assert "fbank" in (out / "README.md").read_text()
    for wave in speech():  # the documented recipe: fbank -> backbone.onnx -> backend.onnx
        emb = run(out, "backbone", bb.features(wave).unsqueeze(0).numpy())
        expected = bb.embed([wave])
        assert float(np.sum(emb * expected)) >= 0.99999
        scores = run(out, "backend", emb)
        np.testing.assert_allclose(scores, backend.decision_function(expected), atol=1e-4)


def test_wavlm_artifact_takes_the_waveform(tmp_path: Path) -> None:
    from srpl_cli.backbones.wavlm import WavLMBackbone
    from tests.backbones.test_wavlm import tiny_model_dir

    bb = WavLMBackbone.load(tiny_model_dir(tmp_path / "wavlm"), device="cpu", path="eager")
    export_onnx(tmp_path / "out", bb, fitted("cosine", bb.dim))
    for wave in speech():
        emb = run(tmp_path / "out", "backbone", wave[None])
        assert float(np.sum(emb * bb.embed([wave]))) >= 0.99999


@pytest.mark.parametrize("name", ["cosine", "as-norm", "srpl"])
def test_every_backend_exports(name: str, tmp_path: Path) -> None:
    bb = eres(tmp_path)
    backend = fitted(name, bb.dim)
    export_onnx(tmp_path / "out", bb, backend)
    X = np.random.default_rng(5).standard_normal((9, bb.dim)).astype(np.float32)
    np.testing.assert_allclose(run(tmp_path / "out", "backend", X), backend.decision_function(X), atol=1e-4)


def test_refuses_existing_folder_and_fast_path(tmp_path: Path) -> None:
    bb = eres(tmp_path)
    backend = fitted("cosine", bb.dim)
    (tmp_path / "taken").mkdir()
    with pytest.raises(UsageError, match="already exists"):
        export_onnx(tmp_path / "taken", bb, backend)
    with pytest.raises(UsageError, match="eager"):
        export_onnx(tmp_path / "new", bb.with_path("fp32"), backend)
    assert not (tmp_path / "new").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no debris
