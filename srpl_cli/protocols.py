"""Few-shot open-set evaluation protocols: random paired splits and paired method comparisons.

A single split proves nothing (seed noise alone moves OSCR by 2-3 points), so every accuracy claim is
made over F random folds: each fold picks K known speakers and N enrollment clips of each; the rest of
their clips are known test samples and every clip of every other speaker is an unknown test sample.
Every method sees the same folds, so differences are paired.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from srpl_cli.errors import DataError, UsageError


@dataclass(frozen=True)
class Fold:
    """Index arrays into one data set (scikit-learn splitter style)."""

    index: int
    known: np.ndarray  # speaker ids known in this fold
    enroll: np.ndarray  # indices of enrollment clips
    test_known: np.ndarray  # indices of the known speakers' other clips
    test_unknown: np.ndarray  # indices of every clip of a speaker who is not known
    #: indices of unlabeled pool clips (test clips moved out of the test set), or None
    pool: np.ndarray | None = None


def split_pool(folds: Sequence[Fold], share: float, seed: int = 0) -> list[Fold]:
    """Move a random ``share`` of each fold's test clips (known and unknown alike) into an unlabeled pool.

    What a deployment hears before it is asked: pool-aware methods learn from the pool (never its
    labels), and every method is scored on the same remaining test clips. The draw depends only on
    ``seed`` and the fold, so it is paired across methods.
    """
    if not 0.0 < share < 1.0:
        raise UsageError("--unlabeled-share must be between 0 and 1 (exclusive)")
    out = []
    for f in folds:
        rng = np.random.default_rng([seed, f.index, 7919])
        test = np.concatenate([f.test_known, f.test_unknown])
        moved = rng.random(len(test)) < share
        known_moved, unknown_moved = moved[: len(f.test_known)], moved[len(f.test_known) :]
        if (~known_moved).sum() == 0 or (~unknown_moved).sum() == 0:
            raise DataError("too few test clips to split off an unlabeled pool; lower --unlabeled-share")
        out.append(
            Fold(
                f.index,
                f.known,
                f.enroll,
                f.test_known[~known_moved],
                f.test_unknown[~unknown_moved],
                np.sort(test[moved]),
            )
        )
    return out


def few_shot_folds(
    y: Sequence[Any],
    n_known: int | None,
    n_shots: int,
    n_folds: int = 10,
    seed: int = 0,
    known_pool: Sequence[Any] | None = None,
    enroll_mask: np.ndarray | None = None,
    never_known: np.ndarray | None = None,
) -> list[Fold]:
    """Draw ``n_folds`` random few-shot splits.

    y : (n,) speaker label of every clip.
    n_known : speakers known per fold (None: every speaker of ``known_pool``).
    known_pool : speakers that may be known (default: all that have enough clips).
    enroll_mask : (n,) clips allowed as enrollment (e.g. neutral speech only); all by default.
    never_known : (n,) clips that are always unknown test samples (e.g. a pool of "other people").
    """
    y = np.asarray(y)
    n = len(y)
    if n_shots < 1:
        raise UsageError("--shots must be at least 1")
    if n_folds < 1:
        raise UsageError("--folds must be at least 1")
    enroll_mask = np.ones(n, bool) if enroll_mask is None else np.asarray(enroll_mask, bool)
    never_known = np.zeros(n, bool) if never_known is None else np.asarray(never_known, bool)
    speakers = np.unique(y[~never_known])
    pool = np.asarray(sorted(set(known_pool))) if known_pool is not None else speakers
    missing = set(pool.tolist()) - set(speakers.tolist())
    if missing:
        raise DataError(f"known speakers not found in the data: {sorted(missing)[:10]}")
    # a known speaker needs n_shots enrollment clips and at least one clip left to test
    eligible = [s for s in pool if (enroll_mask & (y == s)).sum() >= n_shots and (y == s).sum() > n_shots]
    if n_known is None:
        n_known = len(pool)
        if len(eligible) < len(pool):
            short = sorted(set(pool.tolist()) - set(eligible))
            raise DataError(
                f"speakers {short[:10]} have fewer than {n_shots + 1} usable clips for {n_shots} shots"
            )
    if n_known < 2:
        raise DataError("need at least 2 known speakers per fold")
    if len(eligible) < n_known:
        max_clips = max(int((y == s).sum()) for s in pool) if len(pool) else 0
        raise DataError(
            f"only {len(eligible)} speakers have more than {n_shots} clips; cannot pick {n_known} known speakers",
            hint=f"a known speaker needs --shots clips to enroll and one more to test: lower --shots "
            f"(at most {max(0, max_clips - 1)} here) or --known",
        )
    rng = np.random.default_rng(seed)
    folds = []
    for f in range(n_folds):
        known = np.sort(rng.choice(np.asarray(eligible), size=n_known, replace=False))
        enroll = []
        for s in known:
            cand = np.flatnonzero(enroll_mask & (y == s))
            enroll.append(np.sort(rng.choice(cand, size=n_shots, replace=False)))
        enroll_idx = np.concatenate(enroll)
        is_known = np.isin(y, known) & ~never_known
        test_known = np.setdiff1d(np.flatnonzero(is_known), enroll_idx)
        test_unknown = np.flatnonzero(~is_known)
        if len(test_unknown) == 0:
            raise DataError("no unknown test clips: every speaker is known in this protocol")
        folds.append(Fold(f, known, enroll_idx, test_known, test_unknown))
    return folds


def first_n_split(y: np.ndarray, order: np.ndarray, known: Sequence[Any], n_shots: int) -> Fold:
    """The reference scripts' split when there is no emb_train: enroll the first N files (numeric order)
    of each known speaker, test on the rest of theirs plus every other speaker."""
    y = np.asarray(y)
    known = np.asarray(sorted(known))
    enroll = []
    for s in known:
        idx = np.flatnonzero(y == s)
        if len(idx) <= n_shots:
            raise DataError(f"speaker {s} has {len(idx)} clips; need more than {n_shots} for {n_shots} shots")
        enroll.append(idx[np.argsort(order[idx], kind="stable")][:n_shots])
    enroll_idx = np.sort(np.concatenate(enroll))
    is_known = np.isin(y, known)
    return Fold(
        0, known, enroll_idx, np.setdiff1d(np.flatnonzero(is_known), enroll_idx), np.flatnonzero(~is_known)
    )


# ---- results ----
@dataclass
class MethodResult:
    """One method on one fold: its metrics (fractions) and what a plot needs."""

    metrics: dict[str, float]
    known_scores: np.ndarray | None = None
    unknown_scores: np.ndarray | None = None
    curve: tuple[np.ndarray, np.ndarray] | None = None
    #: the accept threshold the fitted model used (calibrated, or the backend's own); None: none set
    threshold: float | None = None


@dataclass
class FoldsReport:
    """Per-method metrics over folds, and paired comparisons against a baseline (cosine)."""

    methods: list[str]
    folds: list[dict[str, MethodResult]] = field(default_factory=list)
    baseline: str = "cosine"
    protocol: dict[str, Any] = field(default_factory=dict)

    def values(self, method: str, metric: str) -> np.ndarray:
        return np.array([f[method].metrics[metric] for f in self.folds], dtype=float)

    def metric_names(self) -> list[str]:
        return list(self.folds[0][self.methods[0]].metrics) if self.folds else []

    def summary(self, percent: bool = True) -> dict[str, Any]:
        """``{method: {metric: {mean, std}, 'vs_<baseline>': {mean, std, wins, folds}}}``."""
        out: dict[str, Any] = {}
        for m in self.methods:
            entry: dict[str, Any] = {}
            for metric in self.metric_names():
                v = self.values(m, metric) * (100.0 if percent and metric != "min_dcf" else 1.0)
                entry[metric] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}
            if self.baseline in self.methods and m != self.baseline:
                entry[f"oscr_vs_{self.baseline}"] = self.paired("oscr", m, percent)
                entry[f"acc_vs_{self.baseline}"] = self.paired("acc", m, percent)
                if "balanced_error" in self.metric_names():
                    entry[f"balanced_error_vs_{self.baseline}"] = self.error_ratio(m)
            out[m] = entry
        return out

    def paired(self, metric: str, method: str, percent: bool = True) -> dict[str, float]:
        scale = 100.0 if percent else 1.0
        d = (self.values(method, metric) - self.values(self.baseline, metric)) * scale
        return {
            "mean": float(d.mean()),
            "std": float(d.std(ddof=1)) if len(d) > 1 else 0.0,
            "wins": int((d > 0).sum()),
            "folds": len(d),
        }

    def error_ratio(self, method: str) -> dict[str, float]:
        """Balanced open-set error at the calibrated threshold against the baseline's: ratio of the
        means, and in how many folds it is lower ("wins") or higher ("worse") than the baseline's."""
        mine, base = self.values(method, "balanced_error"), self.values(self.baseline, "balanced_error")
        return {
            "ratio": float(mine.mean() / base.mean()) if base.mean() > 0 else float("nan"),
            "wins": int((mine < base).sum()),
            "worse": int((mine > base).sum()),
            "folds": len(mine),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "folds": len(self.folds),
            "summary": self.summary(),
            # percent like the summary (min_dcf a plain number): one JSON object, one unit
            # plus each model's calibrated threshold, on its own score scale (plots draw it)
            "per_fold": [
                {
                    m: {
                        **{k: v if k == "min_dcf" else 100.0 * v for k, v in r.metrics.items()},
                        "threshold": r.threshold,
                    }
                    for m, r in f.items()
                }
                for f in self.folds
            ],
        }


