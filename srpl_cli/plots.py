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

__all__ = [
    "plot_evaluation",
    "plot_det_curves",
    "plot_fold_histograms",
    "plot_oscr_curves",
    "plot_oscr_folds",
    "plot_score_histograms",
    "plot_timeline",
]

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
    threshold_span: tuple[float, float] | None = None,
) -> Path:
    """Overlaid histograms of known and unknown open-set scores (e.g. max logits), as a PNG.

    Both sets share the bins and are density-normalised, so sets of different size compare; an
    optional vertical line marks the accept threshold (and ``threshold_span`` shades the range of the
    per-fold thresholds it is the mean of). Returns the written path.
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
        what = "calibrated threshold" + (", mean of folds" if threshold_span else "")
        ax.axvline(
            float(threshold),
            color="black",
            linestyle="--",
            linewidth=1.2,
            label=f"{what} {float(threshold):.3g}",
        )
    if threshold_span is not None:
        ax.axvspan(*threshold_span, color="grey", alpha=0.2, label="threshold range over folds")
    ax.set_xlabel("score (higher = more likely a known speaker)")
    ax.set_ylabel("density")
    ax.set_title(title or "Known and unknown scores")
    ax.legend(loc="best", fontsize="small", framealpha=0.8)
    return _save_png(fig, path)


# ---- every fold of an evaluation, not one of them ----
#: line styles cycle with the colours so curves that lie on top of each other stay distinguishable
_STYLES = ("-", "--", "-.", ":")
#: FPR grid the per-fold OSCR curves are resampled onto (log-spaced low end for the zoom panel)
_FPR_GRID = np.unique(np.concatenate([[0.0], np.logspace(-4, 0, 300), np.linspace(0, 1, 201)]))


def _fold_word(n: int) -> str:
    return f"{n} fold" + ("s" if n != 1 else "")


def _resample_ccr(fpr: np.ndarray, ccr: np.ndarray) -> np.ndarray:
    """CCR of one fold on ``_FPR_GRID``: the best CCR reachable at an FPR no larger than each grid point."""
    order = np.argsort(fpr, kind="stable")
    f, c = np.asarray(fpr, float)[order], np.maximum.accumulate(np.asarray(ccr, float)[order])
    idx = np.searchsorted(f, _FPR_GRID, side="right") - 1
    return np.where(idx >= 0, c[np.clip(idx, 0, None)], 0.0)


def plot_oscr_folds(
    folds: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray]]],
    path: str | Path,
    oscr: Mapping[str, Sequence[float]] | None = None,
) -> Path:
    """OSCR curves of every fold: per method a thin line per fold, the mean curve and a ±1 std band.

    ``folds`` maps a method to its per-fold ``(fpr, ccr)``; ``oscr`` (fractions, per fold) goes into the
    legend as mean ± std. Two panels: linear FPR, and log FPR where methods that overlap on the linear
    scale (they differ at the low false-accept rates that matter) separate.
    """
    if not folds or not all(len(v) for v in folds.values()):
        raise DataError("no OSCR curves to plot")
    resampled = {m: np.stack([_resample_ccr(*_curve_arrays(m, c)[:2]) for c in v]) for m, v in folds.items()}
    _require_matplotlib()
    n = max(len(v) for v in folds.values())
    fig = _new_figure(10.0, 4.5)
    axes = fig.subplots(1, 2)
    for k, (m, curves) in enumerate(resampled.items()):
        color, style = f"C{k % 10}", _STYLES[k % len(_STYLES)]
        mean, std = curves.mean(0), curves.std(0)
        label = m
        if oscr and m in oscr and len(oscr[m]):
            v = 100 * np.asarray(oscr[m], float)
            label += f" (OSCR {v.mean():.1f}" + (f"±{v.std(ddof=1):.1f}" if len(v) > 1 else "") + "%)"
        for ax in axes:
            if len(curves) > 1:
                for c in curves:
                    ax.plot(_FPR_GRID, c, color=color, linewidth=0.5, alpha=0.25)
                ax.fill_between(_FPR_GRID, mean - std, mean + std, color=color, alpha=0.12, linewidth=0)
            # widths shrink with the method's index: a curve drawn over another leaves its edges showing
            width = max(1.0, 2.6 - 0.6 * k)
            ax.plot(_FPR_GRID, mean, color=color, linestyle=style, linewidth=width, label=label)
    # the log panel zooms in on the CCR range the curves span (methods at the ceiling stay apart)
    visible = _FPR_GRID >= 1e-3
    low = min(float((c.mean(0) - c.std(0))[visible].min()) for c in resampled.values())
    for ax, scale in zip(axes, ("linear", "log"), strict=True):
        ax.set_xscale(scale)
        ax.set_xlim((0.0, 1.0) if scale == "linear" else (1e-3, 1.0))
        ax.set_ylim(
            0.0 if scale == "linear" else max(0.0, low - 0.05 * (1.0 - low) - 0.005),
            1.02 if scale == "linear" else 1.0 + 0.03 * (1.0 - max(0.0, low)) + 0.002,
        )
        ax.set_xlabel("false positive rate (unknown accepted)" + (", log scale" if scale == "log" else ""))
        ax.grid(True, alpha=0.3, which="both" if scale == "log" else "major")
    axes[0].set_ylabel("correct classification rate (known)")
    band = "mean, ±1 std band, thin: each fold" if n > 1 else "one split"
    fig.suptitle(f"OSCR over {_fold_word(n)} ({band})")
    axes[1].legend(loc="lower right", fontsize="small")
    return _save_png(fig, path)


def _probit(p: np.ndarray) -> np.ndarray:
    """Normal deviate of a rate (the DET axes), clipped away from 0 and 1."""
    from statistics import NormalDist

    inv = NormalDist().inv_cdf
    return np.array([inv(float(x)) for x in np.clip(p, 1e-4, 1 - 1e-4)])


def _det_points(known: np.ndarray, unknown: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FAR, FRR) at every threshold, accepting a clip when its score >= threshold."""
    thr = np.unique(np.concatenate([known, unknown]))
    k, u = np.sort(known), np.sort(unknown)
    frr = np.searchsorted(k, thr, side="left") / len(k)
    far = 1.0 - np.searchsorted(u, thr, side="left") / len(u)
    return far, frr


