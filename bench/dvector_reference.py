"""How closely srpl's d-vector front end matches Resemblyzer's own pipeline on real LibriSpeech clips.

The reference is resemblyzer's ``preprocess_wav`` (librosa load, volume normalisation, webrtcvad
trimming) + ``VoiceEncoder.embed_utterance``; srpl is ``DVectorBackbone.embed(load_audio(clip))``.
Prints the cosine distribution (min / 5th percentile / median / mean) and the seconds each keeps after
trimming. Needs ``webrtcvad`` and ``librosa`` (measurement only; srpl never imports them). The
reference embeddings are cached in /tmp so before/after runs compare against the same numbers.

    .venv/bin/python bench/dvector_reference.py [--limit 200] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "librispeech-mini"
CACHE = Path("/tmp/srpl_dvector_reference.npz")


def reference(clips: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Resemblyzer's embeddings and kept seconds (cached by clip list)."""
    key = "\n".join(str(c) for c in clips)
    if CACHE.exists():
        z = np.load(CACHE, allow_pickle=False)
        if str(z["key"]) == key:
            return z["emb"], z["kept"]
    # webrtcvad.py imports pkg_resources (gone from current setuptools) only to read its own version
    sys.modules.setdefault(
        "pkg_resources", types.SimpleNamespace(get_distribution=lambda n: types.SimpleNamespace(version="0"))
    )
    from resemblyzer import VoiceEncoder, preprocess_wav

    enc = VoiceEncoder("cpu", verbose=False)
    embs, kept = [], []
    for c in clips:
        w = preprocess_wav(c)
        kept.append(len(w) / 16000)
        embs.append(enc.embed_utterance(w))
    emb, kept_a = np.stack(embs).astype(np.float32), np.asarray(kept)
    np.savez(CACHE, key=np.asarray(key), emb=emb, kept=kept_a)
    return emb, kept_a


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=200, help="clips (speakers/ first, then others/)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not DATA.exists():
        sys.exit(f"real data not found at {DATA}")
    clips = (sorted((DATA / "speakers").glob("*/*.flac")) + sorted((DATA / "others").glob("*/*.flac")))[
        : args.limit
    ]
    ref, ref_kept = reference(clips)

    from srpl_cli.audio import load_audio
    from srpl_cli.backbones.dvector import DVectorBackbone, preprocess

    bb = DVectorBackbone.load()
    waves = [load_audio(c) for c in clips]
    ours = bb.embed(waves)
    kept = np.asarray([len(preprocess(w)) / 16000 for w in waves])
    cos = np.sum(ours * ref, axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
    worst = int(np.argmin(cos))
    print(f"clips: {len(clips)}   backbone: {bb.identifier}")
    print(
        f"cosine to resemblyzer: min {cos.min():.4f}  p5 {np.percentile(cos, 5):.4f}  "
        f"median {np.median(cos):.4f}  mean {cos.mean():.4f}"
    )
    print(
        f"kept after trimming (s): srpl mean {kept.mean():.2f}, resemblyzer mean {ref_kept.mean():.2f}; "
        f"mean |diff| {np.abs(kept - ref_kept).mean():.2f}"
    )
    print(
        f"worst: {clips[worst].name} cos {cos[worst]:.4f} kept {kept[worst]:.2f} s vs {ref_kept[worst]:.2f} s"
    )


if __name__ == "__main__":
    main()