#: fit(method, X_enroll, y_enroll, X_unknown_or_None, seed, fold, origin_or_None, pool_or_None) -> fitted
#: OpenSetClassifier; origin as in ``srpl_cli.calibration.held_out_scores`` (None: every row a real clip);
#: pool: unlabeled in-domain embeddings (``Fold.pool`` and/or a fixed pool), None without one
FitFn = Callable[..., Any]


def score_method(
    model: Any, X_known: np.ndarray, y_known: np.ndarray, X_unknown: np.ndarray, keep_scores: bool
) -> MethodResult:
    """Metrics of a fitted backend on known and unknown test embeddings."""
    from srpl_cli.metrics import open_set_report, oscr_curve

    classes = list(model.classes_)
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[c] for c in y_known])
    known_logits = model.decision_function(X_known)
    unknown_logits = model.decision_function(X_unknown)
    report = open_set_report(known_logits, labels, unknown_logits)
    metrics = {k: float(v) for k, v in report.to_dict(percent=False).items()}
    # what a user of `identify` gets at the model's own threshold
    thr = float(getattr(model, "threshold_", float("nan")))
    if np.isfinite(thr):  # a released checkpoint has no calibrated threshold
        metrics["far"] = float((unknown_logits.max(1) >= thr).mean())
        metrics["frr"] = float((known_logits.max(1) < thr).mean())
        metrics.update(operating_point(known_logits, labels, unknown_logits, thr))
    result = MethodResult(metrics, threshold=thr if np.isfinite(thr) else None)
    if keep_scores:
        result.known_scores = known_logits.max(1)
        result.unknown_scores = unknown_logits.max(1)
        fpr, ccr, _ = oscr_curve(known_logits, labels, unknown_logits)
        result.curve = (fpr, ccr)
    return result


