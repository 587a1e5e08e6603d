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

HELP = """Say who speaks in each clip (files or folders), or `unknown`.

[b]Examples[/b]

  srpl identify clip.wav
  srpl identify ./inbox --json --top-k 3 | jq .speaker
  srpl identify ./inbox --learn          (then `srpl tune` learns the room from these clips)
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
) -> None:
    from srpl_cli import pipeline
    from srpl_cli.cli._output import err, out, print_json, progress_bar, warn
    from srpl_cli.errors import DataError, UsageError
    from srpl_cli.workspace import Workspace

    if top_k < 1:
        raise UsageError("--top-k must be at least 1")
    from srpl_cli.executors import make_executor, use_executor

    executor = make_executor(engine, ray_address, workers)
    with (
        use_executor(executor),
        progress_bar("embedding clips", quiet or json_ or len(clips) < 2) as progress,
    ):
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
        added, size = pipeline.learn(clips, Workspace(workspace), model, backbone_path)
        err.print(
            f"unlabeled pool: {added} clip(s) added, {size} in all; run `srpl tune` to learn from them",
            highlight=False,
        )
