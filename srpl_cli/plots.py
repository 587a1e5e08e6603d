"""PNG figures: OSCR curves and known/unknown score histograms of an evaluation; who-spoke-when timelines.

matplotlib is an optional extra (``pip install 'srpl-cli[plot]'``), imported inside each function
after :func:`_require_matplotlib`, so the package and ``srpl --help`` never pay for it. Figures are
drawn on a bare ``Figure`` with the Agg canvas (no pyplot, no global state, never a window) and
written atomically.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from srpl_cli._io import atomic_write_bytes
from srpl_cli.errors import DataError, UsageError

__all__ = ["plot_oscr_curves", "plot_score_histograms", "plot_timeline"]

_MISSING = "plotting needs matplotlib: pip install 'srpl-cli[plot]'"


def _require_matplotlib() -> None:
    """Raise a UsageError that says how to install matplotlib when it cannot be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError(_MISSING) from None


def _new_figure(width: float = 6.0, height: float = 4.5) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig: Any, path: str | Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(path, buf.getvalue())


def _curve_arrays(name: str, curve: object) -> tuple[np.ndarray, np.ndarray, float | None]:
    """(fpr, ccr, oscr or None) from a ``{"fpr", "ccr", "oscr"?}`` mapping or an ``(fpr, ccr, ...)`` tuple."""
    oscr_value = None
    if isinstance(curve, Mapping):
        if "fpr" not in curve or "ccr" not in curve:
            raise DataError(f"OSCR curve {name!r}: a mapping needs the keys 'fpr' and 'ccr'")
        fpr, ccr, oscr_value = curve["fpr"], curve["ccr"], curve.get("oscr")
    elif isinstance(curve, Sequence) and len(curve) >= 2:
        fpr, ccr = curve[0], curve[1]  # (fpr, ccr) or oscr_curve's (fpr, ccr, thresholds)
    else:
        raise DataError(f"OSCR curve {name!r}: expected (fpr, ccr) or a mapping with 'fpr' and 'ccr'")
    fpr_a, ccr_a = np.asarray(fpr, dtype=float).ravel(), np.asarray(ccr, dtype=float).ravel()
    if fpr_a.shape != ccr_a.shape or fpr_a.size == 0:
        raise DataError(f"OSCR curve {name!r}: fpr and ccr must be non-empty and the same length")
    return fpr_a, ccr_a, None if oscr_value is None else float(oscr_value)


def plot_oscr_curves(curves: Mapping[str, object], path: str | Path, title: str | None = None) -> Path:
    """Draw CCR against FPR, one line per method, and write a PNG to ``path``.

    ``curves`` maps a method name (``"cosine"``, ``"srpl"``) to either ``(fpr, ccr)`` (also accepts
    :func:`srpl_cli.metrics.oscr_curve`'s ``(fpr, ccr, thresholds)``) or a mapping with keys ``fpr``,
    ``ccr`` and optionally ``oscr`` (a fraction), which is then shown in the legend as a percentage.
    Both axes are linear, 0..1. Returns the written path.
    """
    if not curves:
        raise DataError("no OSCR curves to plot")
    parsed = [(name, *_curve_arrays(name, curve)) for name, curve in curves.items()]
    _require_matplotlib()
    fig = _new_figure()
    ax = fig.add_subplot()
    for name, fpr, ccr, oscr_value in parsed:
        label = name if oscr_value is None else f"{name} (OSCR {100 * oscr_value:.2f}%)"
        ax.plot(fpr, ccr, label=label, linewidth=1.6)
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("false positive rate (unknown speakers accepted)")
    ax.set_ylabel("correct classification rate (known speakers)")
    ax.set_title(title or "OSCR curve")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    return _save_png(fig, path)


def plot_score_histograms(
    known_scores: object,
    unknown_scores: object,
    path: str | Path,
    title: str | None = None,
    threshold: float | None = None,
) -> Path:
    """Overlaid histograms of known and unknown open-set scores (e.g. max logits), as a PNG.

    Both sets share the bins and are density-normalised, so sets of different size compare; an
    optional vertical line marks the accept threshold. Returns the written path.
    """
    known = np.asarray(known_scores, dtype=float).ravel()
    unknown = np.asarray(unknown_scores, dtype=float).ravel()
    if known.size == 0 and unknown.size == 0:
        raise DataError("no scores to plot: known and unknown scores are both empty")
    both = np.concatenate([known, unknown])
    if not np.isfinite(both).all():
        raise DataError("scores to plot contain NaN or infinite values")
    _require_matplotlib()
    fig = _new_figure()
    ax = fig.add_subplot()
    lo, hi = float(both.min()), float(both.max())
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    bins = np.linspace(lo, hi, 41)
    if known.size:
        ax.hist(known, bins=bins, density=True, alpha=0.55, label=f"known ({known.size})")
    if unknown.size:
        ax.hist(unknown, bins=bins, density=True, alpha=0.55, label=f"unknown ({unknown.size})")
    if threshold is not None:
        ax.axvline(
            float(threshold),
            color="black",
            linestyle="--",
            linewidth=1.2,
            label=f"threshold {float(threshold):.3g}",
        )
    ax.set_xlabel("score (higher = more likely a known speaker)")
    ax.set_ylabel("density")
    ax.set_title(title or "Known and unknown scores")
    ax.legend()
    return _save_png(fig, path)


def plot_timeline(
    segments: Sequence[tuple[float, float, str]],
    path: str | Path,
    duration: float | None = None,
    speakers: Sequence[str] = (),
    title: str | None = None,
) -> Path:
    """Who spoke when: one row per label, a bar per ``(start, end, label)`` segment, as a PNG.

    ``speakers`` (the enrolled names) come first, in that order, even when silent, so timelines of
    one model line up; strangers (``unknown-N``) follow in grey shades. Time is in minutes past one
    minute of audio, else seconds. Returns the written path.
    """
    labels = list(dict.fromkeys(speakers))
    others = sorted({s for _, _, s in segments} - set(labels), key=lambda s: (len(s), s))
    labels += others
    if not labels:
        raise DataError("nothing to plot: no speech found")
    end = max([duration or 0.0] + [b for _, b, _ in segments])
    scale, unit = (60.0, "min") if end > 60 else (1.0, "s")
    _require_matplotlib()
    from matplotlib import colormaps

    fig = _new_figure(width=10.0, height=1.2 + 0.45 * len(labels))
    ax = fig.add_subplot()
    palette = colormaps["tab10"]
    for row, label in enumerate(labels):
        spans = [(a / scale, (b - a) / scale) for a, b, s in segments if s == label]
        if label in others:
            color = str(0.35 + 0.4 * (others.index(label) % 3) / 2)
        else:
            color = palette(row % 10)
        ax.broken_barh(spans, (row - 0.35, 0.7), facecolors=color)
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlim(0.0, end / scale if end > 0 else 1.0)
    ax.set_xlabel(f"time ({unit})")
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_title(title or "Who spoke when")
    return _save_png(fig, path)