def operating_point(
    known_logits: np.ndarray, labels: np.ndarray, unknown_logits: np.ndarray, threshold: float
) -> dict[str, float]:
    """The decision a user gets at ``threshold``, and the best any threshold could give.

    ``known_wrong``: share of known clips answered wrongly (rejected, or given another speaker's name);
    ``unknown_accepted``: share of unknown clips given a name; ``balanced_error``: their mean, so a
    threshold cannot look good by serving only the larger group; ``balanced_error_oracle``: the lowest
    balanced error over all thresholds (the gap to it is what calibration loses).
    """
    k_score, u_score = known_logits.max(1), unknown_logits.max(1)
    misnamed = known_logits.argmax(1) != labels
    known_wrong = float(((k_score < threshold) | misnamed).mean())
    unknown_accepted = float((u_score >= threshold).mean())
    # every distinct score as a threshold, plus one above all: errors counted with sorted scores
    cand = np.unique(np.concatenate([k_score, u_score, [np.inf]]))
    ks_right = np.sort(k_score[~misnamed])
    us = np.sort(u_score)
    rejected_right = np.searchsorted(ks_right, cand, side="left")  # right-named clips below t
    kw = (misnamed.sum() + rejected_right) / len(k_score)
    ua = 1.0 - np.searchsorted(us, cand, side="left") / len(us)
    return {
        "known_wrong": known_wrong,
        "unknown_accepted": unknown_accepted,
        "balanced_error": (known_wrong + unknown_accepted) / 2,
        "balanced_error_oracle": float(((kw + ua) / 2).min()),
    }


