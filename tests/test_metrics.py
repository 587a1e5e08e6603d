"""Metrics against hand-computed cases, literal reference transcriptions and naive O(n^2) versions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from srpl_cli import metrics as M
from srpl_cli.errors import DataError

# ----------------------------------------------------------------------------------------------
# helpers


def _logits(scores, correct, n_classes: int = 2):
    """Two-column-or-more logits whose max is ``score`` and whose argmax is label 0 iff ``correct``."""
    scores = np.asarray(scores, dtype=np.float64)
    out = np.tile(scores[:, None] - 1.0, (1, n_classes))
    for i, ok in enumerate(correct):
        out[i, 0 if ok else 1] = scores[i]
    return out, np.zeros(len(scores), dtype=np.int64)


def _unknown(scores, n_classes: int = 2):
    scores = np.asarray(scores, dtype=np.float64)
    out = np.tile(scores[:, None] - 1.0, (1, n_classes))
    out[:, 0] = scores
    return out


def _random_case(rng, n_k=300, n_u=200, n_classes=4, levels=7):
    """Logits on a coarse grid, so many known/unknown max scores tie (also across sets)."""
    kl = rng.integers(0, levels, size=(n_k, n_classes)).astype(np.float64)
    ul = rng.integers(0, levels, size=(n_u, n_classes)).astype(np.float64)
    y = rng.integers(0, n_classes, size=n_k)
    return kl, y, ul


def _arpl_compute_oscr(pred_k, pred_u, labels):
    """Literal transcription of ARPL core/evaluation.py ``compute_oscr`` (loops kept on purpose)."""
    x1, x2 = np.max(pred_k, axis=1), np.max(pred_u, axis=1)
    pred = np.argmax(pred_k, axis=1)
    m_x1 = np.zeros(len(x1))
    m_x1[pred == labels] = 1
    k_target = np.concatenate((m_x1, np.zeros(len(x2))), axis=0)
    u_target = np.concatenate((np.zeros(len(x1)), np.ones(len(x2))), axis=0)
    predict = np.concatenate((x1, x2), axis=0)
    n = len(predict)
    CCR = [0 for x in range(n + 2)]
    FPR = [0 for x in range(n + 2)]
    idx = predict.argsort()
    s_k_target = k_target[idx]
    s_u_target = u_target[idx]
    for k in range(n - 1):
        CC = s_k_target[k + 1 :].sum()
        FP = s_u_target[k:].sum()
        CCR[k] = float(CC) / float(len(x1))
        FPR[k] = float(FP) / float(len(x2))
    CCR[n] = 0.0
    FPR[n] = 0.0
    CCR[n + 1] = 1.0
    FPR[n + 1] = 1.0
    ROC = sorted(zip(FPR, CCR, strict=True), reverse=True)
    OSCR = 0
    for j in range(n + 1):
        h = ROC[j][0] - ROC[j + 1][0]
        w = (ROC[j][1] + ROC[j + 1][1]) / 2.0
        OSCR = OSCR + h * w
    return OSCR


def _arpl_auroc(x1, x2):
    """Literal transcription of ARPL ``get_curve_online`` + the AUROC line of ``metric_ood``."""
    known, novel = np.sort(x1), np.sort(x2)
    num_k, num_n = known.shape[0], novel.shape[0]
    tp = -np.ones([num_k + num_n + 1], dtype=int)
    fp = -np.ones([num_k + num_n + 1], dtype=int)
    tp[0], fp[0] = num_k, num_n
    k, n = 0, 0
    for l in range(num_k + num_n):  # noqa: E741
        if k == num_k:
            tp[l + 1 :] = tp[l]
            fp[l + 1 :] = np.arange(fp[l] - 1, -1, -1)
            break
        elif n == num_n:
            tp[l + 1 :] = np.arange(tp[l] - 1, -1, -1)
            fp[l + 1 :] = fp[l]
            break
        else:
            if novel[n] < known[k]:
                n += 1
                tp[l + 1] = tp[l]
                fp[l + 1] = fp[l] - 1
            else:
                k += 1
                tp[l + 1] = tp[l] - 1
                fp[l + 1] = fp[l]
    tpr = np.concatenate([[1.0], tp / tp[0], [0.0]])
    fpr = np.concatenate([[1.0], fp / fp[0], [0.0]])
    return -np.trapezoid(1.0 - fpr, tpr)


def _naive_oscr(kl, y, ul):
    """O(n^2) definition: CCR/FPR recomputed from scratch at every distinct threshold."""
    ks, ok, us = kl.max(1), kl.argmax(1) == y, ul.max(1)
    pts = [(0.0, 0.0)]
    for t in sorted(set(ks.tolist()) | set(us.tolist()), reverse=True):
        pts.append((float(np.mean(us >= t)), float(np.mean(ok & (ks >= t)))))
    return sum((b[0] - a[0]) * (a[1] + b[1]) / 2 for a, b in zip(pts, pts[1:], strict=False))


def _naive_auroc(k, u):
    return float(np.mean((k[:, None] > u[None, :]) + 0.5 * (k[:, None] == u[None, :])))


def _naive_det(t, n):
    pts = [(1.0, 0.0)]
    for thr in sorted(set(t.tolist()) | set(n.tolist()), reverse=True):
        pts.append((float(np.mean(t < thr)), float(np.mean(n >= thr))))
    return pts


def _naive_min_dcf(t, n, p):
    costs = [m * p + f * (1 - p) for m, f in _naive_det(t, n)]
    return min(costs) / min(p, 1 - p)


# ----------------------------------------------------------------------------------------------
# hand-computed cases


def test_oscr_no_ties_hand_computed():
    # known: 0.9 correct, 0.8 correct, 0.3 wrong; unknown: 0.5, 0.1
    kl, y = _logits([0.9, 0.8, 0.3], [True, True, False])
    ul = _unknown([0.5, 0.1])
    # curve (0,0) (0,1/3) (0,2/3) (1/2,2/3) (1/2,2/3) (1,2/3): area 2/3 = accuracy
    assert M.oscr(kl, y, ul) == pytest.approx(2 / 3, abs=1e-12)
    # reference: points (1,1) (1,2/3) (1/2,2/3) (1/2,2/3) (0,1/3) (0,0): 1/3 + 1/4
    assert M.oscr(kl, y, ul, legacy=True) == pytest.approx(7 / 12, abs=1e-12)
    assert M.oscr(kl, y, ul, legacy=True) == pytest.approx(_arpl_compute_oscr(kl, ul, y), abs=1e-12)


def test_oscr_ties_between_known_and_unknown_get_half_credit():
    # known 0.9 correct, 0.5 correct, 0.5 wrong; unknown 0.5, 0.2
    kl, y = _logits([0.9, 0.5, 0.5], [True, True, False])
    ul = _unknown([0.5, 0.2])
    # (0,0) (0,1/3) -> tie group 0.5 jumps to (1/2, 2/3) diagonally -> (1, 2/3)
    assert M.oscr(kl, y, ul) == pytest.approx(0.25 + 1 / 3, abs=1e-12)
    fpr, ccr, thr = M.oscr_curve(kl, y, ul)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 1])
    np.testing.assert_allclose(ccr, [0, 1 / 3, 2 / 3, 2 / 3])
    np.testing.assert_allclose(thr, [np.inf, 0.9, 0.5, 0.2])
    # the same sample order, any order of rows: grouping makes the value order-free
    perm = np.array([2, 0, 1])
    assert M.oscr(kl[perm], y[perm], ul[::-1]) == M.oscr(kl, y, ul)


def test_oscr_legacy_ties_within_one_kind_hand_computed():
    # ties only between samples of the same kind, so the reference's sort order cannot matter
    kl, y = _logits([0.9, 0.9, 0.4], [True, True, True])
    ul = _unknown([0.6, 0.6, 0.1])
    # ascending: u0.1 k0.4 u0.6 u0.6 k0.9 k0.9; CC = correct knowns after k, FP = unknowns from k
    # k=0 (3,3) k=1 (2,2) k=2 (2,2) k=3 (1,2) k=4 (0,1), framed by (3,3) and (0,0); units 1/3, 1/3
    cc = np.array([3, 3, 2, 2, 2, 1, 0])
    fp = np.array([3, 3, 2, 2, 1, 0, 0])
    expected = np.sum((fp[:-1] - fp[1:]) * (cc[:-1] + cc[1:])) / (2 * 3 * 3)
    assert M.oscr(kl, y, ul, legacy=True) == pytest.approx(expected, abs=1e-12)
    assert _arpl_compute_oscr(kl, ul, y) == pytest.approx(expected, abs=1e-12)
    # correct OSCR: (0,0) (0,2/3) (2/3,2/3) (2/3,1) (1,1) -> 4/9 + 1/3
    assert M.oscr(kl, y, ul) == pytest.approx(4 / 9 + 1 / 3, abs=1e-12)


def test_auroc_hand_computed_with_ties():
    k, u = np.array([3.0, 2.0, 2.0]), np.array([2.0, 1.0])
    # pairs won: 3>2, 3>1, 2>1, 2>1 = 4, ties 2 x 1/2
    assert M.auroc(k, u) == pytest.approx(5 / 6)
    assert M.auroc(k, u, legacy=True) == pytest.approx(4 / 6)
    assert M.auroc(k, u, legacy=True) == pytest.approx(_arpl_auroc(k, u))
    assert M.auroc([1.0, 2.0], [0.0]) == 1.0
    assert M.auroc([0.0], [1.0, 2.0]) == 0.0


def test_accuracy_hand_computed():
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 5.0], [4.0, 4.0, 0.0]])
    # argmax = 0, 1, 2, 0 (first on ties)
    assert M.closed_set_accuracy(logits, [0, 1, 1, 1]) == pytest.approx(0.5)
    assert M.closed_set_accuracy(logits, [0, 1, 2, 0]) == 1.0


def test_eer_hand_computed():
    t, n = [0.9, 0.8, 0.4], [0.7, 0.3, 0.2, 0.1]
    # DET: (miss, fa) = (1,0) (2/3,0) (1/3,0) (1/3,1/4) (0,1/4) ...: crosses on p_fa = 1/4
    assert M.eer(t, n) == pytest.approx(0.25)
    # one target below and one above the nontarget: segment (0, .5) -> (1, .5) crosses at .5
    assert M.eer([1.0, 0.0], [0.5]) == pytest.approx(0.5)
    # a tie is one diagonal step (0, .5) -> (.5, 0): crosses at .25
    assert M.eer([1.0, 0.5], [0.5, 0.0]) == pytest.approx(0.25)
    assert M.eer([2.0, 3.0], [0.0, 1.0]) == 0.0
    assert M.eer([0.0, 1.0], [2.0, 3.0]) == 1.0


def test_min_dcf_hand_computed():
    t, n = [0.9, 0.8, 0.4], [0.7, 0.3, 0.2, 0.1]
    # p_target .1: best is t=.8, miss 1/3, fa 0: cost .1/3, normalised by min(.1, .9)
    assert M.min_dcf(t, n, p_target=0.1) == pytest.approx(1 / 3)
    # p_target .5: best is t=.4, miss 0, fa 1/4: cost .125, normalised by .5
    assert M.min_dcf(t, n, p_target=0.5) == pytest.approx(0.25)
    # costs: c_miss 2 at p .5 -> best t=.4: (0 + .125) / min(1, .5)
    assert M.min_dcf(t, n, p_target=0.5, c_miss=2.0) == pytest.approx(0.25)
    assert M.min_dcf([2.0], [1.0]) == 0.0
    # never worse than a trivial system
    assert M.min_dcf([0.0], [1.0]) == 1.0


def test_tnr_at_tpr_hand_computed():
    known = np.arange(1, 21, dtype=float)  # 95% of 20 = 19 accepted -> threshold 2
    assert M.tnr_at_tpr(known, [0.0, 1.0, 2.0, 3.0]) == pytest.approx(0.5)
    assert M.tnr_at_tpr(known, [0.0, 1.0, 2.0, 3.0], tpr=1.0) == pytest.approx(0.25)
    assert M.tnr_at_tpr([5.0], [4.0, 6.0]) == pytest.approx(0.5)


def test_open_set_trials_layout():
    kl = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    ul = np.array([[7.0, 8.0, 9.0]])
    t, n = M.open_set_trials(kl, [2, 0], ul)
    np.testing.assert_array_equal(t, [3.0, 4.0])
    np.testing.assert_array_equal(np.sort(n), [1.0, 2.0, 5.0, 6.0, 7.0, 8.0, 9.0])


def test_open_set_report_to_dict_percent():
    rng = np.random.default_rng(3)
    kl, y, ul = _random_case(rng, 60, 40, 3)
    rep = M.open_set_report(kl, y, ul)
    assert rep.oscr == M.oscr(kl, y, ul)
    assert rep.oscr_legacy == M.oscr(kl, y, ul, legacy=True)
    d = rep.to_dict()
    assert list(d) == ["acc", "auroc", "oscr", "oscr_legacy", "eer", "min_dcf", "tnr_at_95tpr"]
    assert d["acc"] == pytest.approx(100 * rep.acc)
    assert d["min_dcf"] == rep.min_dcf
    assert rep.to_dict(percent=False)["eer"] == rep.eer
    assert all(isinstance(v, float) for v in d.values())
    with pytest.raises(AttributeError):
        rep.acc = 0.0  # type: ignore[misc]


# ----------------------------------------------------------------------------------------------
# properties


def test_perfect_separation_and_classification_is_one():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, size=200)
    kl = rng.normal(size=(200, 5))
    kl[np.arange(200), y] = 10 + rng.random(200)
    ul = rng.normal(size=(150, 5))
    assert M.oscr(kl, y, ul) == 1.0
    # the reference loses one trapezoid sliver: 1 - 1/(2 n_k n_u)
    assert M.oscr(kl, y, ul, legacy=True) == pytest.approx(1 - 1 / (2 * 200 * 150))
    rep = M.open_set_report(kl, y, ul)
    assert (rep.acc, rep.auroc, rep.eer, rep.min_dcf, rep.tnr_at_95tpr) == (1.0, 1.0, 0.0, 0.0, 1.0)


def test_random_scores_give_half_the_accuracy():
    rng = np.random.default_rng(1)
    kl = rng.normal(size=(20000, 4))
    ul = rng.normal(size=(20000, 4))
    y = rng.integers(0, 4, size=20000)
    acc = M.closed_set_accuracy(kl, y)
    assert abs(M.oscr(kl, y, ul) - acc / 2) < 0.01
    assert abs(M.oscr(kl, y, ul, legacy=True) - acc / 2) < 0.01
    assert abs(M.auroc(kl.max(1), ul.max(1)) - 0.5) < 0.02
    assert abs(M.eer(*M.open_set_trials(kl, y, ul)) - 0.5) < 0.02


@pytest.mark.parametrize("legacy", [False, True])
def test_oscr_invariant_to_shift_and_monotone_rescaling(legacy):
    rng = np.random.default_rng(2)
    kl, y, ul = _random_case(rng)
    base = M.oscr(kl, y, ul, legacy=legacy)
    assert M.oscr(kl + 3.0, y, ul + 3.0, legacy=legacy) == pytest.approx(base, abs=1e-12)
    assert M.oscr(2.0 * kl, y, 2.0 * ul, legacy=legacy) == pytest.approx(base, abs=1e-12)
    assert M.oscr(kl.astype(np.float32), y, ul.astype(np.float32), legacy=legacy) == pytest.approx(base)
    assert M.auroc(kl.max(1) - 7, ul.max(1) - 7) == M.auroc(kl.max(1), ul.max(1))


def test_correct_oscr_is_order_free_with_ties():
    rng = np.random.default_rng(4)
    kl, y, ul = _random_case(rng)
    p, q = rng.permutation(len(y)), rng.permutation(len(ul))
    assert M.oscr(kl[p], y[p], ul[q]) == pytest.approx(M.oscr(kl, y, ul), abs=1e-15)


def test_oscr_curve_ends_at_accuracy_and_integrates_to_oscr():
    rng = np.random.default_rng(5)
    kl, y, ul = _random_case(rng)
    fpr, ccr, thr = M.oscr_curve(kl, y, ul)
    assert (fpr[0], ccr[0], thr[0]) == (0.0, 0.0, np.inf)
    assert fpr[-1] == 1.0 and ccr[-1] == pytest.approx(M.closed_set_accuracy(kl, y))
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(ccr) >= 0) and np.all(np.diff(thr) < 0)
    assert np.trapezoid(ccr, fpr) == pytest.approx(M.oscr(kl, y, ul), abs=1e-12)


# ----------------------------------------------------------------------------------------------
# vectorised against loop references on random data with ties


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_matches_references_with_ties(seed):
    rng = np.random.default_rng(seed)
    n_k, n_u = int(rng.integers(1, 200)), int(rng.integers(1, 200))
    kl, y, ul = _random_case(rng, n_k, n_u, int(rng.integers(2, 6)), int(rng.integers(2, 9)))
    assert M.oscr(kl, y, ul) == pytest.approx(_naive_oscr(kl, y, ul), abs=1e-12)
    assert M.oscr(kl, y, ul, legacy=True) == pytest.approx(_arpl_compute_oscr(kl, ul, y), abs=1e-12)
    ks, us = kl.max(1), ul.max(1)
    assert M.auroc(ks, us) == pytest.approx(_naive_auroc(ks, us), abs=1e-12)
    assert M.auroc(ks, us, legacy=True) == pytest.approx(_arpl_auroc(ks, us), abs=1e-12)
    t, n = M.open_set_trials(kl, y, ul)
    assert M.min_dcf(t, n, p_target=0.1) == pytest.approx(_naive_min_dcf(t, n, 0.1), abs=1e-12)
    assert M.min_dcf(t, n, p_target=0.01) == pytest.approx(_naive_min_dcf(t, n, 0.01), abs=1e-12)
    # EER lies between the two error rates at the crossing, on the naive DET points
    pts = _naive_det(t, n)
    i = next(j for j, (m, f) in enumerate(pts) if m <= f)
    (m0, f0), (m1, f1) = pts[i - 1], pts[i]
    assert min(f0, f1) - 1e-12 <= M.eer(t, n) <= max(m0, m1) + 1e-12


def test_float32_real_scores_legacy_matches_reference():
    rng = np.random.default_rng(7)
    kl = rng.normal(size=(300, 15)).astype(np.float32)
    ul = rng.normal(size=(400, 15)).astype(np.float32)
    y = rng.integers(0, 15, size=300)
    kl[np.arange(300), y] += 2.0
    assert M.oscr(kl, y, ul, legacy=True) == pytest.approx(_arpl_compute_oscr(kl, ul, y), abs=1e-12)
    assert M.oscr(kl, y, ul) == pytest.approx(_naive_oscr(kl, y, ul), abs=1e-12)


# ----------------------------------------------------------------------------------------------
# degenerate input

_KL = np.array([[1.0, 0.0], [0.0, 1.0]])
_Y = np.array([0, 1])
_UL = np.array([[0.5, 0.2]])

DEGENERATE = {
    "no unknowns": lambda: M.oscr(_KL, _Y, np.zeros((0, 2))),
    "no knowns": lambda: M.oscr(np.zeros((0, 2)), np.zeros(0, dtype=int), _UL),
    "nan known": lambda: M.oscr(np.array([[np.nan, 0.0], [0.0, 1.0]]), _Y, _UL),
    "inf unknown": lambda: M.oscr(_KL, _Y, np.array([[np.inf, 0.0]])),
    "single class": lambda: M.oscr(_KL[:, :1], np.array([0, 0]), _UL[:, :1]),
    "labels vs rows": lambda: M.oscr(_KL, np.array([0]), _UL),
    "K differs": lambda: M.oscr(_KL, _Y, np.zeros((1, 3))),
    "label too big": lambda: M.oscr(_KL, np.array([0, 2]), _UL),
    "label negative": lambda: M.closed_set_accuracy(_KL, np.array([-1, 0])),
    "non-integer labels": lambda: M.closed_set_accuracy(_KL, np.array([0.5, 1.0])),
    "1-D logits": lambda: M.oscr(np.array([1.0, 2.0]), _Y, _UL),
    "string logits": lambda: M.closed_set_accuracy(np.array([["a", "b"]]), [0]),
    "legacy no unknowns": lambda: M.oscr(_KL, _Y, np.zeros((0, 2)), legacy=True),
    "curve nan": lambda: M.oscr_curve(_KL, _Y, np.array([[np.nan, 0.0]])),
    "auroc empty unknown": lambda: M.auroc([1.0], []),
    "auroc empty known": lambda: M.auroc([], [1.0]),
    "auroc nan": lambda: M.auroc([np.nan], [1.0]),
    "auroc 2-D": lambda: M.auroc(np.ones((2, 2)), [1.0]),
    "eer no targets": lambda: M.eer([], [1.0]),
    "eer no nontargets": lambda: M.eer([1.0], []),
    "eer inf": lambda: M.eer([np.inf], [1.0]),
    "min_dcf no targets": lambda: M.min_dcf([], [1.0]),
    "min_dcf no nontargets": lambda: M.min_dcf([1.0], []),
    "min_dcf p_target 0": lambda: M.min_dcf([1.0], [0.0], p_target=0.0),
    "min_dcf p_target 1": lambda: M.min_dcf([1.0], [0.0], p_target=1.0),
    "min_dcf negative cost": lambda: M.min_dcf([1.0], [0.0], c_fa=-1.0),
    "tnr bad tpr": lambda: M.tnr_at_tpr([1.0], [0.0], tpr=0.0),
    "tnr no unknowns": lambda: M.tnr_at_tpr([1.0], []),
    "trials K differs": lambda: M.open_set_trials(_KL, _Y, np.zeros((1, 3))),
    "report no unknowns": lambda: M.open_set_report(_KL, _Y, np.zeros((0, 2))),
    "ragged": lambda: M.auroc([[1.0], [1.0, 2.0]], [0.0]),
}


@pytest.mark.parametrize("case", list(DEGENERATE))
def test_degenerate_input_raises_data_error(case):
    with pytest.raises(DataError) as info:
        DEGENERATE[case]()
    msg = str(info.value)
    assert msg and "\n" not in msg


def test_error_messages_say_what_is_wrong():
    with pytest.raises(DataError, match="no unknown samples"):
        M.oscr(_KL, _Y, np.zeros((0, 2)))
    with pytest.raises(DataError, match="NaN"):
        M.auroc([np.nan], [1.0])
    with pytest.raises(DataError, match="at least 2"):
        M.oscr(_KL[:, :1], np.array([0, 0]), _UL[:, :1])
    with pytest.raises(DataError, match=r"\[0, 2\)"):
        M.oscr(_KL, np.array([0, 2]), _UL)


def test_inputs_are_not_modified():
    rng = np.random.default_rng(8)
    kl, y, ul = _random_case(rng, 50, 50)
    ks, us = kl.max(1), ul.max(1)
    copies = [a.copy() for a in (kl, y, ul, ks, us)]
    M.open_set_report(kl, y, ul)
    M.auroc(ks, us, legacy=True)
    for a, b in zip((kl, y, ul, ks, us), copies, strict=True):
        np.testing.assert_array_equal(a, b)


def test_outputs_are_python_floats():
    rng = np.random.default_rng(9)
    kl, y, ul = _random_case(rng, 30, 30)
    t, n = M.open_set_trials(kl, y, ul)
    values = [
        M.oscr(kl, y, ul),
        M.oscr(kl, y, ul, legacy=True),
        M.auroc(kl.max(1), ul.max(1)),
        M.closed_set_accuracy(kl, y),
        M.eer(t, n),
        M.min_dcf(t, n),
        M.tnr_at_tpr(kl.max(1), ul.max(1)),
    ]
    assert all(type(v) is float and math.isfinite(v) for v in values)