def plot_det_curves(
    scores: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray]]],
    path: str | Path,
    operating: Mapping[str, Sequence[tuple[float, float]]] | None = None,
) -> Path:
    """DET curves (false rejects of known speakers against false accepts of unknown ones, normal-deviate
    axes) from the scores pooled over folds, with each fold's calibrated operating point (FAR, FRR)
    as a marker: how far the threshold `tune` would pick lands from the curve's best trade-off."""
    if not scores:
        raise DataError("no scores to plot")
    pooled = {}
    for m, per_fold in scores.items():
        k = np.concatenate([np.asarray(a, float).ravel() for a, _ in per_fold])
        u = np.concatenate([np.asarray(b, float).ravel() for _, b in per_fold])
        if not k.size or not u.size:
            raise DataError(f"DET curve {m!r}: needs known and unknown scores")
        pooled[m] = _det_points(k, u)
    _require_matplotlib()
    n = max(len(v) for v in scores.values())
    fig = _new_figure(6.0, 5.0)
    ax = fig.add_subplot()
    for k, (m, (far, frr)) in enumerate(pooled.items()):
        color, style = f"C{k % 10}", _STYLES[k % len(_STYLES)]
        width = max(1.0, 2.4 - 0.5 * k)  # as in the OSCR plot: overlapping curves keep visible edges
        ax.plot(_probit(far), _probit(frr), color=color, linestyle=style, linewidth=width, label=m)
        # a rate of 0 (no false reject in a fold) sits on the axis edge, not off the plot
        raw = np.asarray((operating or {}).get(m, []), float).reshape(-1, 2)
        pts = np.clip(raw, 6e-4, 0.97)
        if len(pts):
            ax.scatter(_probit(pts[:, 0]), _probit(pts[:, 1]), color=color, marker="o", s=14, alpha=0.6)
            ax.scatter(
                _probit(np.clip(raw[:, 0].mean(keepdims=True), 6e-4, 0.97)),
                _probit(np.clip(raw[:, 1].mean(keepdims=True), 6e-4, 0.97)),
                color=color,
                marker="X",
                s=70,
                edgecolor="black",
                linewidth=0.6,
                label=f"{m}: calibrated threshold (FAR {100 * raw[:, 0].mean():.1f}%, "
                f"FRR {100 * raw[:, 1].mean():.1f}%)",
            )
    ticks = np.array([0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95])
    labels = [f"{100 * t:g}%" for t in ticks]
    for setter, lim in ((ax.set_xticks, ax.set_xlim), (ax.set_yticks, ax.set_ylim)):
        setter(_probit(ticks), labels)
        lim(_probit(np.array([5e-4]))[0], _probit(np.array([0.98]))[0])
    ax.plot([-5, 5], [-5, 5], color="grey", linewidth=0.6, linestyle=":", label="FAR = FRR")
    ax.set_xlabel("false accept rate (unknown speakers accepted)")
    ax.set_ylabel("false reject rate (known speakers rejected)")
    ax.set_title(f"DET, scores pooled over {_fold_word(n)}; dots: each fold's threshold")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize="x-small")
    return _save_png(fig, path)


