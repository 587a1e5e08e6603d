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
