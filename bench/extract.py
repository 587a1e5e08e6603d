"""Embedding extraction speed per backbone and inference path, in times real time (audio s per wall s).

dvector runs with its real weights. eres2netv2 and wavlm run their full-size architectures with random
weights (the hub is unreachable here; weights do not change the amount of computation). Every path of a
backbone runs in the same process, interleaved batch by batch (eager, fp32, bf16, eager, fp32, ...), so
a shared, noisy machine slows them alike and the speed-up column is a fair ratio; ``min cos`` is the
lowest cosine of a path's embedding to the eager fp32 reference over the real clips.

    .venv/bin/python bench/extract.py [--seconds 60] [--threads 2] [--backbones dvector,eres2netv2,wavlm]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "librispeech-mini"
#: the fastest published CPU speaker models, in x real time (see docs/speed.md)
TARGETS = {"eres2netv2": 30.0, "wavlm": 15.0}


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
    """The eager (reference-path) backbone and a note on its weights."""
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
    from srpl_cli.backbones import _cpu

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="audio to embed per backbone")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (the machine is shared)")
    ap.add_argument("--batch", type=int, default=1, help="clips per embed() call (the unit of interleaving)")
    ap.add_argument("--rounds", type=int, default=1, help="passes over the clips (more: steadier ratios)")
    ap.add_argument("--backbones", default="dvector,eres2netv2,wavlm")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    waves = real_audio(args.seconds)
    audio_s = sum(len(w) for w in waves) / 16000
    default = _cpu.resolve_path("cpu", "auto")
    bf16 = _cpu.native_bf16()
    print(f"{len(waves)} real clips, {audio_s:.1f} s of audio, torch threads={args.threads}, CPU only")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"native bf16: {bf16}; default CPU path: {default}; load average at start {load:.1f}")
    print(
        f"{'backbone':<11} {'path':<10} {'x real time':>11} {'speed-up':>8} {'min cos':>10} {'wall s':>7}  notes"
    )
    for name in args.backbones.split(","):
        ref, note = make_backbone(name)
        paths = {"eager": ref}
        if hasattr(ref, "with_path"):
            for p in ("fp32", "bf16") if bf16 else ("fp32",):
                paths[p] = ref.with_path(p)
        for bb in paths.values():
            bb.embed([waves[0][:16000]])  # warm-up (allocator, kernels)
        wall = dict.fromkeys(paths, 0.0)
        embs: dict[str, list[np.ndarray]] = {p: [] for p in paths}
        for r in range(args.rounds):
            for i in range(0, len(waves), args.batch):
                for p, bb in paths.items():
                    t0 = time.perf_counter()
                    out = bb.embed(waves[i : i + args.batch])
                    wall[p] += time.perf_counter() - t0
                    assert np.isfinite(out).all()
                    if r == 0:
                        embs[p].append(out)
        wall = {p: w / args.rounds for p, w in wall.items()}
        reference = np.vstack(embs["eager"])
        for p in paths:
            cos = float(np.min(np.sum(reference * np.vstack(embs[p]), axis=1)))
            xrt = audio_s / wall[p]
            tags = [note] if p == "eager" else []
            if p == default or len(paths) == 1:
                tags.append("default CPU path")
                if name in TARGETS:
                    t = TARGETS[name]
                    gap = f"{t / xrt:.1f}x short of" if xrt < t else f"{xrt / t:.1f}x beyond"
                    tags.append(f"{gap} the {t:g}x target")
            print(
                f"{name:<11} {p:<10} {xrt:>10.1f}x {wall['eager'] / wall[p]:>7.2f}x {cos:>10.6f} "
                f"{wall[p]:>7.2f}  {', '.join(tags)}"
            )
    if hasattr(os, "getloadavg"):
        print(
            f"load average at end {os.getloadavg()[0]:.1f} (ratios are fair only if it stayed near constant)"
        )


if __name__ == "__main__":
    main()
