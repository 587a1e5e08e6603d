"""How tuning and identification scale with the number of enrolled speakers (issue #11, section 2).

`srpl tune` on cached embeddings is `fit_backend` (fit + cross-fitted calibration of the threshold);
`srpl identify` on cached embeddings is the backend's `top_k` plus one record per clip. Embeddings are
synthetic (speaker centres + within-speaker noise, 192-d like ERes2NetV2): the cost does not depend on
the values. Each row runs in its own process, so "peak MB" is that process's peak resident memory.
CPU seconds are printed first: with --threads 1 they are what the wall clock shows on an idle machine,
and they stay meaningful on a shared one.

    .venv/bin/python bench/scale.py [--tune 20,1000,10000] [--identify 100000] [--threads 1] [--crossover]

Identify runs twice per method, each in its own process: the default path (exact faiss search from
`FAISS_MIN_ROWS` speakers when faiss is installed, srpl_cli/backends/inner_product_search.py) and the
numpy path (faiss switched off), and the table compares their answers: same best speaker, largest score
difference. The 1,000 clips are 800 clips of enrolled speakers (cosine about 0.8 to their centre) and
200 strangers (random directions). The anchored-cosine model for identify at 100,000 speakers is
assembled from synthetic arrays (centres, prototypes, random neighbour lists, offsets drawn with three
times the spread of a fitted 2,000-speaker model's, so that the bound in `_searched_open_set_max` is
exercised) rather than fitted: fitting 100,000 speakers is not what is timed, and identify's work does
not depend on the values. `--crossover` times the top-100 search alone, numpy against faiss, for a range
of speaker and clip counts: where `FAISS_MIN_ROWS` and `FAISS_MIN_QUERIES` come from.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from srpl_cli.backends.inner_product_search import faiss_available

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
    m.offsets_ = rng.normal(0.0, 0.02, K)  # a fitted 2,000-speaker model's spread is 0.0065
    m.heldout_scores_ = np.full(K, np.nan)
    m.threshold_ = 0.5
    m._cache = {}
    return m


def _identify_clips(centres: np.ndarray, n_clips: int, rng: np.random.Generator) -> np.ndarray:
    known = n_clips * 4 // 5
    E = centres[rng.integers(0, len(centres), known)] + 0.05 * rng.standard_normal((known, DIM))
    return np.concatenate([E, rng.standard_normal((n_clips - known, DIM))]).astype(np.float32)


def run_identify(
    method: str, n_speakers: int, path: str, save: str, n_clips: int = 1000, top: int = 100
) -> dict:
    from srpl_cli.backends import inner_product_search
    from srpl_cli.backends.cosine import CosineBackend, l2_normalize

    if path == "numpy":
        inner_product_search.FAISS_MIN_ROWS = 1 << 62
    rng = np.random.default_rng(0)
    centres = l2_normalize(rng.standard_normal((n_speakers, DIM)).astype(np.float32))
    if method == "cosine":
        model = CosineBackend().fit(centres, np.arange(n_speakers))
    else:
        model = _assembled_anchored(centres)
    names = [f"spk{i:06d}" for i in range(n_speakers)]
    E = _identify_clips(centres, n_clips, rng)
    model.top_k(E[:50], top)  # warm-up (float32 copies, faiss index, anchor norms)
    start, cpu = time.perf_counter(), time.process_time()
    idx, val = model.top_k(E, top)
    records = [
        {"speaker": names[c[0]], "scores": {names[i]: v for i, v in zip(c, r, strict=True)}}
        for c, r in zip(idx.tolist(), val.tolist(), strict=True)
    ]
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    np.save(save + ".idx.npy", idx)
    np.save(save + ".val.npy", val)
    search = model._search if method == "cosine" else model._cached("centers")
    return {
        "seconds": seconds,
        "cpu": cpu,
        "peak_mb": _peak_mb(),
        "records": len(records),
        "faiss": search.fast_for(n_clips),
        "full_rows": _rows_scored_in_full(model, E) if method != "cosine" and path == "faiss" else None,
    }


def _rows_scored_in_full(model, E: np.ndarray) -> int:
    """How many clips anchored cosine's bound sends to the full scan (the same test, recomputed here)."""
    from srpl_cli.backends import anchored_cosine as ac

    P, off = model.prototypes_.astype(np.float32), model.offsets_.astype(np.float32)
    boosted, off_rest = model._cached("boosted")
    Zt = ac._transform(ac._normalise(E.astype(np.float64)), model.basis_, model.gain_).astype(np.float32)
    n = 0
    for s in range(0, len(Zt), 50):
        S = Zt[s : s + 50] @ P.T
        last = -np.partition(-S, ac.OPEN_SET_CANDIDATES - 1, axis=1)[:, ac.OPEN_SET_CANDIDATES - 1]
        best = np.where(S >= last[:, None], S - off, -np.inf).max(axis=1)
        best = np.maximum(best, (S[:, boosted] - off[boosted]).max(axis=1))
        n += int((best < last - off_rest).sum())
    return n


