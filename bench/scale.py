"""How tuning and identification scale with the number of enrolled speakers (issue #11, section 2).

`srpl tune` on cached embeddings is `fit_backend` (fit + cross-fitted calibration of the threshold);
`srpl identify` on cached embeddings is the backend's `top_k` plus one record per clip. Embeddings are
synthetic (speaker centres + within-speaker noise, 192-d like ERes2NetV2): the cost does not depend on
the values. Each row runs in its own process, so "peak MB" is that process's peak resident memory.
CPU seconds are printed first: with --threads 1 they are what the wall clock shows on an idle machine,
and they stay meaningful on a shared one.

    .venv/bin/python bench/scale.py [--tune 20,1000,10000] [--identify 100000] [--threads 1]

The anchored-cosine model for identify at 100,000 speakers is assembled from synthetic arrays (centres,
prototypes, random neighbour lists, zero offsets) rather than fitted: fitting 100,000 speakers is not
what is timed, and identify's work does not depend on the values.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DIM = 192
SHOTS = 5


def _embeddings(n_speakers: int, shots: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_speakers, DIM)).astype(np.float32)
    X = np.repeat(centres, shots, axis=0) + 0.7 * rng.standard_normal((n_speakers * shots, DIM)).astype(
        np.float32
    )
    return X, np.repeat(np.arange(n_speakers), shots)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_tune(method: str, n_speakers: int) -> dict:
    from srpl_cli.calibration import calibration_plan, fit_backend

    X, y = _embeddings(n_speakers, SHOTS)
    start, cpu = time.perf_counter(), time.process_time()
    model, info = fit_backend(method, X, y)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    rounds, groups = calibration_plan(n_speakers, len(X), 5, 10)
    return {
        "seconds": seconds,
        "cpu": cpu,
        "peak_mb": _peak_mb(),
        "rounds": rounds,
        "groups": groups,
        "genuine": info["heldout_genuine"],
        "impostor": info["heldout_impostor"],
    }


def _assembled_anchored(centres: np.ndarray):
    """A fitted-shape anchored-cosine model without the 100,000-speaker fit (see the module docstring)."""
    from srpl_cli.backends.anchored_cosine import MAX_ANCHOR_NEIGHBOURS, AnchoredCosineBackend

    K = len(centres)
    m = AnchoredCosineBackend()
    m.classes_ = np.arange(K)
    m.n_features_in_ = DIM
    m.centers_ = centres.astype(np.float64)
    m.prototypes_ = m.centers_.copy()
    m.basis_, m.gain_ = np.zeros((0, DIM)), np.zeros(0)
    rng = np.random.default_rng(1)
    m.neighbours_ = (np.arange(K)[:, None] + rng.integers(1, K, (K, MAX_ANCHOR_NEIGHBOURS))) % K
    m.anchors_ = None
    m.offsets_ = np.zeros(K)
    m.heldout_scores_ = np.full(K, np.nan)
    m.threshold_ = 0.5
    m._cache = {}
    return m


def run_identify(method: str, n_speakers: int, n_clips: int = 1000, top: int = 100) -> dict:
    from srpl_cli.backends.cosine import CosineBackend, l2_normalize

    rng = np.random.default_rng(0)
    centres = l2_normalize(rng.standard_normal((n_speakers, DIM)).astype(np.float32))
    if method == "cosine":
        model = CosineBackend().fit(centres, np.arange(n_speakers))
    else:
        model = _assembled_anchored(centres)
    names = [f"spk{i:06d}" for i in range(n_speakers)]
    E = centres[rng.integers(0, n_speakers, n_clips)] + 0.05 * rng.standard_normal((n_clips, DIM)).astype(
        np.float32
    )
    model.top_k(E[:10], top)  # warm-up (float32 copies, anchor norms)
    start, cpu = time.perf_counter(), time.process_time()
    idx, val = model.top_k(E, top)
    records = [
        {"speaker": names[c[0]], "scores": {names[i]: v for i, v in zip(c, r, strict=True)}}
        for c, r in zip(idx.tolist(), val.tolist(), strict=True)
    ]
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    out = {"seconds": seconds, "cpu": cpu, "peak_mb": _peak_mb(), "records": len(records)}
    if method == "cosine":  # the library alternative for exact inner-product search, same run
        import faiss

        index = faiss.IndexFlatIP(DIM)
        index.add(model.centers_)
        q = l2_normalize(E)
        start = time.process_time()
        _, fidx = index.search(q, top)
        out["faiss_cpu"] = time.process_time() - start
        out["faiss_same_best"] = float((fidx[:, 0] == idx[:, 0]).mean())
    return out


def _child(kind: str, method: str, n: int, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--one", kind, method, str(n), "--threads", str(threads)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if res.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tune", default="20,1000,10000", help="speaker counts for tune (comma-separated)")
    ap.add_argument("--identify", default="100000", help="speaker counts for identify")
    ap.add_argument("--methods", default="anchored-cosine,cosine")
    ap.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads (threadpoolctl)")
    ap.add_argument("--one", nargs=3, metavar=("KIND", "METHOD", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)
    if args.one:
        kind, method, n = args.one
        fn = run_tune if kind == "tune" else run_identify
        print(json.dumps(fn(method, int(n))))
        return
    methods = [m for m in args.methods.split(",") if m]
    print(f"threads={args.threads}, {DIM}-d synthetic embeddings, {SHOTS} clips per speaker")
    print(
        "\n| enrolled speakers | method | tune: fit + calibration, CPU (wall) | peak MB | rounds + groups | held-out scores |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for n in [int(v) for v in args.tune.split(",") if v]:
        for m in methods:
            r = _child("tune", m, n, args.threads)
            print(
                f"| {n:,} | {m} | {r['cpu']:.2f} s ({r['seconds']:.2f} s) | {r['peak_mb']:.0f} | {r['rounds']} + {r['groups']} "
                f"| {r['genuine']:,} genuine, {r['impostor']:,} impostor |",
                flush=True,
            )
    print(
        "\n| enrolled speakers | method | identify 1,000 clips (top 100 each), CPU (wall) | peak MB | faiss IndexFlatIP |"
    )
    print("| --- | --- | --- | --- | --- |")
    for n in [int(v) for v in args.identify.split(",") if v]:
        for m in methods:
            r = _child("identify", m, n, args.threads)
            faiss_col = (
                f"{r['faiss_cpu']:.2f} s CPU (same best: {r['faiss_same_best']:.1%})"
                if "faiss_cpu" in r
                else "-"
            )
            print(
                f"| {n:,} | {m} | {r['cpu']:.2f} s ({r['seconds']:.2f} s) | {r['peak_mb']:.0f} | {faiss_col} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
