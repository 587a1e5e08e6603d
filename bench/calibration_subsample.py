"""Does the calibration subsampling rule move the threshold? (issue #11, section 2)

At thousands of speakers `calibration_plan` runs fewer cross-fitting rounds and left-out speaker groups
(one of each at 10,000 speakers x 5 clips). This compares, fold by fold, the threshold from every round
and group with the one from the subsampled plan, against the fold-to-fold spread of the full threshold:

- real structure: the authors' real 512-d WavLM embeddings (qspeech-wavlm/emb_test, 15 speakers), 5 random
  clips per speaker per fold; the rule is applied with ``SCORES_PER_SIDE`` scaled down so that it
  subsamples at 15 speakers as it does at 10,000 (about 1 round and a third of the groups);
- the real rule at the size where it starts to act: 2,000 synthetic speakers x 5 clips (3 rounds, 5 of 10
  groups), cosine (anchored cosine at that size takes minutes per fold on this machine).

    .venv/bin/python bench/calibration_subsample.py [--folds 20]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
QSPEECH = REPO.parent / "shared" / "data" / "qspeech-wavlm"


def thresholds(method: str, X: np.ndarray, y: np.ndarray, scores_per_side: int | None) -> tuple[float, float]:
    """(full threshold, subsampled threshold) for one enrollment."""
    import srpl_cli.calibration as cal

    full_plan = cal.calibration_plan
    cal.calibration_plan = lambda n, m, rounds, groups: (rounds, min(groups, n))
    try:
        _, full = cal.fit_backend(method, X, y)
    finally:
        cal.calibration_plan = full_plan
    keep = cal.SCORES_PER_SIDE
    if scores_per_side is not None:
        cal.SCORES_PER_SIDE = scores_per_side
    try:
        _, sub = cal.fit_backend(method, X, y)
    finally:
        cal.SCORES_PER_SIDE = keep
    return full["threshold"], sub["threshold"]


def report(name: str, pairs: list[tuple[float, float]]) -> None:
    full, sub = np.array(pairs).T
    diff = np.abs(sub - full)
    print(
        f"| {name} | {len(pairs)} | {full.mean():.4f} | {full.std(ddof=1):.4f} | {diff.mean():.4f} | "
        f"{diff.max():.4f} | {(diff < full.std(ddof=1)).mean():.0%} |",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folds", type=int, default=20)
    ap.add_argument("--synthetic-speakers", type=int, default=2000)
    ap.add_argument("--synthetic-folds", type=int, default=5)
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    from srpl_cli.calibration import calibration_plan
    from srpl_cli.datasets import read_embedding_dataset

    threadpool_limits(1)
    print("| data | folds | full threshold: mean | fold-to-fold std | subsampled: mean abs shift | max shift "
          "| folds shifted by less than the std |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    if not QSPEECH.exists():
        sys.exit(f"real data not found at {QSPEECH}")
    test = read_embedding_dataset(QSPEECH)["emb_test"]
    X_all, y_all = test.X, np.asarray(test.y)
    speakers = np.unique(y_all)
    K = len(speakers)
    # scaled target: at K speakers, the share of rounds and groups the rule keeps at 10,000
    target = 15
    import srpl_cli.calibration as cal

    cal.SCORES_PER_SIDE, default = target, cal.SCORES_PER_SIDE
    plan = calibration_plan(K, 5 * K, 5, 10)
    cal.SCORES_PER_SIDE = default
    print(f"<!-- real: {K} speakers, subsampled plan {plan} (SCORES_PER_SIDE={target}) -->")
    for method in ("anchored-cosine", "cosine"):
        pairs = []
        for fold in range(args.folds):
            rng = np.random.default_rng(1000 + fold)
            rows = np.concatenate(
                [rng.choice(np.flatnonzero(y_all == s), 5, replace=False) for s in speakers]
            )
            pairs.append(thresholds(method, X_all[rows], y_all[rows], target))
        report(f"qspeech-wavlm real, {K} speakers, {method}", pairs)
    Ks = args.synthetic_speakers
    pairs = []
    for fold in range(args.synthetic_folds):
        rng = np.random.default_rng(fold)
        centres = rng.standard_normal((Ks, 192))
        X = (np.repeat(centres, 5, 0) + 0.7 * rng.standard_normal((Ks * 5, 192))).astype(np.float32)
        pairs.append(thresholds("cosine", X, np.repeat(np.arange(Ks), 5), None))
    report(f"synthetic, {Ks:,} speakers, cosine, plan {calibration_plan(Ks, 5 * Ks, 5, 10)}", pairs)


if __name__ == "__main__":
    main()
