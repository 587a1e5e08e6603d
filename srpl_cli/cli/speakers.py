"""`srpl speakers list|add|remove|rename`: who the model in use knows, and changing that."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from srpl_cli.cli._options import BackboneSourceOpt, JsonOpt, MinSpeechOpt, QuietOpt, WorkspaceOpt

HELP = """List, add, remove or rename the people the model in use knows.

A change refits that model from the stored profiles and cached embeddings, with the method, settings
and threshold rule it was tuned with, and saves it as a new version (roll back with
[b]srpl models use[/b]). Only a new person's clips are embedded.

[b]Examples[/b]

  srpl speakers list
  srpl speakers add grandma ./clips/grandma
  srpl speakers remove bob
  srpl speakers rename alice alice_s
"""

ModelOpt = Annotated[str, typer.Option("--model", help="Name of the tuned model to change.")]

app = typer.Typer(help=HELP, no_args_is_help=True, rich_markup_mode="rich")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="speakers")


@app.command(
    "list", help="List the speakers of the model in use.\n\n[b]Example[/b]\n\n  srpl speakers list --json"
)
def list_(model: ModelOpt = "default", workspace: WorkspaceOpt = None, json_: JsonOpt = False) -> None:
    from rich.table import Table

    from srpl_cli.cli._output import out, print_json
    from srpl_cli.management import list_speakers
    from srpl_cli.workspace import Workspace

    result = list_speakers(Workspace(workspace), model)
    if json_:
        print_json(result.to_dict())
        return
    table = Table(title=f"model '{result.model}' {result.version} ({result.backbone})")
    table.add_column("speaker")
    table.add_column("clips", justify="right")
    table.add_column("enrolled")
    for s in result.speakers:
        table.add_row(s.name, str(s.clips), s.enrolled or "[red]no stored profile[/red]")
    out.print(table)


ADD_HELP = """Enroll NAME from CLIPS (files or folders) and refit the model in use with them.

Uses the backbone the model was tuned with, and the first N usable clips (N: --shots, default the
model's). A NAME the model already knows gets the new clips instead of the old ones.

[b]Example[/b]

  srpl speakers add grandma ./clips/grandma --shots 5
"""


@app.command("add", help=ADD_HELP, no_args_is_help=True)
def add(
    name: Annotated[str, typer.Argument(help="The person's name (letters, digits, '.', '_', '-').")],
    clips: Annotated[list[Path], typer.Argument(help="Their audio files or folders.", show_default=False)],
    shots: Annotated[
        int | None,
        typer.Option("--shots", help="Use the first N usable clips (default: as the model was tuned)."),
    ] = None,
    model: ModelOpt = "default",
    backbone_path: BackboneSourceOpt = None,
    min_speech: MinSpeechOpt = 0.5,
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    from srpl_cli.cli._output import progress_bar, warn
    from srpl_cli.management import add_speaker
    from srpl_cli.workspace import Workspace

    with progress_bar("embedding clips", quiet or json_) as progress:
        change = add_speaker(
            Workspace(workspace), name, clips, model, shots, backbone_path, progress, min_speech
        )
    for p in change.problems:
        warn(f"skipped {p['path']}: {p['reason']}")
    _render(change, json_, f"added {name} ({change.clips_used} clips)")


@app.command(
    "remove",
    help="Refit the model in use without NAME and delete their stored profile.\n\n"
    "Older versions are kept (srpl models use VERSION brings one back).\n\n"
    "[b]Example[/b]\n\n  srpl speakers remove bob",
    no_args_is_help=True,
)
def remove(
    name: Annotated[str, typer.Argument(help="The person to remove.")],
    model: ModelOpt = "default",
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    from srpl_cli.management import remove_speaker
    from srpl_cli.workspace import Workspace

    change = remove_speaker(Workspace(workspace), name, model)
    _render(change, json_, f"removed {name}")


@app.command(
    "rename",
    help="Call OLD by NEW from now on (a new model version, same data).\n\n"
    "[b]Example[/b]\n\n  srpl speakers rename alice alice_s",
    no_args_is_help=True,
)
def rename(
    old: Annotated[str, typer.Argument(help="The current name.")],
    new: Annotated[str, typer.Argument(help="The new name.")],
    model: ModelOpt = "default",
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    from srpl_cli.management import rename_speaker
    from srpl_cli.workspace import Workspace

    change = rename_speaker(Workspace(workspace), old, new, model)
    _render(change, json_, f"renamed {old} to {new}")


def _render(change, json_: bool, what: str) -> None:
    from rich.markup import escape

    from srpl_cli.cli._output import out, print_json

    if json_:
        print_json(change.to_dict())
        return
    out.print(
        escape(
            f"{what}: model '{change.model}' {change.previous_version} -> {change.version} "
            f"({change.method}, {len(change.speakers)} speakers: {', '.join(change.speakers)})"
        ),
        highlight=False,
    )
    out.print(f"threshold {change.threshold:.4f}: {change.calibration.get('rule', '')}", highlight=False)
