"""`srpl enroll`: embed each speaker's clips and store their profiles."""

from __future__ import annotations

from typing import Annotated

import typer

from srpl_cli.backbones import DEFAULT_BACKBONE
from srpl_cli.cli._options import (
    AllowMissingOpt,
    BackboneOpt,
    BackboneSourceOpt,
    EnrollDirArg,
    JsonOpt,
    MinSpeechOpt,
    QuietOpt,
    WorkspaceOpt,
)

HELP = """Enroll speakers from ENROLL_DIR/<speaker>/<clips> or a CSV manifest (path,speaker).

Prints each speaker's usable clips and quality warnings (short, clipped, quiet, little speech).

[b]Example[/b]

  srpl enroll ./family --shots 5 --backbone dvector
"""


def register(app: typer.Typer) -> None:
    app.command("enroll", help=HELP, no_args_is_help=True)(enroll)


def enroll(
    enroll_dir: EnrollDirArg,
    shots: Annotated[
        int | None, typer.Option("--shots", help="Use the first N usable clips per speaker (default: all).")
    ] = None,
    backbone: BackboneOpt = DEFAULT_BACKBONE,
    backbone_path: BackboneSourceOpt = None,
    min_speech: MinSpeechOpt = 0.5,
    allow_missing: AllowMissingOpt = False,
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    from srpl_cli import pipeline
    from srpl_cli.cli._output import print_json, progress_bar
    from srpl_cli.workspace import Workspace

    with progress_bar("embedding clips", quiet or json_) as progress:
        report, _, _ = pipeline.enroll(
            enroll_dir,
            Workspace(workspace),
            backbone,
            shots,
            backbone_path,
            progress,
            min_speech,
            allow_missing=allow_missing,
        )
    if json_:
        print_json(report.to_dict())
    else:
        render_enrollment(report)


def render_enrollment(report) -> None:
    from rich.markup import escape
    from rich.table import Table

    from srpl_cli.cli._output import out, warn

    for p in report.problems:
        warn(f"skipped {p.path}: {p.reason}")
    table = Table(title=escape(f"enrolled with {report.backbone} ({report.workspace})"))
    table.add_column("speaker")
    table.add_column("clips used", justify="right")
    table.add_column("audio (s)", justify="right")
    table.add_column("quality warnings")
    for s in report.speakers:
        used = f"{s.clips_used}/{s.clips_found}"
        table.add_row(
            s.speaker,
            used if s.clips_used else f"[red]{used}[/red]",
            f"{s.duration_s:.1f}",
            "; ".join(s.warnings) or "-",
        )
    out.print(table)
    if report.problems:
        warn(f"{len(report.problems)} clip(s) skipped")
