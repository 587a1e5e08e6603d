"""`srpl export --onnx` through the real command: tune with a tiny random ERes2NetV2, export, run it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.backbones.test_eres2netv2 import new_layout_dir, write_tiny_model
from tests.conftest import shared_path
from tests.e2e.test_flow import srpl, subset

ort = pytest.importorskip("onnxruntime")


def test_tune_export_and_run_with_onnxruntime(tmp_path: Path) -> None:
    from srpl_cli.audio import load_audio
    from srpl_cli.backbones.eres2netv2 import ERes2NetV2Backbone

    write_tiny_model(new_layout_dir())  # the hub cache srpl reads offline (MODELSCOPE_CACHE from conftest)
    people = subset(shared_path("librispeech-mini", "speakers"), tmp_path / "people", 3, 3)
    ws = tmp_path / "ws"
    r = srpl(
        "tune", people, "--shots", "3", "--backbone", "eres2netv2", "--method", "cosine", "--workspace", ws
    )
    assert r.returncode == 0, r.stderr
    r = srpl("export", "--onnx", tmp_path / "artifact", "--workspace", ws, "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert (
        report["backbone"] == "eres2netv2" and report["speakers"] == 3 and report["embedding_cos"] >= 0.99999
    )
    meta = json.loads((tmp_path / "artifact" / "model.json").read_text())
    clip = sorted((people / meta["classes"][1]).iterdir())[0]
    fbank = ERes2NetV2Backbone.features(load_audio(clip)).unsqueeze(0).numpy()
    emb = ort.InferenceSession(str(tmp_path / "artifact" / "backbone.onnx")).run(None, {"fbank": fbank})[0]
    scores = ort.InferenceSession(str(tmp_path / "artifact" / "backend.onnx")).run(None, {"embedding": emb})[
        0
    ]
    assert scores.shape == (1, 3) and np.isfinite(scores).all()

    again = srpl("export", "--onnx", tmp_path / "artifact", "--workspace", ws)
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr
    none = srpl("export", "--onnx", tmp_path / "x", "--workspace", tmp_path / "empty")
    assert (
        none.returncode != 0 and "Traceback" not in none.stderr and len(none.stderr.strip().splitlines()) <= 2
    )
    assert not (tmp_path / "x").exists() and os.listdir(tmp_path).count("x") == 0

    # a model whose weights are not the ones found is not exported (an artifact would not fit its backend)
    tune_json = ws / "models" / "default" / "v0001" / "tune.json"
    info = json.loads(tune_json.read_text())
    weights, _, rest = info["backbone_id"].partition(":fe")
    tune_json.write_text(json.dumps({**info, "backbone_id": weights[:-4] + "ffff:fe" + rest}))
    other = srpl("export", "--onnx", tmp_path / "other", "--workspace", ws)
    assert other.returncode != 0 and "weights found" in other.stderr and "Traceback" not in other.stderr
    assert not (tmp_path / "other").exists()
