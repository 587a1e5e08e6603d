"""Robust pools: how tune's pool default behaves when the unlabeled pool is not a fair mix.

Run: OMP_NUM_THREADS=1 python bench/pool_robustness.py [--seed 0] [--protocols qspeech-wavlm,emodb,...]
Needs ../shared/data; audio is embedded once through the workspace cache (``--workspace``, default
/tmp/srpl-bench-ws). Same folds and test halves as ``srpl evaluate --folds 10 --unlabeled-share 0.5``
(``few_shot_folds`` + ``split_pool``); per fold the pool is then replaced by:

- ``half``: the fold's pool as drawn (about a third to a half enrolled people);
- ``strangers``: only its clips of people who are not enrolled;
- ``enrolled``: only its clips of enrolled people;
- ``20``: 20 clips drawn from it;
- ``20x``: 20 x the enrollment size, drawn with replacement when the pool is smaller;
- ``dup``: every clip three times.

Printed per protocol and pool: OSCR and its paired gain over cosine (no pool, today's calibration),
balanced open-set error at the calibrated threshold, and the worst fold against the no-pool default
(anchored-cosine) in OSCR and in balanced error, next to that default's fold-to-fold spread.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"
KINDS = ("half", "strangers", "enrolled", "20", "20x", "dup")


def load(protocol: str, workspace: Path):
    from srpl_cli.evaluation import load_audio_data, load_embedding_data
    from srpl_cli.workspace import Workspace

    ws = Workspace(workspace)
    if protocol == "qspeech-wavlm":
        d = load_embedding_data(DATA / "qspeech-wavlm", cs_my=False)
        return d, {"n_known": None, "known_pool": [0, 1, 2, 3, 4]}
    if protocol == "emodb":
        d, _ = load_audio_data(DATA / "emodb", "dvector", ws.ensure(), None, None, "?????N?.flac", None)
        return d, {"n_known": 5, "enroll_mask": d.enroll_mask, "never_known": d.never_known}
    others = DATA / "librispeech-mini" / "others"
    d, _ = load_audio_data(
        DATA / "librispeech-mini" / "speakers", "dvector", ws.ensure(), None, others, None, None
    )
    return d, {"n_known": 5, "never_known": d.never_known}


def pool_of(kind: str, fold, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    pool = fold.pool
    known = np.isin(y[pool], fold.known)  # labels used only to build the odd pools, never by the method
    if kind == "half":
        return pool
    if kind == "strangers":
        return pool[~known]
    if kind == "enrolled":
        return pool[known]
    if kind == "20":
        return rng.choice(pool, min(20, len(pool)), replace=False)
    if kind == "20x":
        n = 20 * len(fold.enroll)
        return rng.choice(pool, n, replace=n > len(pool))
    return np.concatenate([pool, pool, pool])


def main() -> None:
    from srpl_cli.calibration import fit_backend
    from srpl_cli.pipeline import DEFAULT_METHOD, DEFAULT_POOL_METHOD
    from srpl_cli.protocols import few_shot_folds, score_method, split_pool

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--protocols", default="qspeech-wavlm,emodb,librispeech-mini")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--workspace", type=Path, default=Path("/tmp/srpl-bench-ws"))
    a = ap.parse_args()
    for protocol in a.protocols.split(","):
        data, kw = load(protocol, a.workspace)
        X, y = data.X, data.y
        if data.X_train is not None:
            X, y = np.concatenate([data.X_train, X]), np.concatenate([data.y_train, y])
        folds = few_shot_folds(
            y,
            kw["n_known"],
            5,
            10,
            a.seed,
            kw.get("known_pool"),
            kw.get("enroll_mask"),
            kw.get("never_known"),
        )
        folds = split_pool(folds, 0.5, a.seed)
        base = {}
        for f in folds:
            Xe, ye = X[f.enroll], y[f.enroll]
            for m in ("cosine", DEFAULT_METHOD):
                model = fit_backend(m, Xe, ye, seed=a.seed + f.index)[0]
                r = score_method(model, X[f.test_known], y[f.test_known], X[f.test_unknown], False)
                base.setdefault(m, []).append(r.metrics)
        cos_oscr = np.array([m["oscr"] for m in base["cosine"]])
        ref_oscr = np.array([m["oscr"] for m in base[DEFAULT_METHOD]])
        ref_be = np.array([m["balanced_error"] for m in base[DEFAULT_METHOD]])
        print(
            f"\n{protocol}, fold seed {a.seed}: {DEFAULT_METHOD} (no pool) OSCR {100 * ref_oscr.mean():.1f} "
            f"± {100 * ref_oscr.std(ddof=1):.1f}, BE {100 * ref_be.mean():.1f} ± {100 * ref_be.std(ddof=1):.1f}"
        )
        print("| pool | OSCR | gain vs cosine (wins) | BE | worst fold vs no pool: OSCR / BE |")
        print("| --- | --- | --- | --- | --- |")
        for kind in a.kinds.split(","):
            rows = []
            for f in folds:
                pool = pool_of(kind, f, y, np.random.default_rng([a.seed, f.index]))
                model = fit_backend(
                    DEFAULT_POOL_METHOD, X[f.enroll], y[f.enroll], seed=a.seed + f.index, pool=X[pool]
                )[0]
                rows.append(
                    score_method(model, X[f.test_known], y[f.test_known], X[f.test_unknown], False).metrics
                )
            o = np.array([r["oscr"] for r in rows])
            be = np.array([r["balanced_error"] for r in rows])
            d = 100 * (o - cos_oscr)
            print(
                f"| {kind} | {100 * o.mean():.1f} ± {100 * o.std(ddof=1):.1f} | {d.mean():+.1f} ± {d.std(ddof=1):.1f} "
                f"({(d > 0).sum()}/10) | {100 * be.mean():.1f} ± {100 * be.std(ddof=1):.1f} | "
                f"{100 * (o - ref_oscr).min():+.1f} / {100 * (be - ref_be).max():+.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
