"""Plots are real PNG files, and a missing matplotlib gives the clear install message."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from srpl_cli import metrics, plots
from srpl_cli.errors import DataError, UsageError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _curve_inputs():
    rng = np.random.default_rng(0)
    kl = rng.normal(size=(80, 4))
    y = rng.integers(0, 4, size=80)
    kl[np.arange(80), y] += 2.0
    ul = rng.normal(size=(60, 4))
    return kl, y, ul


def _assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 1000


def test_oscr_curves_png(tmp_path):
    pytest.importorskip("matplotlib")
    kl, y, ul = _curve_inputs()
    fpr, ccr, thr = metrics.oscr_curve(kl, y, ul)
    out = plots.plot_oscr_curves(
        {
            "cosine": (fpr, ccr),  # a plain tuple
            "srpl": {"fpr": fpr, "ccr": ccr**1.1, "oscr": metrics.oscr(kl, y, ul)},  # mapping with OSCR
            "raw": (fpr, ccr, thr),  # oscr_curve's output as is
        },
        tmp_path / "sub" / "oscr.png",
    )
    assert out == tmp_path / "sub" / "oscr.png"
    _assert_png(out)
    assert [p.name for p in out.parent.iterdir()] == ["oscr.png"]  # no temp debris


def test_score_histograms_png(tmp_path):
    pytest.importorskip("matplotlib")
    kl, _, ul = _curve_inputs()
    out = plots.plot_score_histograms(kl.max(1), ul.max(1), tmp_path / "hist.png", title="t", threshold=1.0)
    _assert_png(out)
    # constant scores and one empty side still draw
    _assert_png(plots.plot_score_histograms([1.0, 1.0], [], tmp_path / "flat.png"))


def test_bad_plot_input_raises_data_error(tmp_path):
    with pytest.raises(DataError):
        plots.plot_oscr_curves({}, tmp_path / "a.png")
    with pytest.raises(DataError):
        plots.plot_oscr_curves({"x": {"fpr": [0, 1]}}, tmp_path / "a.png")
    with pytest.raises(DataError):
        plots.plot_oscr_curves({"x": ([0, 1], [0])}, tmp_path / "a.png")
    with pytest.raises(DataError):
        plots.plot_score_histograms([np.nan], [1.0], tmp_path / "b.png")
    with pytest.raises(DataError):
        plots.plot_score_histograms([], [], tmp_path / "b.png")
    assert not list(tmp_path.iterdir())


def test_missing_matplotlib_is_a_usage_error(tmp_path, monkeypatch):
    # a None entry in sys.modules makes `import matplotlib` raise ImportError
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    expected = "plotting needs matplotlib: pip install 'srpl-cli[plot]'"
    with pytest.raises(UsageError) as info:
        plots.plot_score_histograms([1.0, 2.0], [0.0], tmp_path / "h.png")
    assert str(info.value) == expected
    assert info.value.exit_code == 2
    with pytest.raises(UsageError, match="pip install"):
        plots.plot_oscr_curves({"cosine": ([0, 1], [0, 1])}, tmp_path / "o.png")
    assert not list(tmp_path.iterdir())


def test_resampled_ccr_is_the_best_reachable_at_each_fpr():
    fpr = np.array([0.0, 0.0, 0.5, 1.0])
    ccr = np.array([0.0, 0.4, 0.8, 0.9])
    grid_ccr = plots._resample_ccr(fpr, ccr)
    at = {float(f): float(c) for f, c in zip(plots._FPR_GRID, grid_ccr, strict=True)}
    assert at[0.0] == 0.4 and at[0.25] == 0.4 and at[0.5] == 0.8 and at[1.0] == 0.9


def _folds(n=3):
    from srpl_cli.protocols import MethodResult

    out = []
    for f in range(n):
        fold = {}
        for k, m in enumerate(("cosine", "anchored-cosine")):
            kl, y, ul = _curve_inputs()
            kl = kl + 0.1 * f + 0.2 * k
            fpr, ccr, _ = metrics.oscr_curve(kl, y, ul)
            r = MethodResult(
                {"oscr": metrics.oscr(kl, y, ul), "far": 0.1 * (k + 1), "frr": 0.0 if f else 0.05}
            )
            r.known_scores, r.unknown_scores, r.curve, r.threshold = kl.max(1), ul.max(1), (fpr, ccr), 1.0 + f
            fold[m] = r
        out.append(fold)
    return out


def test_plot_evaluation_draws_every_fold(tmp_path):
    pytest.importorskip("matplotlib")
    written = plots.plot_evaluation(_folds(), tmp_path)
    names = sorted(p.name for p in written)
    assert names == ["det_curve.png", "oscr_curve.png", "scores_anchored-cosine.png", "scores_cosine.png"]
    for p in written:
        _assert_png(p)


def test_fold_plots_reject_empty_input(tmp_path):
    with pytest.raises(DataError):
        plots.plot_oscr_folds({}, tmp_path / "x.png")
    with pytest.raises(DataError):
        plots.plot_det_curves({"m": [(np.zeros(0), np.ones(3))]}, tmp_path / "x.png")
    with pytest.raises(DataError, match="no scores kept"):
        from srpl_cli.protocols import MethodResult

        plots.plot_evaluation([{"cosine": MethodResult({"oscr": 0.5})}], tmp_path)


def test_det_points_match_the_threshold_rule():
    known = np.array([0.9, 0.8, 0.3])
    unknown = np.array([0.1, 0.5])
    far, frr = plots._det_points(known, unknown)
    # thresholds 0.1 0.3 0.5 0.8 0.9: accept when score >= t
    np.testing.assert_allclose(far, [1.0, 0.5, 0.5, 0.0, 0.0])
    np.testing.assert_allclose(frr, [0.0, 0.0, 1 / 3, 1 / 3, 2 / 3])
