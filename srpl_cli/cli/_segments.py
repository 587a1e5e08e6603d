"""Rendering of `srpl identify --segments`: a table, JSON lines, RTTM or a timeline PNG (parse -> core -> render)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def clock(seconds: float) -> str:
    """0:12.3, 1:02:03.4: readable times for the table."""
    m, s = divmod(max(0.0, seconds), 60.0)
    h, m = divmod(int(m), 60)
    return f"{h}:{m:02d}:{s:04.1f}" if h else f"{m}:{s:04.1f}"


def run_segments(
    clips: list[Path],
    workspace: Any,
    model: str,
    backbone_path: Path | None,
    threshold: float | None,
    overrides: dict[str, float | None],
    cluster_threshold: float | None,
    mode: str,
    plot: Path | None,
    quiet: bool,
) -> None:
    from dataclasses import replace

    from srpl_cli.cli._output import err, out, print_json, progress_bar, warn
    from srpl_cli.datasets import collect_audio
    from srpl_cli.errors import AudioError, DataError, UsageError
    from srpl_cli.segments import SegmentParams, load_segmenter

    params = replace(SegmentParams(), **{k: v for k, v in overrides.items() if v is not None}).check()
    if cluster_threshold is not None and not (-1.0 <= cluster_threshold <= 1.0):
        raise UsageError("--cluster-threshold is a cosine similarity: between -1 and 1")
    empty: list[tuple[Path, str]] = []
    paths = collect_audio(list(clips), empty)
    for p, reason in empty:
        warn(f"{p}: {reason}")
    if not paths:
        raise DataError("no recording to identify")
    many = len(paths) > 1
    if plot is not None and not many and plot.is_dir():
        plot = plot / f"{paths[0].stem}.png"  # a folder for one recording: the PNG goes inside it
    if plot is not None and many:
        stems = [p.stem for p in paths]
        twice = sorted({s for s in stems if stems.count(s) > 1})
        if twice:
            raise UsageError(f"--plot: recordings share the name {twice[0]!r}; their timelines would collide")
    if plot is not None:
        target_dir = plot if many else plot.parent
        try:
            target_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"--plot {plot}: cannot create that folder ({exc.strerror or exc})") from None
    segmenter = load_segmenter(workspace, model, backbone_path, cluster_threshold)
    failed = 0
    for path in paths:
        with progress_bar(f"{path.name}: seconds read", quiet or mode != "table") as progress:
            try:
                result = segmenter(path, threshold=threshold, params=params, progress=progress)
            except AudioError as exc:
                warn(f"{path}: {exc.reason}")
                failed += 1
                continue
        if mode == "json":
            for record in result.records():
                print_json(record)
        elif mode == "rttm":
            print(result.rttm(), end="", flush=True)
        else:
            _table(result, out, many)
        if plot is not None:
            from srpl_cli.plots import plot_timeline

            png = plot / f"{path.stem}.png" if many else plot
            plot_timeline(
                [(s.start, s.end, s.speaker) for s in result.segments],
                png,
                duration=result.duration_s,
                speakers=result.speakers,
                title=f"{path.name}: who spoke when",
            )
            err.print(f"timeline written to {png}", markup=False, highlight=False)
    if failed:
        err.print(f"{failed} of {len(paths)} recording(s) could not be read", highlight=False)
        if failed == len(paths):
            raise DataError("no usable recording")


def _table(result: Any, out: Any, many: bool) -> None:
    from rich.markup import escape
    from rich.table import Table

    title = escape(result.path) if many else None
    table = Table(title=title)
    table.add_column("start", justify="right")
    table.add_column("end", justify="right")
    table.add_column("speaker")
    table.add_column("score", justify="right")
    for s in result.segments:
        who = f"[dim]{s.speaker}[/dim]" if s.is_unknown else escape(s.speaker)
        table.add_row(clock(s.start), clock(s.end), who, f"{s.score:.3f}")
    if result.segments:
        out.print(table)
    totals = ", ".join(f"{escape(k)} {clock(v)}" for k, v in result.speaker_times().items())
    out.print(
        f"{clock(result.duration_s)} of audio, {clock(result.speech_s)} of speech"
        + (f": {totals}" if totals else ": no speech found")
    )
