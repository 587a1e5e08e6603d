"""Open-set and verification metrics as pure numpy functions (scikit-learn's ``metrics`` idea).

Conventions, shared by every function here:

- Scores: higher = more likely a known speaker. The open-set score of an utterance is its max logit
  and its predicted speaker the argmax (ties between columns go to the first column, as np.argmax).
- Inputs are plain arrays; outputs are Python floats in [0, 1] (fractions, not percent), except
  ``min_dcf`` which is a normalised cost (0 = perfect, 1 = no better than a trivial system).
- Equal scores move together: a threshold accepts every sample with score >= t, so a tie between a
  known and an unknown sample is a diagonal step of the curve (half credit), never an arbitrary order.
- Everything sorts once and uses cumulative sums: O(n log n), a few hundred ms for 2 million samples.
- Degenerate input (empty sets, NaN/inf, a single class, mismatched shapes, labels out of range)
  raises :class:`srpl_cli.errors.DataError` with a one-line message instead of returning a number
  that means nothing.

``legacy=True`` variants reproduce the ARPL reference code (github.com/iCGY96/ARPL,
``core/evaluation.py``: ``compute_oscr`` and ``metric_ood``), which SpeakerRPL copies, so numbers can
be compared with published ones.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from srpl_cli.errors import DataError

__all__ = [
    "OpenSetReport",
    "auroc",
    "closed_set_accuracy",
    "eer",
    "min_dcf",
    "open_set_report",
    "open_set_trials",
    "oscr",
    "oscr_curve",
    "tnr_at_tpr",
]


# ----------------------------------------------------------------------------------------------
# validation


def _finite_array(x: object, name: str, ndim: int) -> np.ndarray:
    """A real-valued array with ``ndim`` dimensions and only finite values, else DataError."""
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:  # ragged lists and the like
        raise DataError(f"{name}: cannot be read as a numeric array ({exc})") from None
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise DataError(f"{name}: expected real numbers, got dtype {arr.dtype}")
    if arr.ndim != ndim:
        want = "(n,)" if ndim == 1 else "(n, n_classes)"
        raise DataError(f"{name}: expected a {ndim}-D array of shape {want}, got shape {arr.shape}")
    if arr.size and not np.isfinite(arr).all():
        bad = int(arr.size - np.isfinite(arr).sum())
        raise DataError(f"{name}: {bad} value(s) are NaN or infinite; scores must be finite")
    return arr


def _nonempty(arr: np.ndarray, what: str) -> None:
    if arr.shape[0] == 0:
        raise DataError(f"no {what}: the metric needs at least one")


def _check_logits(known_logits: object, known_labels: object) -> tuple[np.ndarray, np.ndarray]:
    """Known logits (n, K) with K >= 2 and integer labels (n,) in [0, K)."""
    logits = _finite_array(known_logits, "known_logits", 2)
    _nonempty(logits, "known samples (known_logits has 0 rows)")
    n_classes = logits.shape[1]
    if n_classes < 2:
        raise DataError(
            f"known_logits has {n_classes} column(s); classification needs at least 2 known speakers"
        )
    labels = _finite_array(known_labels, "known_labels", 1)
    if labels.shape[0] != logits.shape[0]:
        raise DataError(
            f"known_labels has {labels.shape[0]} entries but known_logits has {logits.shape[0]} rows"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.array_equal(labels, np.round(labels)):
            raise DataError("known_labels: expected integer class indices, got non-integer values")
        labels = labels.astype(np.int64)
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= n_classes:
        raise DataError(
            f"known_labels: values must lie in [0, {n_classes}) (the columns of known_logits), "
            f"got range [{lo}, {hi}]"
        )
    return logits, labels


def _check_unknown(unknown_logits: object, n_classes: int) -> np.ndarray:
    logits = _finite_array(unknown_logits, "unknown_logits", 2)
    _nonempty(logits, "unknown samples (unknown_logits has 0 rows); open-set metrics need both sets")
    if logits.shape[1] != n_classes:
        raise DataError(
            f"unknown_logits has {logits.shape[1]} columns but known_logits has {n_classes}; "
            "both must be scored against the same speakers"
        )
    return logits


def _check_scores(pos: object, neg: object, pos_name: str, neg_name: str) -> tuple[np.ndarray, np.ndarray]:
    p = _finite_array(pos, pos_name, 1)
    q = _finite_array(neg, neg_name, 1)
    _nonempty(p, f"{pos_name} ({pos_name} is empty)")
    _nonempty(q, f"{neg_name} ({neg_name} is empty)")
    return p, q


def _open_set_inputs(
    known_logits: object, known_labels: object, unknown_logits: object
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(known max score, known correct flag, unknown max score) after full validation."""
    logits, labels = _check_logits(known_logits, known_labels)
    unknown = _check_unknown(unknown_logits, logits.shape[1])
    correct = logits.argmax(axis=1) == labels
    return logits.max(axis=1), correct, unknown.max(axis=1)


