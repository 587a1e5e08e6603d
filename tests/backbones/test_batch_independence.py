"""A clip's embedding is the one it gets alone, whatever else shares its batch (issue #10, section 2).

Every registered backbone, every inference path: WavLM's first GroupNorm spans the whole time axis and
ERes2NetV2's statistics pooling has no mask, so any padding would leak the neighbours into the result.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from srpl_cli.backbones import BACKBONES, _cpu
from srpl_cli.backbones.base import Backbone, equal_length_groups

SR = 16000


def clips() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    # 2 s (twice: equal lengths share a pass), 1 s, 4 s and 3.3 s neighbours
    lengths = (2 * SR, SR, 4 * SR, 2 * SR, int(3.3 * SR))
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]


def tiny_backbone(name: str, tmp_path: Path) -> Backbone:
    if name == "dvector":
        from srpl_cli.backbones.dvector import DVectorBackbone, packaged_weights

        if packaged_weights() is None:
            pytest.skip("resemblyzer (which ships the d-vector weights) is not installed")
        return DVectorBackbone.load(device="cpu")
    if name == "eres2netv2":
        from srpl_cli.backbones.eres2netv2 import ERes2NetV2Backbone
        from tests.backbones.test_eres2netv2 import write_tiny_model

        write_tiny_model(tmp_path / "eres")
        return ERes2NetV2Backbone.load(tmp_path / "eres", device="cpu", path="eager")
    if name == "wavlm":
        from srpl_cli.backbones.wavlm import WavLMBackbone
        from tests.backbones.test_wavlm import tiny_model_dir

        return WavLMBackbone.load(tiny_model_dir(tmp_path / "wavlm"), device="cpu", path="eager")
    raise AssertionError(f"no tiny stand-in for backbone {name}: add one here")


def paths_of(bb: Backbone) -> list[str]:
    if not hasattr(bb, "with_path"):
        return ["eager"]
    return ["eager", "fp32"] + (["bf16"] if _cpu.native_bf16() else [])


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_embedding_does_not_depend_on_batch(name: str, tmp_path: Path) -> None:
    ref = tiny_backbone(name, tmp_path)
    for path in paths_of(ref):
        bb = ref if path == "eager" else ref.with_path(path)  # type: ignore[attr-defined]
        ws = clips()
        alone = np.vstack([bb.embed([w]) for w in ws])
        together = bb.embed(ws)
        pairs = bb.embed([ws[0], ws[2]])
        reversed_ = bb.embed(ws[::-1])[::-1]
        for batch in (together, pairs, reversed_):
            rows = alone if batch is not pairs else alone[[0, 2]]
            cos = np.sum(rows * batch, axis=1)
            assert cos.min() >= 0.99999, (name, path, cos)


def test_equal_length_groups() -> None:
    groups = equal_length_groups([5, 3, 5, 5, 3, 9], batch_size=2)
    assert groups == [[1, 4], [0, 2], [3], [5]]
    assert equal_length_groups([], 4) == []