def plot_fold_histograms(
    per_fold: Sequence[tuple[np.ndarray, np.ndarray]],
    path: str | Path,
    title: str,
    thresholds: Sequence[float] = (),
) -> Path:
    """Known and unknown scores pooled over folds, with the calibrated threshold: the mean over folds
    as a line and, with several folds, the range of the per-fold thresholds as a shaded span."""
    known = np.concatenate([np.asarray(k, float).ravel() for k, _ in per_fold]) if per_fold else np.zeros(0)
    unknown = np.concatenate([np.asarray(u, float).ravel() for _, u in per_fold]) if per_fold else np.zeros(0)
    thr = np.asarray([t for t in thresholds if t is not None and np.isfinite(t)], float)
    path = plot_score_histograms(
        known,
        unknown,
        path,
        title=f"{title}: scores of {_fold_word(len(per_fold))}",
        threshold=float(thr.mean()) if thr.size else None,
        threshold_span=(float(thr.min()), float(thr.max())) if thr.size > 1 else None,
    )
    return path


def plot_evaluation(folds: Sequence[Mapping[str, Any]], out_dir: str | Path) -> list[Path]:
    """Every figure of `srpl evaluate --plot` from its per-fold results (``MethodResult`` with scores
    kept): ``oscr_curve.png`` (all folds), ``det_curve.png`` (pooled, with the calibrated operating
    points) and ``scores_<method>.png`` (pooled histograms with the calibrated threshold)."""
    out_dir = Path(out_dir)
    methods = list(folds[0]) if folds else []
    kept = [m for m in methods if all(f[m].curve is not None for f in folds)]
    if not kept:
        raise DataError("no scores kept to plot")
    written = [
        plot_oscr_folds(
            {m: [f[m].curve for f in folds] for m in kept},
            out_dir / "oscr_curve.png",
            oscr={m: [f[m].metrics["oscr"] for f in folds] for m in kept},
        )
    ]
    operating = {
        m: [(f[m].metrics["far"], f[m].metrics["frr"]) for f in folds if "far" in f[m].metrics] for m in kept
    }
    written.append(
        plot_det_curves(
            {m: [(f[m].known_scores, f[m].unknown_scores) for f in folds] for m in kept},
            out_dir / "det_curve.png",
            operating,
        )
    )
    for m in kept:
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in m)
        written.append(
            plot_fold_histograms(
                [(f[m].known_scores, f[m].unknown_scores) for f in folds],
                out_dir / f"scores_{safe}.png",
                title=m,
                thresholds=[f[m].threshold for f in folds if f[m].threshold is not None],
            )
        )
    return written


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