# ----------------------------------------------------------------------------------------------
# shared curve machinery


def _grouped_counts(
    pos: np.ndarray, neg: np.ndarray, pos_weight: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Accepted counts at every distinct threshold, highest first.

    Returns ``(thresholds, tp, fp)``: ``tp[i]`` = sum of ``pos_weight`` over positives with score >=
    ``thresholds[i]`` (all weights 1 when None), ``fp[i]`` = negatives with score >= ``thresholds[i]``.
    Tied scores share one threshold, so they always move together.
    """
    scores = np.concatenate([pos, neg])
    order = np.argsort(scores)[::-1]  # descending; order inside a tie group is irrelevant
    sorted_scores = scores[order]
    is_pos = order < pos.shape[0]
    if pos_weight is None:
        tp = np.cumsum(is_pos, dtype=np.int64)
    else:
        w = np.concatenate([pos_weight.astype(np.int64), np.zeros(neg.shape[0], dtype=np.int64)])
        tp = np.cumsum(w[order])
    fp = np.cumsum(~is_pos, dtype=np.int64)
    ends = np.flatnonzero(sorted_scores[1:] != sorted_scores[:-1])
    ends = np.append(ends, sorted_scores.shape[0] - 1)
    return sorted_scores[ends], tp[ends], fp[ends]


def _trapezoid_counts(x: np.ndarray, y: np.ndarray) -> int:
    """Twice the trapezoid area under integer points (x increasing), exactly, in integer units."""
    return int(np.sum(np.diff(x) * (y[1:] + y[:-1])))


# ----------------------------------------------------------------------------------------------
# open-set classification


def closed_set_accuracy(known_logits: object, known_labels: object) -> float:
    """Share of known samples whose argmax is their label (no rejection).

    known_logits : (n, K), known_labels : (n,) ints in [0, K).
    """
    logits, labels = _check_logits(known_logits, known_labels)
    return float(np.mean(logits.argmax(axis=1) == labels))


def oscr_curve(
    known_logits: object, known_labels: object, unknown_logits: object
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The OSCR curve (Dhamija et al., 2018) for plotting: ``(fpr, ccr, thresholds)``.

    One point per distinct max score t (highest first), plus a leading ``(0, 0)`` point with
    threshold ``+inf``: ``ccr`` = share of known samples correctly classified with max score >= t,
    ``fpr`` = share of unknown samples with max score >= t. The last point is ``(1, accuracy)``.
    """
    k_score, correct, u_score = _open_set_inputs(known_logits, known_labels, unknown_logits)
    thresholds, cc, fp = _grouped_counts(k_score, u_score, correct)
    fpr = np.concatenate([[0.0], fp / u_score.shape[0]])
    ccr = np.concatenate([[0.0], cc / k_score.shape[0]])
    thr = np.concatenate([[np.inf], thresholds.astype(np.float64)])
    return fpr, ccr, thr


def oscr(known_logits: object, known_labels: object, unknown_logits: object, legacy: bool = False) -> float:
    """Open-Set Classification Rate: area under CCR against FPR, in [0, accuracy].

    known_logits : (n, K); known_labels : (n,) ints in [0, K); unknown_logits : (m, K).

    Correct (default): the curve of :func:`oscr_curve` from (0, 0) to (1, accuracy), trapezoids
    between distinct thresholds, so ties between known and unknown scores get half credit.

    ``legacy=True``: the ARPL/SpeakerRPL ``compute_oscr`` arithmetic, kept for comparison with
    published numbers. It sorts all max scores ascending with numpy's default ``argsort``; at sorted
    position k it pairs CCR = correct knowns at positions > k with FPR = unknowns at positions >= k
    (adjacent thresholds, so a known sample never counts at its own threshold), adds the points
    (0, 0) and (1, 1) (not (1, accuracy)) and integrates with trapezoids. Ties are broken by that
    (unstable) sort order, exactly as in the reference, so with tied scores the legacy value can depend
    on numpy's sort implementation.
    """
    k_score, correct, u_score = _open_set_inputs(known_logits, known_labels, unknown_logits)
    n_k, n_u = k_score.shape[0], u_score.shape[0]
    if legacy:
        return _oscr_legacy(k_score, correct, u_score)
    _, cc, fp = _grouped_counts(k_score, u_score, correct)
    fp = np.concatenate([[0], fp])
    cc = np.concatenate([[0], cc])
    return _trapezoid_counts(fp, cc) / (2.0 * n_k * n_u)


def _oscr_legacy(k_score: np.ndarray, correct: np.ndarray, u_score: np.ndarray) -> float:
    """Vectorised ARPL ``compute_oscr``; see :func:`oscr`. Integer counts, one division at the end."""
    n_k, n_u = k_score.shape[0], u_score.shape[0]
    predict = np.concatenate((k_score, u_score), axis=0)
    n = predict.shape[0]
    idx = predict.argsort()  # same call as the reference, hence the same tie order
    k_target = np.concatenate([correct.astype(np.int64), np.zeros(n_u, dtype=np.int64)])[idx]
    u_target = (idx >= n_k).astype(np.int64)
    # suffix sums: suffix[j] = sum(target[j:]), j = 0..n
    suffix_k = np.concatenate([np.cumsum(k_target[::-1])[::-1], [0]])
    suffix_u = np.concatenate([np.cumsum(u_target[::-1])[::-1], [0]])
    # reference points for k = 0..n-2: CC = suffix_k[k+1], FP = suffix_u[k]; both non-increasing in
    # k, so its lexicographic sort is this order, framed by (1, 1) in front and (0, 0) behind.
    cc = np.concatenate([[n_k], suffix_k[1:n], [0]])
    fp = np.concatenate([[n_u], suffix_u[: n - 1], [0]])
    area2 = int(np.sum((fp[:-1] - fp[1:]) * (cc[:-1] + cc[1:])))
    return area2 / (2.0 * n_k * n_u)


def auroc(known_scores: object, unknown_scores: object, legacy: bool = False) -> float:
    """Area under the ROC curve for known (positive) against unknown (negative) scores.

    Rank form: P(known score > unknown score) + 1/2 P(equal), exact, O(n log n).
    ``legacy=True`` gives ARPL's ``metric_ood`` AUROC, whose merge of the two sorted lists removes a
    known sample before an equal unknown one, so ties count 0 instead of 1/2 (identical without ties).
    """
    k, u = _check_scores(known_scores, unknown_scores, "known_scores", "unknown_scores")
    u_sorted = np.sort(u)
    below = np.searchsorted(u_sorted, k, side="left").sum(dtype=np.int64)
    if legacy:
        return float(below) / (k.shape[0] * u.shape[0])
    below_or_equal = np.searchsorted(u_sorted, k, side="right").sum(dtype=np.int64)
    return float(below + below_or_equal) / (2.0 * k.shape[0] * u.shape[0])


def tnr_at_tpr(known_scores: object, unknown_scores: object, tpr: float = 0.95) -> float:
    """Share of unknowns rejected at the highest threshold that still accepts ``tpr`` of the knowns.

    The threshold t is the ceil(tpr * n)-th highest known score (accept = score >= t); an unknown is
    rejected when its score < t, so ties with t count as accepted (pessimistic).
    """
    if not 0.0 < tpr <= 1.0:
        raise DataError(f"tpr must be in (0, 1], got {tpr}")
    k, u = _check_scores(known_scores, unknown_scores, "known_scores", "unknown_scores")
    n_accept = max(1, math.ceil(tpr * k.shape[0] - 1e-9))
    threshold = np.sort(k)[::-1][n_accept - 1]
    return float(np.mean(u < threshold))


# ----------------------------------------------------------------------------------------------
# verification-style metrics on trials


def _miss_fa(target: np.ndarray, nontarget: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(p_miss, p_fa) at every distinct threshold plus 'reject all' in front, accept = score >= t."""
    _, tp, fp = _grouped_counts(target, nontarget)
    p_miss = np.concatenate([[1.0], 1.0 - tp / target.shape[0]])
    p_fa = np.concatenate([[0.0], fp / nontarget.shape[0]])
    return p_miss, p_fa


def eer(target_scores: object, nontarget_scores: object) -> float:
    """Equal error rate as a fraction.

    Walks the DET curve (p_miss, p_fa) over distinct thresholds from 'reject all' (1, 0) to 'accept
    all' (0, 1) and returns where the straight segment between the last point with p_miss > p_fa and
    the first with p_miss <= p_fa crosses p_miss = p_fa (linear interpolation, so the value does not
    jump with one trial; tied scores form one point).
    """
    t, n = _check_scores(target_scores, nontarget_scores, "target_scores", "nontarget_scores")
    p_miss, p_fa = _miss_fa(t, n)
    diff = p_miss - p_fa  # starts at 1, ends at -1, non-increasing
    i = int(np.argmax(diff <= 0))
    d0, d1 = diff[i - 1], diff[i]
    alpha = d0 / (d0 - d1)
    return float(p_fa[i - 1] + alpha * (p_fa[i] - p_fa[i - 1]))


def min_dcf(
    target_scores: object,
    nontarget_scores: object,
    p_target: float = 0.1,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> float:
    """Normalised minimum detection cost (Kaldi ``compute_min_dcf.py``, WeSpeaker).

    min over thresholds of (c_miss * p_miss * p_target + c_fa * p_fa * (1 - p_target)) divided by
    min(c_miss * p_target, c_fa * (1 - p_target)), the cost of the better trivial system. Thresholds
    are the distinct scores plus 'reject all'; unlike Kaldi, tied scores are one operating point.
    """
    if not 0.0 < p_target < 1.0:
        raise DataError(f"p_target must be in (0, 1), got {p_target}")
    if c_miss <= 0 or c_fa <= 0:
        raise DataError(f"c_miss and c_fa must be positive, got {c_miss} and {c_fa}")
    t, n = _check_scores(target_scores, nontarget_scores, "target_scores", "nontarget_scores")
    p_miss, p_fa = _miss_fa(t, n)
    cost = c_miss * p_miss * p_target + c_fa * p_fa * (1.0 - p_target)
    return float(cost.min() / min(c_miss * p_target, c_fa * (1.0 - p_target)))


def open_set_trials(
    known_logits: object, known_labels: object, unknown_logits: object
) -> tuple[np.ndarray, np.ndarray]:
    """Every (utterance, speaker) pair as a verification trial, as the SpeakerRPL reference scores.

    Returns ``(target_scores, nontarget_scores)``: for each known utterance its own speaker's column
    is a target trial and its other K-1 columns non-target trials; every column of every unknown
    utterance is a non-target trial. Sizes n and n*(K-1) + m*K.
    """
    logits, labels = _check_logits(known_logits, known_labels)
    unknown = _check_unknown(unknown_logits, logits.shape[1])
    is_target = np.zeros(logits.shape, dtype=bool)
    is_target[np.arange(logits.shape[0]), labels] = True
    target = logits[is_target]  # row-major, so one per row in row order
    nontarget = np.concatenate([logits[~is_target], unknown.ravel()])
    return target, nontarget


# ----------------------------------------------------------------------------------------------
# report


@dataclass(frozen=True)
class OpenSetReport:
    """All open-set numbers of one evaluation, as fractions (``min_dcf``: normalised cost)."""

    acc: float
    auroc: float
    oscr: float
    oscr_legacy: float
    eer: float
    min_dcf: float
    tnr_at_95tpr: float

    def to_dict(self, percent: bool = True) -> dict[str, float]:
        """Plain dict; with ``percent`` every rate is x100 (as in the paper), ``min_dcf`` stays as is."""
        out = asdict(self)
        if percent:
            out = {k: (v if k == "min_dcf" else 100.0 * v) for k, v in out.items()}
        return out


def open_set_report(
    known_logits: object, known_labels: object, unknown_logits: object, p_target: float = 0.1
) -> OpenSetReport:
    """Every metric of this module for one set of logits (max logit = open-set score)."""
    logits, labels = _check_logits(known_logits, known_labels)
    unknown = _check_unknown(unknown_logits, logits.shape[1])
    target, nontarget = open_set_trials(logits, labels, unknown)
    k_score, u_score = logits.max(axis=1), unknown.max(axis=1)
    return OpenSetReport(
        acc=closed_set_accuracy(logits, labels),
        auroc=auroc(k_score, u_score),
        oscr=oscr(logits, labels, unknown),
        oscr_legacy=oscr(logits, labels, unknown, legacy=True),
        eer=eer(target, nontarget),
        min_dcf=min_dcf(target, nontarget, p_target=p_target),
        tnr_at_95tpr=tnr_at_tpr(k_score, u_score, 0.95),
    )
