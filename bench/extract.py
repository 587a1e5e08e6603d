"""Embedding extraction speed per backbone, in times real time (audio seconds per wall second).

dvector runs with its real weights. eres2netv2 and wavlm run their full-size architectures with random
weights (the hub is unreachable here; weights do not change the amount of computation).

    .venv/bin/python bench/extract.py [--seconds 60] [--threads 1] [--backbones dvector,eres2netv2,wavlm]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "librispeech-mini"


def real_audio(seconds: float) -> list[np.ndarray]:
    """Real LibriSpeech clips (one per speaker first, for variety) until ``seconds`` are collected."""
    from srpl_cli.audio import load_audio

    if not DATA.exists():
        sys.exit(f"real data not found at {DATA}")
    clips = sorted((DATA / "others").glob("*/*.flac")) + sorted((DATA / "speakers").glob("*/*.flac"))
    waves, total = [], 0.0
    for clip in clips:
        w = load_audio(clip)
        waves.append(w)
        total += len(w) / 16000
        if total >= seconds:
            break
    return waves


def make_backbone(name: str):
    if name == "dvector":
        from srpl_cli.backbones.dvector import DVectorBackbone

        return DVectorBackbone.load(device="cpu"), "real weights (resemblyzer)"
    if name == "eres2netv2":
        from srpl_cli.backbones.eres2netv2 import DEFAULT_CONFIG, ERes2NetV2Backbone, shipped_model_class

        model = shipped_model_class()(m_channels=64, **DEFAULT_CONFIG).eval()
        n = sum(p.numel() for p in model.parameters()) / 1e6
        return ERes2NetV2Backbone(model, "cpu", "eres2netv2:random", 192), f"random weights, {n:.1f} M params"
    if name == "wavlm":
        from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMForXVector

        from srpl_cli.backbones.wavlm import WavLMBackbone

        # microsoft/wavlm-base-plus-sv architecture (base: 12 layers x 768, x-vector head 512)
        config = WavLMConfig(use_weighted_layer_sum=True, xvector_output_dim=512)
        model = WavLMForXVector(config).eval()
        fe = Wav2Vec2FeatureExtractor(
            feature_size=1,
            sampling_rate=16000,
            padding_value=0.0,
            do_normalize=False,
            return_attention_mask=True,
        )
        n = sum(p.numel() for p in model.parameters()) / 1e6
        return WavLMBackbone(model, fe, "cpu", "wavlm:random", 512), f"random weights, {n:.1f} M params"
    raise SystemExit(f"unknown backbone {name}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="audio to embed per backbone")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (the machine is shared)")
    ap.add_argument("--batch", type=int, default=8, help="clips per embed() call")
    ap.add_argument("--backbones", default="dvector,eres2netv2,wavlm")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    waves = real_audio(args.seconds)
    audio_s = sum(len(w) for w in waves) / 16000
    print(f"{len(waves)} real clips, {audio_s:.1f} s of audio, torch threads={args.threads}, CPU only")
    print(f"{'backbone':<11} {'x real time':>11} {'wall s':>7} {'load s':>7}  notes")
    for name in args.backbones.split(","):
        t0 = time.perf_counter()
        bb, note = make_backbone(name)
        load_s = time.perf_counter() - t0
        bb.embed([waves[0][:16000]])  # warm-up (allocator, kernels)
        t0 = time.perf_counter()
        for i in range(0, len(waves), args.batch):
            out = bb.embed(waves[i : i + args.batch])
            assert np.isfinite(out).all()
        wall = time.perf_counter() - t0
        print(f"{name:<11} {audio_s / wall:>10.1f}x {wall:>7.2f} {load_s:>7.2f}  {note}")


if __name__ == "__main__":
    main()
