"""The fast CPU paths: same numbers as the eager reference on real speech, honest identifiers, clean
fallback on a CPU without native bfloat16."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from srpl_cli.audio import load_audio
from srpl_cli.backbones import _cpu
from srpl_cli.backbones.base import Backbone
from srpl_cli.errors import UsageError
from tests.conftest import shared_path


def speech() -> list[np.ndarray]:
    root = shared_path("librispeech-mini", "speakers")
    clips = sorted(root.glob("*/*.flac"))[:9:3]
    return [load_audio(c)[: 4 * 16000] for c in clips]  # three speakers, 4 s each (test speed)


def tiny(name: str, tmp_path: Path) -> Backbone:
    if name == "eres2netv2":
        from srpl_cli.backbones.eres2netv2 import ERes2NetV2Backbone
        from tests.backbones.test_eres2netv2 import write_tiny_model

        write_tiny_model(tmp_path / "eres")
        return ERes2NetV2Backbone.load(tmp_path / "eres", device="cpu", path="eager")
    from srpl_cli.backbones.wavlm import WavLMBackbone
    from tests.backbones.test_wavlm import tiny_model_dir

    return WavLMBackbone.load(tiny_model_dir(tmp_path / "wavlm"), device="cpu", path="eager")


@pytest.mark.parametrize("name", ["eres2netv2", "wavlm"])
def test_fast_paths_match_reference_on_real_speech(name: str, tmp_path: Path) -> None:
    waves = speech()
    ref = tiny(name, tmp_path)
    expected = ref.embed(waves)
    fp32 = ref.with_path("fp32")  # type: ignore[attr-defined]
    assert fp32.identifier == ref.identifier  # same numbers: shares the cache
    assert np.sum(expected * fp32.embed(waves), axis=1).min() >= 0.99999
    if not _cpu.native_bf16():
        pytest.skip("this CPU has no native bfloat16: the bf16 path is never chosen here")
    bf16 = ref.with_path("bf16")  # type: ignore[attr-defined]
    assert bf16.identifier == ref.identifier + ":bf16"  # other numbers: its own cache key
    assert np.sum(expected * bf16.embed(waves), axis=1).min() >= 0.9999


def test_default_path_follows_the_cpu(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(_cpu.ENV, raising=False)
    assert _cpu.resolve_path("cuda") == "eager"  # the GPU runs the reference
    assert _cpu.resolve_path("cuda:1", "bf16") == "eager"
    assert _cpu.resolve_path("cpu", "eager") == "eager"
    assert _cpu.resolve_path("cpu", "fp32") == "fp32"
    monkeypatch.setattr(_cpu, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert not _cpu.native_bf16()
    assert _cpu.resolve_path("cpu") == "fp32"  # never the emulated (slow) bf16
    with caplog.at_level(logging.WARNING, logger="srpl_cli"):
        assert _cpu.resolve_path("cpu", "bf16") == "fp32"
    assert "no native bfloat16" in caplog.text
    monkeypatch.setattr(_cpu, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    import torch

    if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        assert _cpu.resolve_path("cpu") == "bf16"
    monkeypatch.setenv(_cpu.ENV, "fp32")
    assert _cpu.resolve_path("cpu") == "fp32"
    monkeypatch.setenv(_cpu.ENV, "int4")
    with pytest.raises(UsageError, match="SRPL_CPU_PATH"):
        _cpu.resolve_path("cpu")


def test_load_honours_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from srpl_cli.backbones.eres2netv2 import ERes2NetV2Backbone
    from tests.backbones.test_eres2netv2 import write_tiny_model

    write_tiny_model(tmp_path)
    monkeypatch.setenv(_cpu.ENV, "fp32")
    bb = ERes2NetV2Backbone.load(tmp_path, device="cpu")
    assert bb.path == "fp32" and not bb.identifier.endswith(":bf16")
    monkeypatch.setenv(_cpu.ENV, "eager")
    assert ERes2NetV2Backbone.load(tmp_path, device="cpu").path == "eager"
