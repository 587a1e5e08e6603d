"""Embedding throughput of the Ray executor (`--engine ray`) with 1 and 2 workers, against the local one.

Real LibriSpeech clips from ../shared/data, the d-vector backbone (real weights), no cache, all in one
run. A local Ray instance is started with ``--cpus`` CPUs; each worker is one actor holding one backbone
with one torch thread. Times include Ray's start of the actors (the first batch), not of Ray itself.

    .venv/bin/python bench/extract_ray.py [--seconds 300] [--cpus 2] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "librispeech-mini"


def clips_for(seconds: float) -> tuple[list[Path], float]:
    import soundfile as sf

    if not DATA.exists():
        sys.exit(f"real data not found at {DATA}")
    out, total = [], 0.0
    for clip in sorted((DATA / "others").glob("*/*.flac")) + sorted((DATA / "speakers").glob("*/*.flac")):
        out.append(clip)
        total += sf.info(str(clip)).duration
        if total >= seconds:
            break
    return out, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=300.0, help="audio to embed per run")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    ap.add_argument("--workers", default="1,2")
    args = ap.parse_args()
    import numpy as np
    import torch

    torch.set_num_threads(1)
    import ray

    from srpl_cli.backbones import get_backbone
    from srpl_cli.embeddings import extract_embeddings
    from srpl_cli.executors import RayExecutor

    clips, audio_s = clips_for(args.seconds)
    bb = get_backbone("dvector", device="cpu")
    print(f"{len(clips)} clips, {audio_s:.0f} s of audio, dvector, batches of 16 clips\n")
    print("| engine | workers | wall s | x real time | same embeddings as local |")
    print("| --- | --- | --- | --- | --- |")
    start = time.perf_counter()
    local = extract_embeddings(clips, bb)
    wall = time.perf_counter() - start
    print(f"| local | 1 process, 1 thread | {wall:.1f} | {audio_s / wall:.0f}x | - |", flush=True)
    ray.init(
        num_cpus=args.cpus, object_store_memory=150 * 1024**2, include_dashboard=False, log_to_driver=False
    )
    try:
        for n in [int(w) for w in args.workers.split(",") if w]:
            marks: list[tuple[float, int]] = []
            start = time.perf_counter()
            res = extract_embeddings(
                clips,
                bb,
                executor=RayExecutor(workers=n),
                progress=lambda d, t, marks=marks: marks.append((time.perf_counter(), d)),
            )
            wall = time.perf_counter() - start
            same = np.array_equal(res.embeddings, local.embeddings)
            # after the first batch is back (actors started): clips per second -> times real time
            (t0, d0), (t1, d1) = marks[0], marks[-1]
            steady = (d1 - d0) / len(clips) * audio_s / (t1 - t0) if t1 > t0 else float("nan")
            print(
                f"| ray | {n} actor(s) | {wall:.1f} (first batch {t0 - start:.1f}) | {audio_s / wall:.0f}x "
                f"({steady:.0f}x after the first batch) | {same} |",
                flush=True,
            )
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