#: augment(fold) -> (extra enrollment X, their labels, unknown training samples, origin of the extra rows:
#: position in ``fold.enroll`` of the clip each was made from, -1 if none); any part may be None
Augment = Callable[
    [Fold], "tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None, np.ndarray | None]"
]


def evaluate_folds(
    X: np.ndarray,
    y: np.ndarray,
    folds: Sequence[Fold],
    methods: Sequence[str],
    fit: FitFn,
    seed: int = 0,
    augment: Augment | None = None,
    keep_scores: bool = False,
    progress: Callable[[int, int], None] | None = None,
    protocol: dict[str, Any] | None = None,
    fixed_pool: np.ndarray | None = None,
) -> FoldsReport:
    """Fit every method on every fold's enrollment and score its test clips (paired by fold).

    ``augment`` adds training data that depends on the fold (synthetic variants of its enrollment
    clips, unknown samples); test clips are never touched. The fold's unlabeled pool (``Fold.pool``,
    see ``split_pool``) plus any ``fixed_pool`` embeddings go to ``fit`` as its ``pool``.
    """
    report = FoldsReport(list(methods), protocol=protocol or {})
    total = len(folds) * len(methods)
    done = 0
    for fold in folds:
        X_fit, y_fit, X_unknown, origin = X[fold.enroll], y[fold.enroll], None, None
        if augment is not None:
            X_extra, y_extra, X_unknown, origin_extra = augment(fold)
            if X_extra is not None and len(X_extra):
                X_fit = np.concatenate([X_fit, X_extra])
                y_fit = np.concatenate([y_fit, np.asarray(y_extra, dtype=y_fit.dtype)])
                extra = np.full(len(X_extra), -1) if origin_extra is None else np.asarray(origin_extra)
                origin = np.concatenate([np.arange(len(fold.enroll)), extra]).astype(np.int64)
        parts = [X[fold.pool]] if fold.pool is not None else []
        parts += [fixed_pool] if fixed_pool is not None else []
        pool = np.concatenate(parts) if parts else None
        per_method: dict[str, MethodResult] = {}
        for m in methods:
            model = fit(m, X_fit, y_fit, X_unknown, seed + fold.index, fold, origin, pool)
            per_method[m] = score_method(
                model, X[fold.test_known], y[fold.test_known], X[fold.test_unknown], keep_scores
            )
            done += 1
            if progress:
                progress(done, total)
        report.folds.append(per_method)
    return report