def run_crossover(sizes: list[int], queries: list[int], top: int = 100) -> list[dict]:
    from srpl_cli.backends import inner_product_search
    from srpl_cli.backends.cosine import l2_normalize
    from srpl_cli.backends.inner_product_search import InnerProductSearch

    default_min = inner_product_search.FAISS_MIN_QUERIES
    rng = np.random.default_rng(0)
    rows = []
    for K in sizes:
        B = l2_normalize(rng.standard_normal((K, DIM)).astype(np.float32))
        paths = {
            "numpy": InnerProductSearch(B, use_faiss=False),
            "faiss": InnerProductSearch(B, use_faiss=True),
        }
        for n in queries:
            Q = _identify_clips(B, n, rng)
            reps = max(1, 20_000_000 // (n * K))
            row = {"speakers": K, "clips": n}
            for name, search in paths.items():
                # faiss whatever the query count (not the FAISS_MIN_QUERIES rule), to show where it loses
                inner_product_search.FAISS_MIN_QUERIES = 1 if name == "faiss" else default_min
                search.search(Q[:1], top)  # warm-up
                best = float("inf")
                for _ in range(2):  # best of two: the machine is shared
                    cpu = time.process_time()
                    for _ in range(reps):
                        search.search(Q, top)
                    best = min(best, (time.process_time() - cpu) / reps)
                row[name] = best
            rows.append(row)
    return rows


def _child(threads: int, *args: object) -> dict:
    cmd = [sys.executable, __file__, "--threads", str(threads), "--one", *map(str, args)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if res.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _identify_rows(sizes: list[int], methods: list[str], threads: int) -> None:
    print(
        "\n| enrolled speakers | method | identify 1,000 clips (top 100 each): default path, CPU (wall) "
        "| numpy path, CPU (wall) | numpy / default | same best speaker | largest score difference "
        "| peak MB (default / numpy) | clips scored in full |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            for m in methods:
                r = {p: _child(threads, "identify", m, n, p, f"{tmp}/{p}") for p in ("faiss", "numpy")}
                got = {p: (np.load(f"{tmp}/{p}.idx.npy"), np.load(f"{tmp}/{p}.val.npy")) for p in r}
                same = float((got["faiss"][0][:, 0] == got["numpy"][0][:, 0]).mean())
                diff = float(np.abs(got["faiss"][1] - got["numpy"][1]).max())
                f, q = r["faiss"], r["numpy"]
                label = "faiss" if f["faiss"] else "numpy (faiss not used)"
                full = "-" if f["full_rows"] is None else f"{f['full_rows']} of {f['records']}"
                print(
                    f"| {n:,} | {m} | {label}: {f['cpu']:.2f} s ({f['seconds']:.2f} s) "
                    f"| {q['cpu']:.2f} s ({q['seconds']:.2f} s) | {q['cpu'] / f['cpu']:.2f}x | {same:.1%} "
                    f"| {diff:.1e} | {f['peak_mb']:.0f} / {q['peak_mb']:.0f} | {full} |",
                    flush=True,
                )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tune", default="20,1000,10000", help="speaker counts for tune (comma-separated)")
    ap.add_argument("--identify", default="100000", help="speaker counts for identify")
    ap.add_argument("--methods", default="anchored-cosine,cosine")
    ap.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads (threadpoolctl)")
    ap.add_argument("--crossover", action="store_true", help="also time the top-100 search, numpy vs faiss")
    ap.add_argument("--one", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    if faiss_available():  # load its OpenMP runtime now, so that the thread limit reaches it
        import faiss  # noqa: F401
    threadpool_limits(args.threads)
    if args.one:
        kind, method, n, *rest = args.one
        if kind == "tune":
            print(json.dumps(run_tune(method, int(n))))
        else:
            print(json.dumps(run_identify(method, int(n), *rest)))
        return
    methods = [m for m in args.methods.split(",") if m]
    print(f"threads={args.threads}, {DIM}-d synthetic embeddings, {SHOTS} clips per speaker")
    tune = [int(v) for v in args.tune.split(",") if v]
    if tune:
        print(
            "\n| enrolled speakers | method | tune: fit + calibration, CPU (wall) | peak MB | rounds + groups "
            "| held-out scores |"
        )
        print("| --- | --- | --- | --- | --- | --- |")
    for n in tune:
        for m in methods:
            r = _child(args.threads, "tune", m, n)
            print(
                f"| {n:,} | {m} | {r['cpu']:.2f} s ({r['seconds']:.2f} s) | {r['peak_mb']:.0f} "
                f"| {r['rounds']} + {r['groups']} | {r['genuine']:,} genuine, {r['impostor']:,} impostor |",
                flush=True,
            )
    _identify_rows([int(v) for v in args.identify.split(",") if v], methods, args.threads)
    if args.crossover:
        print(
            "\n| enrolled speakers | clips | top-100 search: numpy, CPU ms | faiss, CPU ms | numpy / faiss |"
        )
        print("| --- | --- | --- | --- | --- |")
        for r in run_crossover([1_000, 3_000, 10_000, 30_000, 100_000], [1, 20, 100, 1_000]):
            print(
                f"| {r['speakers']:,} | {r['clips']:,} | {r['numpy'] * 1e3:.2f} | {r['faiss'] * 1e3:.2f} "
                f"| {r['numpy'] / r['faiss']:.2f}x |",
                flush=True,
            )


if __name__ == "__main__":
    main()
