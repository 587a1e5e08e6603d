"""`srpl download`: fetch backbones and the authors' released embedding datasets and checkpoints."""

from __future__ import annotations

from typing import Annotated

import typer

from srpl_cli.cli._options import JsonOpt, QuietOpt, WorkspaceOpt

HELP = """Download speaker models or the SpeakerRPL authors' embedding datasets and checkpoints.

Models go to the Hugging Face / ModelScope caches; datasets into the workspace, registered by name.
Interrupted downloads resume.

[b]Examples[/b]

  srpl download --model eres2netv2
  srpl download --model all
  srpl download --dataset all          (then: srpl evaluate --dataset NAME --cs-my)
"""

MODEL_CHOICES = ("eres2netv2", "wavlm", "speecht5", "all")


def register(app: typer.Typer) -> None:
    app.command("download", help=HELP, no_args_is_help=True)(download)


def download(
    model: Annotated[
        str | None, typer.Option("--model", help="eres2netv2, wavlm, speecht5 (TTS for synthesize) or all.")
    ] = None,
    dataset: Annotated[
        str | None, typer.Option("--dataset", help="all, or one dataset name of the authors' release.")
    ] = None,
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    from srpl_cli.cli._output import err, out, print_json
    from srpl_cli.errors import UsageError

    if model is None and dataset is None:
        raise UsageError("say what to download: --model NAME and/or --dataset NAME")
    if model is not None and model not in MODEL_CHOICES:
        raise UsageError(
            f"unknown model '{model}'; choose one of: {', '.join(MODEL_CHOICES)} (dvector ships with srpl)"
        )
    result: dict = {}
    if model is not None:
        from srpl_cli.backbones._hub import download_model

        names = ["eres2netv2", "wavlm", "speecht5"] if model == "all" else [model]
        result["models"] = {}
        for name in names:
            if not quiet:
                err.print(f"downloading {name} ...", highlight=False)
            if name == "speecht5":  # the zero-shot TTS engine of `srpl synthesize --engine tts`
                from srpl_cli.synthesis.tts import download_tts_models

                result["models"][name] = ", ".join(str(p) for p in download_tts_models().values())
            else:
                result["models"][name] = str(download_model(name))
            if not json_:
                out.print(f"{name}: {result['models'][name]}", markup=False, highlight=False)
    if dataset is not None:
        from srpl_cli.hub import download_datasets
        from srpl_cli.workspace import Workspace

        if not quiet:
            err.print("downloading the SpeakerRPL datasets ...", highlight=False)
        found = download_datasets(dataset, Workspace(workspace))
        result["datasets"] = found
        if not json_:
            from rich.markup import escape
            from rich.table import Table

            table = Table(title="registered datasets (use: srpl evaluate --dataset NAME)")
            for col in ("name", "splits", "checkpoints", "path"):
                table.add_column(col)
            for name, e in sorted(found.items()):
                table.add_row(
                    escape(name), ", ".join(e["splits"]), str(len(e["checkpoints"])), escape(e["path"])
                )
            out.print(table)
    if json_:
        print_json(result)
