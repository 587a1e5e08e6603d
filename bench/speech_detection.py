"""Clips refused for too little speech, and seconds of detected speech, on the real corpora.

For every clip of emodb (short acted sentences, soft and sad delivery included) and librispeech-mini,
runs ``srpl_cli.audio.validate`` with ``--min-speech`` (default 0.5 s) and counts refusals; prints
the distribution of detected speech seconds. Run it with ``SRPL_VAD=energy`` for the fallback detector,
or against an older checkout (``PYTHONPATH=<checkout>``) for the before figures.

    .venv/bin/python bench/speech_detection.py [--min-speech 0.5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--min-speech", type=float, default=0.5)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from srpl_cli.audio import load_audio, validate
    from srpl_cli.errors import AudioError

    try:
        from srpl_cli.vad import detector_name

        detector = detector_name()
    except ImportError:
        detector = "energy (before srpl_cli.vad)"
    print(f"detector: {detector}   --min-speech {args.min_speech:g}")
    for name, pattern in [("emodb", "emodb/*/*.flac"), ("librispeech-mini", "librispeech-mini/*/*/*.flac")]:
        clips = sorted(DATA.glob(pattern))
        if not clips:
            sys.exit(f"real data not found under {DATA}")
        speech, ratio, refused = [], [], []
        for c in clips:
            try:
                _, q = validate(c, args.min_speech)
                speech.append(q.speech_s)
                ratio.append(q.speech_ratio)
            except AudioError as exc:
                refused.append((c.name, len(load_audio(c)) / 16000, exc.reason))
        s = np.asarray(speech)
        print(
            f"{name}: {len(clips)} clips, refused {len(refused)} ({100 * len(refused) / len(clips):.2f} %); "
            f"speech s of the rest: min {s.min():.2f} median {np.median(s):.2f}; "
            f"speech share median {np.median(ratio):.2f}"
        )
        for clip, dur, reason in refused[:12]:
            print(f"   refused {clip} ({dur:.2f} s long): {reason}")


if __name__ == "__main__":
    main()
