"""`srpl identify`: who speaks in each clip, or `unknown`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from srpl_cli.cli._options import (
    BackboneSourceOpt,
    EngineOpt,
    JsonOpt,
    QuietOpt,
    RayAddressOpt,
    WorkersOpt,
    WorkspaceOpt,
    finite_number,
)

HELP = """Say who speaks in each clip (files or folders), or `unknown`; with --segments, who speaks when.

[b]Examples[/b]

  srpl identify clip.wav
  srpl identify ./inbox --json --top-k 3 | jq .speaker
  srpl identify ./inbox --learn     (the next `srpl tune` learns from them)
  srpl identify meeting.flac --segments --plot meeting.png
  srpl identify meeting.flac --segments --rttm > meeting.rttm
"""


def register(app: typer.Typer) -> None:
    app.command("identify", help=HELP, no_args_is_help=True)(identify)


def identify(
    clips: Annotated[list[Path], typer.Argument(help="Audio files or folders (searched recursively).")],
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Show the K best speakers per clip.")] = 1,
    threshold: Annotated[
        float | None,
        typer.Option("--threshold", help="Override the calibrated threshold.", callback=finite_number),
    ] = None,
    model: Annotated[str, typer.Option("--model", help="Name of the tuned model to use.")] = "default",
    learn: Annotated[
        bool,
        typer.Option(
            "--learn", help="Add the clips to the workspace's unlabeled pool for the next `srpl tune`."
        ),
    ] = False,
    backbone_path: BackboneSourceOpt = None,
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
    workers: WorkersOpt = None,
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    segments: Annotated[
        bool,
        typer.Option(
            "--segments",
            help="Who speaks when along each recording: segments of enrolled names or unknown-1, unknown-2, ...",
            rich_help_panel="Segments",
        ),
    ] = False,
    rttm: Annotated[
        bool,
        typer.Option(
            "--rttm", help="With --segments: print NIST RTTM on stdout.", rich_help_panel="Segments"
        ),
    ] = False,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            help="With --segments: write a timeline PNG (a folder when several recordings are given).",
            rich_help_panel="Segments",
        ),
    ] = None,
    window: Annotated[
        float | None,
        typer.Option(
            "--window", help="Analysis window in seconds (default 1.6).", rich_help_panel="Segments"
        ),
    ] = None,
    hop: Annotated[
        float | None,
        typer.Option("--hop", help="Window step in seconds (default 0.8).", rich_help_panel="Segments"),
    ] = None,
    switch_penalty: Annotated[
        float | None,
        typer.Option(
            "--switch-penalty",
            help="Smoothing: cost of a change of speaker without a pause (default 2; 0 = none; higher = fewer changes).",
            rich_help_panel="Segments",
        ),
    ] = None,
    cluster_threshold: Annotated[
        float | None,
        typer.Option(
            "--cluster-threshold",
            help="Strangers: cosine similarity at which two unknown segments are the same person "
            "(default: the equal-error point of the enrollment clips).",
            rich_help_panel="Segments",
        ),
    ] = None,
) -> None:
    from srpl_cli import pipeline
    from srpl_cli.cli._output import err, out, print_json, progress_bar, warn
    from srpl_cli.errors import DataError, UsageError
    from srpl_cli.workspace import Workspace

    if top_k < 1:
        raise UsageError("--top-k must be at least 1")
    seg_opts = {
        "--rttm": rttm,
        "--plot": plot is not None,
        "--window": window is not None,
        "--hop": hop is not None,
        "--switch-penalty": switch_penalty is not None,
        "--cluster-threshold": cluster_threshold is not None,
    }
    if not segments:
        given = [k for k, v in seg_opts.items() if v]
        if given:
            raise UsageError(f"{given[0]} only applies with --segments")
    else:
        from srpl_cli.cli._segments import run_segments

        if top_k != 1:
            raise UsageError("--top-k does not apply with --segments")
        if learn:
            raise UsageError("--learn adds whole clips to the pool; it does not combine with --segments")
        if json_ and rttm:
            raise UsageError("--json and --rttm both print on stdout: choose one")
        if engine != "local" or workers is not None or ray_address is not None:
            raise UsageError("--engine ray embeds whole clips; --segments runs in this process")
        run_segments(
            clips,
            Workspace(workspace),
            model,
            backbone_path,
            threshold,
            {"window_s": window, "hop_s": hop, "switch_penalty": switch_penalty},
            cluster_threshold,
            "json" if json_ else "rttm" if rttm else "table",
            plot,
            quiet,
        )
        return
    from srpl_cli.executors import make_executor, use_executor

    executor = make_executor(engine, ray_address, workers)
    with (
        use_executor(executor),
        progress_bar("embedding clips", quiet or json_ or len(clips) < 2) as progress,
    ):
        if learn:
            results, added, size = pipeline.identify_and_learn(
                clips, Workspace(workspace), model, top_k, backbone_path, threshold, progress
            )
        else:
            results = pipeline.identify(
                clips, Workspace(workspace), model, top_k, backbone_path, threshold, progress
            )
    failed = [r for r in results if r.error]
    for r in failed:
        warn(f"{r.path}: {r.error}")
    if json_:
        for r in results:
            print_json(r.to_dict())
    else:
        from rich.markup import escape
        from rich.table import Table

        table = Table()
        table.add_column("clip")
        table.add_column("speaker")
        table.add_column("score", justify="right")
        if top_k > 1:
            table.add_column(f"top {top_k}")
        for r in results:
            if r.error:
                continue
            who = r.speaker if r.speaker is not None else "[dim]unknown[/dim]"
            row = [escape(r.path), who, f"{r.score:.3f}"]
            if top_k > 1:
                row.append(", ".join(f"{s} {v:.3f}" for s, v in r.top))
            table.add_row(*row)
        if len(failed) < len(results):
            out.print(table)
    if failed:
        err.print(f"{len(failed)} of {len(results)} clip(s) could not be identified", highlight=False)
        if len(failed) == len(results):
            raise DataError("no usable clip to identify")
    if learn:
        err.print(
            f"unlabeled pool: {added} clip(s) added, {size} in all; run `srpl tune` to learn from them",
            highlight=False,
        )
