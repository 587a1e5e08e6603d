"""Time srpl_cli.metrics.oscr at scale and against straightforward O(n^2) implementations.

Run: .venv/bin/python bench/oscr.py [--n 1000000] [--n-small 20000] [--repeat 3]

1. ``oscr`` (correct and legacy) on N known + N unknown samples with K=10 (float32 logits, like real
   scores), best of ``--repeat`` runs; target: under 1 s each for N = 1,000,000.
2. At ``--n-small`` samples in total (half known, half unknown), the speed ratio against
   (a) the definition evaluated at every distinct threshold (loop over thresholds), for ``oscr``;
   (b) the ARPL/SpeakerRPL ``compute_oscr`` loops (a suffix sum per position), for ``legacy=True``;
   and a check that the values agree.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from srpl_cli.metrics import oscr


def _make(n_known: int, n_unknown: int, n_classes: int, seed: int, levels: int | None = None):
    rng = np.random.default_rng(seed)
    known = rng.normal(size=(n_known, n_classes)).astype(np.float32)
    labels = rng.integers(0, n_classes, size=n_known)
    known[np.arange(n_known), labels] += 1.5  # a classifier that is right most of the time
    unknown = rng.normal(size=(n_unknown, n_classes)).astype(np.float32)
    if levels is not None:  # coarse scores so that known and unknown scores tie
        known, unknown = np.round(known * levels) / levels, np.round(unknown * levels) / levels
    return known, labels, unknown


def _best_of(repeat: int, fn, *args, **kwargs):
    times, value = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        value = fn(*args, **kwargs)
        times.append(time.perf_counter() - t0)
    return min(times), value


def naive_oscr(known, labels, unknown) -> float:
    """The definition, recomputed from scratch at every distinct threshold: O(n^2)."""
    ks, ok, us = known.max(1), known.argmax(1) == labels, unknown.max(1)
    fpr, ccr = [0.0], [0.0]
    for t in np.unique(np.concatenate([ks, us]))[::-1]:
        fpr.append(float(np.mean(us >= t)))
        ccr.append(float(np.mean(ok & (ks >= t))))
    fpr_a, ccr_a = np.array(fpr), np.array(ccr)
    return float(np.sum(np.diff(fpr_a) * (ccr_a[1:] + ccr_a[:-1]) / 2))


def reference_oscr(known, labels, unknown) -> float:
    """ARPL core/evaluation.py ``compute_oscr`` as published (loops kept): O(n^2)."""
    x1, x2 = np.max(known, axis=1), np.max(unknown, axis=1)
    pred = np.argmax(known, axis=1)
    m_x1 = np.zeros(len(x1))
    m_x1[pred == labels] = 1
    k_target = np.concatenate((m_x1, np.zeros(len(x2))), axis=0)
    u_target = np.concatenate((np.zeros(len(x1)), np.ones(len(x2))), axis=0)
    predict = np.concatenate((x1, x2), axis=0)
    n = len(predict)
    ccr, fpr = [0.0] * (n + 2), [0.0] * (n + 2)
    idx = predict.argsort()
    s_k, s_u = k_target[idx], u_target[idx]
    for k in range(n - 1):
        ccr[k] = float(s_k[k + 1 :].sum()) / float(len(x1))
        fpr[k] = float(s_u[k:].sum()) / float(len(x2))
    ccr[n], fpr[n], ccr[n + 1], fpr[n + 1] = 0.0, 0.0, 1.0, 1.0
    roc = sorted(zip(fpr, ccr, strict=True), reverse=True)
    area = 0.0
    for j in range(n + 1):
        area += (roc[j][0] - roc[j + 1][0]) * (roc[j][1] + roc[j + 1][1]) / 2.0
    return area


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="known and unknown samples each")
    parser.add_argument("--n-small", type=int, default=20_000, help="total samples for the O(n^2) runs")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    print(f"numpy {np.__version__}, python {platform.python_version()}, {platform.machine()}")
    known, labels, unknown = _make(args.n, args.n, args.classes, seed=0)
    print(f"large: {args.n:,} known + {args.n:,} unknown, K={args.classes}, float32, best of {args.repeat}")
    for legacy in (False, True):
        t, value = _best_of(args.repeat, oscr, known, labels, unknown, legacy=legacy)
        name = "legacy " if legacy else "correct"
        verdict = "ok" if t < 1.0 else "SLOWER THAN 1 s TARGET"
        print(f"  oscr {name}: {t:7.3f} s  (value {value:.6f})  [{verdict}]")
    del known, labels, unknown

    half = args.n_small // 2
    print(f"small: {half:,} known + {args.n_small - half:,} unknown, K={args.classes}")
    for label, levels in (("distinct scores", None), ("coarse scores with ties", 20)):
        known, labels, unknown = _make(half, args.n_small - half, args.classes, seed=1, levels=levels)
        n_thr = np.unique(np.concatenate([known.max(1), unknown.max(1)])).size
        print(f"  {label} ({n_thr:,} distinct thresholds), fast: best of {args.repeat}, slow: one run")
        cases = [
            ("correct", False, naive_oscr, "loop over thresholds"),
            ("legacy ", True, reference_oscr, "ARPL loops          "),
        ]
        for name, legacy, slow, slow_name in cases:
            t_fast, v_fast = _best_of(args.repeat, oscr, known, labels, unknown, legacy=legacy)
            t_slow, v_slow = _best_of(1, slow, known, labels, unknown)
            agree = abs(v_fast - v_slow) < 1e-9
            print(
                f"    oscr {name}: {t_fast * 1e3:7.2f} ms vs {slow_name} {t_slow * 1e3:7.1f} ms "
                f"= {t_slow / t_fast:6.0f}x; values {v_fast:.9f} / {v_slow:.9f} "
                f"{'agree' if agree else 'DISAGREE'}"
            )
            if not agree:
                raise SystemExit(1)


if __name__ == "__main__":
    main()
